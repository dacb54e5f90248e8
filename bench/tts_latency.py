"""Text to speech, wis_wyoming vs wyoming-piper, side by side in one run, same voice file.

Both servers speak three-sentence replies with the bundled en_US-joe-medium voice (same ONNX
file, same sentence silence, all cores). Replies alternate between the servers so drift on the
machine hits both alike. Measured from the request's first event:
- first audio: the first `audio-chunk`;
- total: `audio-stop` (non-streaming) or `synthesize-stopped` (streaming).
Modes:
- non_streaming: one `synthesize` with the whole reply;
- streaming: `synthesize-start`, the reply in pieces of a few words `--piece-delay` apart (an
  LLM writing it), Home Assistant's compatibility `synthesize`, `synthesize-stop`.
Our server bypasses its cache (`cache: false`) for these; the cache-hit time is measured on its
own: the same reply asked twice, the second answer's total time.

    .venv/bin/python bench/tts_latency.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
from wyoming_latency import ServerRun, free_port, model_directory, our_server_command, percentile, wait_ready

from wis_wyoming.engine.voices import BUNDLED_VOICE, bundled_voice_files

REPLIES = [
    "The living room lights are now on. The temperature inside is 21 degrees. Is there anything else?",
    "I have set a timer for ten minutes. It will ring in the kitchen. Enjoy your tea!",
    "The front door is locked and the garage is closed. All windows are shut. Good night.",
    "It is sunny today with a high of 24 degrees. Rain is expected tomorrow afternoon. Take an umbrella.",
    "Your next meeting starts at half past two. It is with the design team. I will remind you before.",
    "The washing machine finished ten minutes ago. The dryer is still running. It needs another hour.",
]
SENTENCE_SILENCE = 0.2


@dataclass
class Timing:
    first_audio: float
    total: float


@dataclass
class Figures:
    timings: dict[str, list[Timing]] = field(default_factory=dict)


async def ask(port: int, reply: str, streaming: bool, piece_delay: float, extra: dict) -> Timing:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.perf_counter()

        async def send() -> None:
            if not streaming:
                event = Synthesize(text=reply).event()
                event.data.update(extra)
                await client.write_event(event)
                return
            start = SynthesizeStart().event()
            start.data.update(extra)
            await client.write_event(start)
            words = reply.split(" ")
            for index in range(0, len(words), 3):
                piece = " ".join(words[index : index + 3]) + (" " if index + 3 < len(words) else "")
                await client.write_event(SynthesizeChunk(text=piece).event())
                await asyncio.sleep(piece_delay)
            await client.write_event(Synthesize(text=reply).event())
            await client.write_event(SynthesizeStop().event())

        sender = asyncio.create_task(send())
        first_audio = None
        end = "synthesize-stopped" if streaming else "audio-stop"
        while True:
            event: Event | None = await client.read_event()
            if event is None:
                raise RuntimeError("connection closed before the answer ended")
            if event.type == "error":
                raise RuntimeError(f"server error: {event.data}")
            if event.type == "audio-chunk" and first_audio is None:
                first_audio = time.perf_counter() - started
            if event.type == end:
                total = time.perf_counter() - started
                break
        await sender
    return Timing(first_audio if first_audio is not None else total, total)


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.mean(ms):8.0f} {percentile(ms, 0.5):8.0f} {percentile(ms, 0.95):8.0f}"


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each reply is spoken per mode")
    parser.add_argument("--piece-delay", type=float, default=0.05, help="seconds between streamed pieces")
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds between requests (replies are not back to back)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
    work = Path(tempfile.mkdtemp(prefix="tts-bench-"))
    voice_dir = work / "voices"
    voice_dir.mkdir()
    model, config = bundled_voice_files()
    shutil.copy(model, voice_dir / f"{BUNDLED_VOICE}.onnx")
    shutil.copy(config, voice_dir / f"{BUNDLED_VOICE}.onnx.json")

    ours = ServerRun("wis_wyoming", [], free_port())
    ours.command = our_server_command(
        ours.port, model_directory("tiny.en", cache_dir), ["--tts-cache-dir", str(work / "cache")]
    )
    peer = ServerRun("wyoming-piper", [], free_port())
    peer.command = [
        sys.executable, "-m", "wyoming_piper",
        "--uri", f"tcp://127.0.0.1:{peer.port}",
        "--voice", BUNDLED_VOICE,
        "--data-dir", str(voice_dir),
        "--sentence-silence", str(SENTENCE_SILENCE),
        "--local-files-only",
    ]  # fmt: skip
    runs = [peer, ours]
    extra = {peer.name: {}, ours.name: {"cache": False}}
    figures = {run.name: Figures() for run in runs}
    try:
        for run in runs:
            run.process = subprocess.Popen(run.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for run in runs:
            await wait_ready(run)
            await ask(run.port, "Warming up.", False, 0.0, extra[run.name])
        for mode in ("non_streaming", "streaming"):
            for _ in range(args.rounds):
                for reply in REPLIES:
                    for run in runs:
                        streaming = mode == "streaming"
                        timing = await ask(run.port, reply, streaming, args.piece_delay, extra[run.name])
                        figures[run.name].timings.setdefault(mode, []).append(timing)
                        await asyncio.sleep(args.pause)
        hits = []
        for reply in REPLIES:
            await ask(ours.port, reply, False, 0.0, {})
            hits.append((await ask(ours.port, reply, False, 0.0, {})).total)
    finally:
        for run in runs:
            if run.process is not None:
                run.process.terminate()
                run.process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{len(REPLIES)} three-sentence replies x {args.rounds} rounds, voice {BUNDLED_VOICE}, "
        f"{os.cpu_count()} cores; streamed in pieces of 3 words every {args.piece_delay:g} s"
    )
    results: dict = {"settings": vars(args) | {"json": str(args.json)}, "figures": {}}
    for mode in ("non_streaming", "streaming"):
        print(f"\n{mode}: ms from the first event   first audio: mean / p50 / p95   total: mean / p50 / p95")
        for run in runs:
            timings = figures[run.name].timings[mode]
            first, total = [t.first_audio for t in timings], [t.total for t in timings]
            print(f"  {run.name:<16} {summary(first)}     {summary(total)}")
            results["figures"].setdefault(mode, {})[run.name] = {
                "first_audio_p50": percentile(first, 0.5),
                "first_audio_mean": statistics.mean(first),
                "total_p50": percentile(total, 0.5),
            }
        ratio = (
            results["figures"][mode][ours.name]["first_audio_mean"]
            / results["figures"][mode][peer.name]["first_audio_mean"]
        )
        print(f"  first audio, ours/peer (mean): {ratio:.2f}x")
    mean_hit, max_hit = statistics.mean(hits) * 1000, max(hits) * 1000
    print(f"\ncache hit (ours, whole reply): mean {mean_hit:.1f} ms, max {max_hit:.1f} ms")
    results["figures"]["cache_hit_mean"] = statistics.mean(hits)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
