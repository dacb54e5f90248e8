"""Streaming commit latency and long-form WER over Wyoming.

A long-form file from shared/speech/longform is streamed in real time to a wis_wyoming server.
Each word's commit latency is the time from the end of that word in the audio to the arrival of
the `transcript-chunk` that carries it. Word end times come from a forced alignment of the offline
transcript (the same model, run offline with word timestamps); committed words are matched to
them in order. The streamed transcript's WER is compared with the offline transcript's.

    .venv/bin/python bench/commit_latency.py --model base --beam 1 --runs 2

Every file in longform/ is streamed unless `--file` names some; `--runs` streams each that many
times, since a run's figures move with the timing of its passes (test-other's streamed WER moved
by two points between runs of the same code). Figures are given per file and run, and pooled:
latencies over all streamed words, WER over all their words (errors over reference words).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer
from wyoming.asr import Transcribe
from wyoming.audio import AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wyoming_latency import (
    SPEECH,
    ServerRun,
    free_port,
    model_directory,
    our_server_command,
    percentile,
    send_chunks,
    wait_ready,
)

normalise = EnglishTextNormalizer()


def word_key(word: str) -> str:
    return re.sub(r"[^\w']+", "", word).lower()


def offline_words(model_dir: Path, wav: Path, beam: int, threads: int) -> tuple[str, list[tuple[str, float]]]:
    """The offline transcript and each word's end time (faster-whisper word timestamps)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(str(wav), beam_size=beam, language="en", word_timestamps=True)
    words, texts = [], []
    for segment in segments:
        texts.append(segment.text)
        words += [(w.word, w.end) for w in segment.words or ()]
    return "".join(texts).strip(), words


def offline_text(model_dir: Path, wav: Path, beam: int, threads: int) -> str:
    """The offline transcript with faster-whisper's defaults: what the gate compares with. (Word
    timestamps move its window cuts, and Whisper's words move with them: on longform, tiny.en
    scored 3.53 % with them and 4.51 % without; base 4.71 and 4.31 %.)"""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(str(wav), beam_size=beam, language="en")
    return "".join(segment.text for segment in segments).strip()


async def stream_file(port: int, wav: Path) -> tuple[list[tuple[float, str]], str, float]:
    """Chunks as (seconds since audio start, text), the final transcript, and its latency."""
    with wave.open(str(wav)) as source:
        rate, width, channels = source.getframerate(), source.getsampwidth(), source.getnchannels()
        pcm = source.readframes(source.getnframes())
    chunks: list[tuple[float, str]] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def read() -> tuple[str, float]:
            while (event := await client.read_event()) is not None:
                if event.type == "transcript-chunk":
                    chunks.append((time.perf_counter() - started, event.data["text"]))
                elif event.type == "transcript":
                    return event.data["text"], time.perf_counter()
                elif event.type == "error":
                    raise RuntimeError(event.data)
            raise RuntimeError("connection closed")

        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate, width, channels).event())
        started = time.perf_counter()
        reader = asyncio.create_task(read())
        await send_chunks(client, pcm, rate, width, channels, started, paced=True)
        stopped = time.perf_counter()
        await client.write_event(AudioStop().event())
        text, answered = await reader
    return chunks, text, answered - stopped


def commit_latencies(
    chunks: list[tuple[float, str]], aligned: list[tuple[str, float]]
) -> tuple[list[float], int]:
    """Latency of each committed word matched (in order) to an aligned offline word."""
    committed: list[tuple[str, float]] = []  # (word, arrival)
    for arrival, text in chunks:
        committed += [(word_key(w), arrival) for w in text.split() if word_key(w)]
    offline = [(word_key(w), end) for w, end in aligned if word_key(w)]
    matcher = difflib.SequenceMatcher(a=[w for w, _ in offline], b=[w for w, _ in committed], autojunk=False)
    latencies = []
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            latencies.append(committed[block.b + i][1] - offline[block.a + i][1])
    return latencies, len(committed)


@dataclass
class FileRun:
    """One file streamed once: its figures, and its transcripts for the pooled WER."""

    name: str
    latencies: list[float]
    committed_words: int
    final_latency: float
    reference: str
    streamed: str
    offline: str

    def figures(self) -> dict[str, float]:
        return {
            "words_committed": self.committed_words,
            "words_matched": len(self.latencies),
            "commit_p50": percentile(self.latencies, 0.5),
            "commit_p95": percentile(self.latencies, 0.95),
            "commit_mean": statistics.mean(self.latencies),
            "final_latency": self.final_latency,
            "wer_streamed": word_error_rate([self], "streamed"),
            "wer_offline": word_error_rate([self], "offline"),
        }


