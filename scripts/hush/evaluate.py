"""Evaluate learned hush segments with CTranslate2 on CPU (int8, as the server runs), on held-out
speech: WER and time per clip of the padded 30 s window, the truncated window and speech + hush,
each with no prompt, with the previous text as prompt, and with the previous text running a few
words into the clip (a streaming pass's committed words, heard again); plus language detection
and the French translation on multilingual/.

Sets: librispeech/ (36 clips), the odd-numbered half of commands/ (held out of training),
longform/'s two LibriSpeech streams cut into their utterances (the previous utterances' text is
the prompt). "Previous text" is the padded path's own transcript (no prompt) of what came before,
as a streaming pass's committed text would be. Greedy decoding at temperature 0 (deterministic);
faster-whisper's defaults otherwise (timestamps on).

    .venv/bin/python scripts/hush/evaluate.py /root/.cache/wis_wyoming/models/base \
        --hush h50=wis_wyoming/engine/assets/hush-base.npy --json .hush/eval.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from prep_data import last_chars  # the previous-text prompt, cut as in training
from whisper_normalizer.english import EnglishTextNormalizer

SPEECH = Path(os.environ.get("WIS_SPEECH_DIR", "/work/shared/speech"))
RATE = 16000
WINDOW = 3000
normalise = EnglishTextNormalizer()


def content_frames(features: np.ndarray) -> int:
    """Frames before faster-whisper's padding, which is exact zeros (speech never is, column-wide)."""
    spoken = np.flatnonzero(np.any(features != 0, axis=0))
    return int(spoken[-1]) + 1 if len(spoken) else 0


class HushWhisperModel(WhisperModel):
    """A WhisperModel whose encoder sees the padded window, the truncated window, the speech and
    faster-whisper's zero padding cut to `window_frames` ("zeros"), or the speech followed by
    `gap_frames` of that padding and a hush segment (when they fit in the 3000 frames; else the
    padded window)."""

    ZEROS_AFTER_SPEECH = 200  # the "zeros" window keeps at least this much padding

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode = "padded"
        self.hush: np.ndarray | None = None
        self.window_frames = WINDOW
        self.gap_frames = 0

    def encode(self, features: np.ndarray) -> Any:
        if self.mode == "padded" or (features.ndim == 3 and features.shape[0] != 1):
            return super().encode(features)
        mel = features if features.ndim == 2 else features[0]
        frames = max(2, content_frames(mel))
        if self.mode == "truncated":
            return super().encode(np.ascontiguousarray(mel[:, : frames + frames % 2]))
        if self.mode == "zeros":
            size = min(mel.shape[-1], max(self.window_frames, frames + self.ZEROS_AFTER_SPEECH))
            return super().encode(np.ascontiguousarray(mel[:, : size + size % 2]))
        assert self.hush is not None
        if frames + self.gap_frames + self.hush.shape[1] + 1 > mel.shape[-1]:
            return super().encode(features)
        gap = np.zeros((mel.shape[0], self.gap_frames), mel.dtype)
        joined = np.concatenate([mel[:, :frames], gap, self.hush.astype(mel.dtype)], axis=1)
        if joined.shape[1] % 2:
            joined = np.pad(joined, ((0, 0), (0, 1)))
        return super().encode(np.ascontiguousarray(joined))


def load_sets() -> dict[str, list[tuple[np.ndarray, str]]]:
    sets: dict[str, list[tuple[np.ndarray, str]]] = {}
    sets["librispeech"] = [
        (decode_audio(str(p), sampling_rate=RATE), p.with_suffix(".txt").read_text())
        for p in sorted(SPEECH.glob("librispeech/*.wav"))
    ]
    sets["commands-heldout"] = [
        (decode_audio(str(p), sampling_rate=RATE), p.with_suffix(".txt").read_text())
        for p in sorted(SPEECH.glob("commands/*.wav"))[1::2]
    ]
    utterances = []
    for tsv in sorted(SPEECH.glob("longform/librispeech_*.segments.tsv")):
        audio = decode_audio(
            str(tsv.with_name(tsv.name.replace(".segments.tsv", ".wav"))), sampling_rate=RATE
        )
        with open(tsv) as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                start = max(0.0, float(row["start_s"]) - 0.15)
                end = min(len(audio) / RATE, float(row["end_s"]) + 0.3)
                utterances.append((audio[int(start * RATE) : int(end * RATE)], row["reference"]))
    sets["longform-utts"] = utterances
    return sets


