"""Adaptive vs padded encoder window (and VAD trimming): WER and compute per corpus folder.

Three paths on the same model in the same run: `padded` (Whisper's 30 s window, no VAD: what
faster-whisper does), `adaptive` (the spliced encoder window) and `adaptive+vad` (the window plus
Silero VAD refusing silence and trimming it: the server's default for English-only models). The
issue's gate: on librispeech + commands + misc the adaptive path may not be worse than the padded
30 s path by more than 0.3 WER points.

    .venv/bin/python bench/encoder_window.py --model tiny.en --beam 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from wis_wyoming.engine.asr import AsrDefaults, AsrEngine, TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.hardware import plan_compute
from wis_wyoming.engine.models import ModelRegistry

REPO = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("WIS_SPEECH_DIR", REPO.parent / "shared" / "speech"))
normalise = EnglishTextNormalizer()


PATHS = {"padded": ("padded", False), "adaptive": ("adaptive", False), "adaptive+vad": ("adaptive", True)}


async def run_path(
    name: str, args: argparse.Namespace, audios: list, cache_dir: Path
) -> tuple[list[str], list[float]]:
    window, vad = PATHS[name]
    engine = AsrEngine(
        ModelRegistry(cache_dir, local_files_only=True),
        plan_compute("cpu", args.compute_type, args.threads),
        AsrDefaults(model=args.model, beam_size=args.beam, encoder_window=window, vad=vad),
    )
    try:
        await engine.preload([args.model])
        await engine.transcribe(audios[0], TranscriptionOptions(language=args.language))  # warm-up
        texts, seconds = [], []
        for audio in audios:
            result = await engine.transcribe(audio, TranscriptionOptions(language=args.language))
            texts.append(result.text)
            seconds.append(result.inference_seconds)
        return texts, seconds
    finally:
        await engine.close()


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--folders", default="librispeech,commands,misc")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--language", default="en")
    args = parser.parse_args()
    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))

    folders = args.folders.split(",")
    clips = {f: sorted((SPEECH / f).glob("*.wav")) for f in folders}
    audios = [decode_file(c) for f in folders for c in clips[f]]
    references = [normalise(c.with_suffix(".txt").read_text()) for f in folders for c in clips[f]]
    results = {name: await run_path(name, args, audios, cache_dir) for name in PATHS}

    print(f"\nmodel {args.model}, beam {args.beam}, {args.compute_type}, {args.threads} threads")
    print(f"{'folder':<12} {'clips':>5}" + "".join(f" {name + ' WER':>17} {'ms':>5}" for name in PATHS))
    start = 0
    spans = [(f, len(clips[f])) for f in folders] + [("all", len(audios))]
    for folder, count in spans:
        window = slice(0, count) if folder == "all" else slice(start, start + count)
        if folder != "all":
            start += count
        line = f"{folder:<12} {count:>5}"
        for texts, seconds in results.values():
            wer = jiwer.wer(references[window], [normalise(t) or "<empty>" for t in texts[window]])
            line += f" {wer:>17.2%} {1e3 * sum(seconds[window]) / count:>5.0f}"
        print(line)
    wers = {
        name: jiwer.wer(references, [normalise(t) or "<empty>" for t in texts])
        for name, (texts, _) in results.items()
    }
    for name in ("adaptive", "adaptive+vad"):
        verdict = "passes" if wers[name] <= wers["padded"] + 0.003 else "FAILS"
        print(f"gate ({name} <= padded + 0.3 points): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
