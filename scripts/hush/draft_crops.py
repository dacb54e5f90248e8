"""How a window hears what a streaming draft hears: crops of the long-form LibriSpeech streams cut
where a draft's buffer would be (from a word's start, 3-14 s long, ending anywhere, mid-word
included), prompted with the text before them, scored against the offline transcript on the words
a stream could commit from them, in two zones: "settled", those ending a second or more before
the cut, and "edge", those ending 0.25-1 s before it, where most commits are made (on test-other
the shipped hush and the padded window hear the first alike and the second not; see hush).

Deterministic: with 150 crops of each stream, about 6 min for the padded window and 2.5 min for a
hush on 2 cores, where a streamed run of test-other takes three and its WER moves by two points
between runs of the same code. It measures one decode, not the commit
policy: words the decoder left out at the end of a crop are not counted (a later pass hears them),
and crops on which any window's decoder looped (compression ratio above 2.4, which the server
decodes again) are set aside and counted. That set depends on the windows in the run, so compare
windows within one run (a run with the padded window and the shipped hush, 300 crops: test-other
settled 3.39 and 3.89 %, edge 6.19 and 8.02 %).

    .venv/bin/python scripts/hush/draft_crops.py /root/.cache/wis_wyoming/models/base \
        --hush shipped=wis_wyoming/engine/assets/hush/base.npy --crops 150

`--zeros 1500` adds the 15 s window of speech and zero padding, `--gap 200` the first hush after
2 s of that padding (see hush for what they heard).
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
from evaluate import RATE, SPEECH, WINDOW, HushWhisperModel, compression_ratio, normalise, transcribe
from faster_whisper.audio import decode_audio
from prep_data import last_chars

MIN_CROP_S, MAX_CROP_S = 3.0, 14.0
SETTLED_S = 1.0  # a stream commits a word only once it heard this much past it, or about
# ... but most commits come sooner: a pass heard 0.25-0.5 s past the word (see streaming's edge
# holds). The words ending in this stretch before the cut are scored apart, as the "edge".
EDGE_S = (0.25, SETTLED_S)


@dataclass(frozen=True)
class Crop:
    first_word: int
    start: float
    cut: float
    prompt: str | None


def offline_words(model: HushWhisperModel, audio: np.ndarray) -> list[tuple[str, float]]:
    """The offline transcript's words and their end times (padded window, greedy)."""
    model.mode = "padded"
    segments, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0, word_timestamps=True)
    return [(w.word, w.end) for s in segments for w in s.words or []]


def draw_crops(words: list[tuple[str, float]], duration: float, count: int, seed: int) -> list[Crop]:
    rng = random.Random(seed)
    crops = []
    for _ in range(count):
        i = rng.randrange(len(words) - 5)
        start = 0.0 if i == 0 else words[i - 1][1]
        cut = min(duration, start + rng.uniform(MIN_CROP_S, MAX_CROP_S))
        prompt = last_chars("".join(w for w, _ in words[:i])) or None
        crops.append(Crop(i, start, cut, prompt))
    return crops


def zone_errors(
    words: list[tuple[str, float]],
    crop: Crop,
    heard: str,
    before_cut: tuple[float, float],
) -> tuple[int, int]:
    """(errors, words) over the offline words a stream could commit from this crop: those ending
    between `before_cut` = (nearest, farthest) seconds before the cut, up to the last word the
    decode reached."""
    nearest, farthest = before_cut
    after = words[crop.first_word :]

    def count_ending_by(limit: float) -> int:
        return len(normalise("".join(w for w, end in after if end <= limit)).split())

    near = normalise("".join(w for w, end in after if end <= crop.cut + 0.3)).split()
    first, last = count_ending_by(crop.cut - farthest), count_ending_by(crop.cut - nearest)
    hyp = normalise(heard).split()
    if not near or last <= first:
        return 0, 0
    chunks = jiwer.process_words(" ".join(near), " ".join(hyp) or "<empty>").alignments[0]
    reached = max((c.ref_end_idx for c in chunks if c.type in ("equal", "substitute")), default=0)
    counted = min(last, reached)
    errors = 0
    for c in chunks:
        if c.type == "equal" or c.ref_start_idx >= counted:
            continue
        if c.type == "insert":
            errors += c.hyp_end_idx - c.hyp_start_idx if c.ref_start_idx >= first else 0
        else:
            errors += max(0, min(c.ref_end_idx, counted) - max(c.ref_start_idx, first))
    return errors, max(0, counted - first)


