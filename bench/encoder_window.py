"""Adaptive vs padded encoder window: WER and compute per corpus folder, same model, same run.

The issue's gate: on librispeech + commands + misc the adaptive path may not be worse than the
padded 30 s path by more than 0.3 WER points.

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


async def run_mode(
    mode: str, args: argparse.Namespace, audios: list, cache_dir: Path
) -> tuple[list[str], list[float]]:
    engine = AsrEngine(
        ModelRegistry(cache_dir, local_files_only=True),
        plan_compute("cpu", args.compute_type, args.threads),
        AsrDefaults(model=args.model, beam_size=args.beam, encoder_window=mode),
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
    results = {mode: await run_mode(mode, args, audios, cache_dir) for mode in ("padded", "adaptive")}

    print(f"\nmodel {args.model}, beam {args.beam}, {args.compute_type}, {args.threads} threads")
    header = ("folder", "clips", "padded WER", "adaptive WER", "padded ms", "adaptive ms", "ratio")
    print("{:<12} {:>5} {:>11} {:>13} {:>10} {:>12} {:>6}".format(*header))
    start = 0
    spans = [(f, len(clips[f])) for f in folders] + [("all", len(audios))]
    for folder, count in spans:
        window = slice(0, count) if folder == "all" else slice(start, start + count)
        if folder != "all":
            start += count
        row = {}
        for mode, (texts, seconds) in results.items():
            hyps = [normalise(t) or "<empty>" for t in texts[window]]
            row[mode] = (jiwer.wer(references[window], hyps), 1e3 * sum(seconds[window]) / count)
        (pw, pm), (aw, am) = row["padded"], row["adaptive"]
        print(f"{folder:<12} {count:>5} {pw:>10.2%} {aw:>12.2%} {pm:>10.0f} {am:>12.0f} {am / pm:>5.2f}x")
    padded_wer, adaptive_wer = (
        jiwer.wer(references, [normalise(t) or "<empty>" for t in r[0]]) for r in results.values()
    )
    verdict = "passes" if adaptive_wer <= padded_wer + 0.003 else "FAILS"
    print(f"gate (adaptive <= padded + 0.3 points): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