def word_error_rate(runs: list[FileRun], which: str) -> float:
    """WER over all the runs' words together (errors over reference words), normalised."""
    return jiwer.wer([normalise(r.reference) for r in runs], [normalise(getattr(r, which)) for r in runs])


def pooled(runs: list[FileRun]) -> dict[str, float]:
    latencies = [latency for run in runs for latency in run.latencies]
    streamed, offline = word_error_rate(runs, "streamed"), word_error_rate(runs, "offline")
    return {
        "commit_p50": percentile(latencies, 0.5),
        "commit_p95": percentile(latencies, 0.95),
        "wer_streamed": streamed,
        "wer_offline": offline,
        "wer_difference": streamed - offline,
    }


def describe(label: str, figures: dict[str, float]) -> str:
    return (
        f"{label}: commit p50 {figures['commit_p50']:.2f} s, p95 {figures['commit_p95']:.2f} s; "
        f"WER streamed {figures['wer_streamed'] * 100:.2f} %, offline {figures['wer_offline'] * 100:.2f} % "
        f"({(figures['wer_streamed'] - figures['wer_offline']) * 100:+.2f} points)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="base")
    parser.add_argument(
        "--file", action="append", dest="files", help="in longform/, repeatable (default: every .wav there)"
    )
    parser.add_argument("--runs", type=int, default=1, help="stream each file this many times")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--encoder-window", default="auto", choices=("auto", "adaptive", "padded"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
    model_dir = Path(args.model) if Path(args.model).is_dir() else model_directory(args.model, cache_dir)
    wavs = (
        [SPEECH / "longform" / name for name in args.files]
        if args.files
        else sorted((SPEECH / "longform").glob("*.wav"))
    )

    offline: dict[Path, tuple[str, list[tuple[str, float]], str]] = {}
    started = time.perf_counter()
    for wav in wavs:
        timed_text, aligned = offline_words(model_dir, wav, args.beam, args.threads)
        offline[wav] = (timed_text, aligned, offline_text(model_dir, wav, args.beam, args.threads))
    print(f"offline transcripts and alignments: {time.perf_counter() - started:.1f} s")

    ours = ServerRun("wis_wyoming", [], free_port())
    ours.command = our_server_command(
        ours.port,
        model_dir,
        ["--compute-type", "int8", "--cpu-threads", str(args.threads), "--beam-size", str(args.beam),
         "--max-audio-seconds", "3600", "--encoder-window", args.encoder_window],
    )  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ours.process = subprocess.Popen(
        ours.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    print(f"\nmodel {args.model}, beam {args.beam}, {args.threads} threads; files streamed in real time")
    runs: list[list[FileRun]] = []
    try:
        await wait_ready(ours)
        for number in range(1, args.runs + 1):
            runs.append([])
            for wav in wavs:
                chunks, streamed_text, final_latency = await stream_file(ours.port, wav)
                _, aligned, plain_text = offline[wav]
                latencies, committed_words = commit_latencies(chunks, aligned)
                reference = wav.with_suffix(".txt").read_text().strip()
                run = FileRun(
                    wav.name, latencies, committed_words, final_latency, reference, streamed_text, plain_text
                )
                runs[-1].append(run)
                print(
                    describe(f"run {number}, {wav.stem}", run.figures())
                    + f"; final transcript {final_latency * 1000:.0f} ms after audio-stop",
                    flush=True,
                )
    finally:
        ours.process.terminate()
        ours.process.wait(timeout=30)

    every = [run for batch in runs for run in batch]
    overall = pooled(every)
    print(describe(f"\nall {len(every)} streams pooled", overall))
    if len(runs) > 1:
        differences = [pooled(batch)["wer_difference"] * 100 for batch in runs]
        print(f"pooled WER difference per run: {', '.join(f'{d:+.2f}' for d in differences)} points")
    # Word timestamps move faster-whisper's window cuts (see offline_text): shown for reference.
    references = [normalise(wav.with_suffix(".txt").read_text()) for wav in wavs]
    timed = jiwer.wer(references, [normalise(offline[wav][0]) for wav in wavs])
    print(f"offline with word timestamps: WER {timed * 100:.2f} %")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": {**vars(args), "json": str(args.json)},
                    "pooled": overall,
                    "runs": [[{"file": r.name, **r.figures()} for r in batch] for batch in runs],
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