def transcribe(
    model: HushWhisperModel, audio: np.ndarray, beam_size: int = 1, **options: Any
) -> tuple[str, float, Any]:
    started = time.perf_counter()
    segments, info = model.transcribe(audio, beam_size=beam_size, temperature=0.0, **options)
    text = "".join(s.text for s in segments).strip()
    return text, time.perf_counter() - started, info


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def score(refs: list[str], hyps: list[str]) -> dict[str, Any]:
    r = [normalise(x) for x in refs]
    h = [normalise(x) or "<empty>" for x in hyps]
    out = jiwer.process_words(r, h)
    run_on = sum(len(b.split()) > 1.3 * len(a.split()) + 2 for a, b in zip(r, h, strict=True))
    repeats = sum(compression_ratio(x) > 2.4 for x in hyps)
    return {
        "wer": out.wer,
        "ins": out.insertions,
        "del": out.deletions,
        "sub": out.substitutions,
        "run_on": run_on,
        "repeats": repeats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--hush", nargs="*", default=[], help="name=path.npy")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sets", default="librispeech,commands-heldout,longform-utts")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = HushWhisperModel(str(args.model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)
    hushes = {name: np.load(path).astype(np.float32) for name, path in (h.split("=", 1) for h in args.hush)}
    modes = ["padded", *hushes, "truncated"]
    sets = {k: v for k, v in load_sets().items() if k in args.sets.split(",")}
    report: dict[str, Any] = {}

    def use(mode: str) -> None:
        model.mode = "padded" if mode == "padded" else ("truncated" if mode == "truncated" else "hush")
        model.hush = hushes.get(mode)

    use("padded")
    transcribe(model, next(iter(sets.values()))[0][0], language="en")  # warm-up
    for set_name, clips in sets.items():
        refs = [ref for _, ref in clips]
        own: list[str] = []
        runs: dict[str, dict[str, tuple[list[str], list[float]]]] = {}
        for mode in modes:
            use(mode)
            runs[mode] = {}
            for prompt_kind in ("none", "previous", "overlap"):
                if prompt_kind != "none" and not own:
                    own = runs["padded"]["none"][0]
                hyps, seconds = [], []
                for i, (audio, _) in enumerate(clips):
                    prompt = None
                    if prompt_kind != "none":
                        before = " ".join(own[max(0, i - 3) : i]) if i else own[-1]
                        if prompt_kind == "overlap":
                            before += " " + " ".join(own[i].split()[: 1 + i % 3])
                        prompt = last_chars(before)
                    text, took, _ = transcribe(model, audio, language="en", initial_prompt=prompt)
                    hyps.append(text)
                    seconds.append(took)
                runs[mode][prompt_kind] = (hyps, seconds)
                stats = score(refs, hyps)
                stats["ms"] = 1e3 * float(np.mean(seconds))
                report.setdefault(set_name, {}).setdefault(mode, {})[prompt_kind] = {**stats, "hyps": hyps}
                print(
                    f"{set_name:<17} {mode:<10} {prompt_kind:<8} WER {stats['wer']:7.2%}  "
                    f"ins {stats['ins']:3d} del {stats['del']:3d} sub {stats['sub']:3d}  "
                    f"run-on {stats['run_on']:2d} repeats {stats['repeats']:2d}  {stats['ms']:6.0f} ms/clip",
                    flush=True,
                )
                if args.json:  # as it goes: a long run may be cut short
                    report[set_name]["refs"] = refs
                    args.json.write_text(json.dumps(report, indent=1))
        report[set_name]["refs"] = refs

    multilingual = sorted(SPEECH.glob("multilingual/*.wav"))
    for mode in modes:
        use(mode)
        for path in multilingual:
            audio = decode_audio(str(path), sampling_rate=RATE)
            text, took, info = transcribe(model, audio)
            line = f"{path.stem:<24} {mode:<10} {info.language} p={info.language_probability:.2f} {text!r}"
            if path.stem.endswith("french"):
                translated, _, _ = transcribe(model, audio, task="translate", language="fr")
                expected = path.with_suffix(".translation.txt").read_text().strip()
                line += f" -> translate {translated!r} (expected {expected!r})"
            report.setdefault("multilingual", {}).setdefault(mode, {})[path.stem] = line
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