@dataclass(frozen=True)
class Window:
    """What the encoder sees (see evaluate.HushWhisperModel)."""

    mode: str  # "padded", "hush" or "zeros"
    hush: np.ndarray | None = None
    window_frames: int = WINDOW
    gap_frames: int = 0

    def use(self, model: HushWhisperModel) -> None:
        model.mode, model.hush = self.mode, self.hush
        model.window_frames, model.gap_frames = self.window_frames, self.gap_frames


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--hush", nargs="*", default=[], help="name=path.npy")
    parser.add_argument("--crops", type=int, default=150, help="per stream")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam", type=int, default=1, help="of the crops' decodes (the offline one: 1)")
    parser.add_argument("--no-padded", action="store_true", help="only the hushes (their scores stand alone)")
    parser.add_argument(
        "--zeros",
        type=int,
        nargs="*",
        default=[],
        help="also windows of the speech and zero padding this many frames long (1500: 15 s)",
    )
    parser.add_argument(
        "--gap",
        type=int,
        nargs="*",
        default=[],
        help="also the first --hush after this many frames of zero padding",
    )
    args = parser.parse_args()
    model = HushWhisperModel(str(args.model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)
    hushes = {name: np.load(path).astype(np.float32) for name, path in (h.split("=", 1) for h in args.hush)}
    windows = {
        **({} if args.no_padded else {"padded": Window("padded")}),
        **{name: Window("hush", hush) for name, hush in hushes.items()},
        **{f"zeros{n}": Window("zeros", window_frames=n) for n in args.zeros},
    }
    if args.gap:
        if not hushes:
            parser.error("--gap needs a --hush")
        first = next(iter(hushes))
        windows.update({f"gap{n}+{first}": Window("hush", hushes[first], gap_frames=n) for n in args.gap})
    modes = list(windows)
    for wav in sorted(SPEECH.glob("longform/librispeech_*.wav")):
        audio = decode_audio(str(wav), sampling_rate=RATE)
        words = offline_words(model, audio)
        crops = draw_crops(words, len(audio) / RATE, args.crops, args.seed)
        heard: dict[str, list[str]] = {}
        seconds: dict[str, float] = {}
        for mode in modes:
            windows[mode].use(model)
            heard[mode], took = [], 0.0
            for crop in crops:
                clip = audio[int(crop.start * RATE) : int(crop.cut * RATE)]
                text, spent, _ = transcribe(
                    model, clip, beam_size=args.beam, language="en", initial_prompt=crop.prompt
                )
                heard[mode].append(text)
                took += spent
            seconds[mode] = took / len(crops)
        looped = {
            k for texts in heard.values() for k, text in enumerate(texts) if compression_ratio(text) > 2.4
        }
        for mode in modes:
            for zone, before_cut in (("settled", (SETTLED_S, math.inf)), ("edge", EDGE_S)):
                scored = [
                    zone_errors(words, c, heard[mode][k], before_cut)
                    for k, c in enumerate(crops)
                    if k not in looped
                ]
                errors, total = sum(e for e, _ in scored), sum(n for _, n in scored)
                print(
                    f"{wav.stem:<38} {mode:<16} {zone:<7} {errors:4d} / {total:5d} words differ from "
                    f"offline ({errors / max(1, total):6.2%}), {len(looped)} looped crops set aside, "
                    f"{1e3 * seconds[mode]:5.0f} ms/crop",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
