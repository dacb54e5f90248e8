"""Latency and WER, wis_wyoming vs wyoming-faster-whisper, measured side by side in one run.

Both servers load the same CTranslate2 model directory with the same beam size, compute type and
thread count. The latency is the time from `audio-stop` to `transcript`. Clips alternate between
servers so drift on the machine hits both alike. Modes:

- streaming: each clip is sent in real time, as a satellite's microphone sends it, optionally
  followed by `--trailing-silence` seconds of silence (what a satellite's own VAD waits for
  before it sends audio-stop; Home Assistant's default is 0.7 s);
- non_streaming: the whole clip at once, then audio-stop (a file upload).

    .venv/bin/python bench/wyoming_latency.py --corpus commands --beam 1 --mode both
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe

REPO = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("WIS_SPEECH_DIR", REPO.parent / "shared" / "speech"))
CHUNK_SAMPLES = 1024
normalise = EnglishTextNormalizer()


@dataclass
class ServerRun:
    name: str
    command: list[str]
    port: int
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by mode
    texts: dict[str, list[str]] = field(default_factory=dict)
    first_chunks: list[float] = field(default_factory=list)  # streaming: audio start to first chunk
    process: subprocess.Popen | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_ready(run: ServerRun, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.process is not None and run.process.poll() is not None:
            raise RuntimeError(f"{run.name} exited with {run.process.returncode}")
        try:
            async with AsyncTcpClient("127.0.0.1", run.port) as client:
                await client.write_event(Describe().event())
                if await client.read_event() is not None:
                    return
        except OSError:
            await asyncio.sleep(0.5)
    raise TimeoutError(f"{run.name} did not start")


async def start_servers(runs: list[ServerRun], warm_up_clip: Path, language: str) -> None:
    """Start every server, wait until each answers, and send each one warm-up request (the first
    inference allocates buffers)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for run in runs:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        run.process = subprocess.Popen(run.command, env=env, **quiet)
    for run in runs:
        await wait_ready(run)
        await stream_clip(run.port, warm_up_clip, language)


def stop_servers(runs: list[ServerRun]) -> None:
    for run in runs:
        if run.process is not None:
            run.process.terminate()
            run.process.wait(timeout=30)


@dataclass
class Answer:
    latency: float  # audio-stop to transcript
    text: str
    first_chunk: float | None  # audio-start to the first transcript-chunk


async def stream_clip(
    port: int, wav_path: Path, language: str, paced: bool = True, trailing_silence: float = 0.0
) -> Answer:
    with wave.open(str(wav_path)) as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        pcm = wav.readframes(wav.getnframes())
    pcm += bytes(int(trailing_silence * rate) * width * channels)
    first_chunk: float | None = None
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def read_answer() -> tuple[float, str]:
            nonlocal first_chunk
            while (event := await client.read_event()) is not None:
                if event.type == "transcript-chunk" and first_chunk is None:
                    first_chunk = time.perf_counter() - started
                if event.type == "transcript":
                    return time.perf_counter(), event.data.get("text", "")
                if event.type == "error":
                    raise RuntimeError(f"server error: {event.data}")
            raise RuntimeError("connection closed without a transcript")

        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate, width, channels).event())
        started = time.perf_counter()
        reader = asyncio.create_task(read_answer())
        await send_chunks(client, pcm, rate, width, channels, started, paced)
        stop_sent = time.perf_counter()
        await client.write_event(AudioStop().event())
        answered, text = await reader
    return Answer(answered - stop_sent, text, first_chunk)


async def send_chunks(
    client: AsyncTcpClient, pcm: bytes, rate: int, width: int, channels: int, started: float, paced: bool
) -> None:
    """Audio chunks, paced to real time from `started` (or as fast as possible)."""
    step = CHUNK_SAMPLES * width * channels
    for index, offset in enumerate(range(0, len(pcm), step)):
        await client.write_event(AudioChunk(rate, width, channels, pcm[offset : offset + step]).event())
        # Pace against the start, so sleeps do not accumulate error.
        delay = started + (index + 1) * CHUNK_SAMPLES / rate - time.perf_counter()
        if paced and delay > 0:
            await asyncio.sleep(delay)


def clip_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def our_server_command(port: int, model_dir: Path, options: list[str]) -> list[str]:
    """wis_wyoming serving one model directory (as `bench`) on 127.0.0.1."""
    return [
        sys.executable, "-m", "wis_wyoming", "serve",
        "--uri", f"tcp://127.0.0.1:{port}",
        "--models", f"bench={model_dir}",
        "--local-files-only", "--log-level", "WARNING",
        *options,
    ]  # fmt: skip


def peer_server_command(
    port: int, model_dir: Path, data_dir: str, language: str, options: list[str]
) -> list[str]:
    """wyoming-faster-whisper serving the same model directory on 127.0.0.1."""
    return [
        sys.executable, "-m", "wyoming_faster_whisper",
        "--uri", f"tcp://127.0.0.1:{port}",
        "--model", str(model_dir),
        "--data-dir", data_dir,
        "--local-files-only", "--device", "cpu",
        "--language", language,
        *options,
    ]  # fmt: skip


def model_directory(name: str, cache_dir: Path) -> Path:
    from wis_wyoming.engine.models import ModelRegistry

    return ModelRegistry(cache_dir, local_files_only=True).resolve(name).path


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en", help="bundled model name or directory")
    parser.add_argument("--corpus", default="commands", help="comma-separated folders of shared/speech")
    parser.add_argument("--limit", type=int, default=0, help="clips per folder (0: all)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--language", default="en")
    parser.add_argument("--mode", choices=["streaming", "non_streaming", "both"], default="streaming")
    parser.add_argument("--trailing-silence", type=float, default=0.0, help="seconds, streaming mode")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
    model_dir = Path(args.model) if Path(args.model).is_dir() else model_directory(args.model, cache_dir)
    clips: list[Path] = []
    for folder in args.corpus.split(","):
        found = sorted((SPEECH / folder).glob("*.wav"))
        clips += found[: args.limit] if args.limit else found
    references = [c.with_suffix(".txt").read_text().strip() for c in clips]
    common = [
        "--beam-size",
        str(args.beam),
        "--compute-type",
        args.compute_type,
        "--cpu-threads",
        str(args.threads),
    ]

    ours = ServerRun("wis_wyoming", [], free_port())
    ours.command = our_server_command(ours.port, model_dir, common)
    data_dir = tempfile.mkdtemp(prefix="peer-data-")
    peer = ServerRun("wyoming-faster-whisper", [], free_port())
    peer.command = peer_server_command(peer.port, model_dir, data_dir, args.language, common)
    runs = [peer, ours]
    try:
        await start_servers(runs, clips[0], args.language)
        modes = ["streaming", "non_streaming"] if args.mode == "both" else [args.mode]
        for mode in modes:
            for clip in clips:
                for run in runs:
                    answer = await stream_clip(
                        run.port,
                        clip,
                        args.language,
                        paced=mode == "streaming",
                        trailing_silence=args.trailing_silence if mode == "streaming" else 0.0,
                    )
                    run.latencies.setdefault(mode, []).append(answer.latency)
                    run.texts.setdefault(mode, []).append(answer.text)
                    if mode == "streaming" and answer.first_chunk is not None:
                        run.first_chunks.append(answer.first_chunk)
    finally:
        stop_servers(runs)

    audio_seconds = sum(clip_seconds(c) for c in clips)
    figures: dict[str, dict] = {}
    for mode in modes:
        how = (
            f"streamed in real time + {args.trailing_silence:g} s silence"
            if mode == "streaming"
            else "sent at once"
        )
        print(
            f"\n{mode}: {len(clips)} clips ({audio_seconds:.0f} s) from {args.corpus}, model {args.model}, "
            f"beam {args.beam}, {args.compute_type}, {args.threads} threads, {how}"
        )
        print(f"{'server':<24} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'WER %':>7}")
        for run in runs:
            latencies, texts = run.latencies[mode], run.texts[mode]
            wer = jiwer.wer([normalise(r) for r in references], [normalise(t) or "<empty>" for t in texts])
            figures.setdefault(mode, {})[run.name] = {
                "mean": statistics.mean(latencies),
                "p50": percentile(latencies, 0.5),
                "p95": percentile(latencies, 0.95),
                "wer": wer,
            }
            mean, p50, p95 = (figures[mode][run.name][k] * 1e3 for k in ("mean", "p50", "p95"))
            print(f"{run.name:<24} {mean:8.0f} {p50:8.0f} {p95:8.0f} {wer * 100:7.2f}")
        o, p = figures[mode][ours.name], figures[mode][peer.name]
        print(
            f"ratio ours/peer: mean {o['mean'] / p['mean']:.2f}x, p50 {o['p50'] / p['p50']:.2f}x, "
            f"p95 {o['p95'] / p['p95']:.2f}x; WER {o['wer'] * 100:.2f} % vs {p['wer'] * 100:.2f} %"
        )
    if ours.first_chunks:
        print(
            f"ours, first transcript-chunk after audio start: p50 {percentile(ours.first_chunks, 0.5):.2f} s "
            f"({len(ours.first_chunks)} of {len(clips)} clips had a chunk before audio-stop or at it)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "settings": vars(args) | {"json": str(args.json)},
                    "figures": figures,
                    # per clip, so an outlier behind a mean can be found and replayed
                    "clips": {
                        mode: [
                            {"clip": clip.name}
                            | {
                                run.name: {"latency": run.latencies[mode][i], "text": run.texts[mode][i]}
                                for run in runs
                            }
                            for i, clip in enumerate(clips)
                        ]
                        for mode in modes
                    },
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
