"""How many satellites at once: concurrent real-time command streams, us vs wyoming-faster-whisper.

N clients stream command clips in real time, each followed by `--trailing-silence` seconds of
silence (a satellite's endpointing), one request after another for `--rounds` rounds; each
request starts at a random moment within the first second of its round, so streams overlap
without moving in lock-step. The latency is audio-stop to transcript. N grows until a server's p95
passes `--target` seconds; the report gives the largest N that kept it, for each server, measured
in the same run on the same model directory, beam and threads. Both servers get the same clips at
each N, so their WERs compare; both run at each N until both have passed the bound.

    .venv/bin/python bench/concurrency.py --beam 5 --streams 1,2,4,6,8,12
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
from pathlib import Path

import jiwer
from wyoming_latency import (
    SPEECH,
    ServerRun,
    free_port,
    model_directory,
    normalise,
    our_server_command,
    peer_server_command,
    percentile,
    start_servers,
    stop_servers,
    stream_clip,
)


async def run_streams(
    port: int, clips: list[Path], streams: int, rounds: int, language: str, silence: float, seed: int
) -> tuple[list[float], list[str], list[Path]]:
    """Latencies, texts and the clips they answer, over every stream's requests."""
    rng = random.Random(seed)
    latencies: list[float] = []
    texts: list[str] = []
    answered: list[Path] = []

    async def stream(index: int) -> None:
        for round_index in range(rounds):
            clip = clips[(index * rounds + round_index) % len(clips)]
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            answer = await stream_clip(port, clip, language, paced=True, trailing_silence=silence)
            latencies.append(answer.latency)
            texts.append(answer.text)
            answered.append(clip)

    await asyncio.gather(*(stream(i) for i in range(streams)))
    return latencies, texts, answered


def streams_before(streams: int, tried: str) -> int:
    """The N tried before this one (0 for the first): the bound must hold at every N up to it."""
    counts = [int(n) for n in tried.split(",")]
    index = counts.index(streams)
    return counts[index - 1] if index else 0


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en", help="bundled model name or directory")
    parser.add_argument("--corpus", default="commands")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--language", default="en")
    parser.add_argument("--streams", default="1,2,4,6,8,12", help="concurrent streams to try, rising")
    parser.add_argument("--rounds", type=int, default=5, help="requests per stream")
    parser.add_argument("--trailing-silence", type=float, default=0.7)
    parser.add_argument("--target", type=float, default=1.5, help="p95 latency bound, seconds")
    parser.add_argument("--our-options", default="", help="extra options for our server")
    args = parser.parse_args()

    cache_dir = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
    model_dir = Path(args.model) if Path(args.model).is_dir() else model_directory(args.model, cache_dir)
    clips = sorted((SPEECH / args.corpus).glob("*.wav"))
    common = ["--beam-size", str(args.beam), "--compute-type", args.compute_type]
    common += ["--cpu-threads", str(args.threads)]
    ours = ServerRun("wis_wyoming", [], free_port())
    # Room for every stream's request in flight: the bound under test is latency, not refusals.
    ours.command = our_server_command(
        ours.port, model_dir, [*common, "--max-queue", "64", *args.our_options.split()]
    )
    peer = ServerRun("wyoming-faster-whisper", [], free_port())
    peer.command = peer_server_command(
        peer.port, model_dir, tempfile.mkdtemp(prefix="peer-data-"), args.language, common
    )
    runs = [peer, ours]
    best: dict[str, int] = {run.name: 0 for run in runs}
    print(
        f"{args.corpus}, model {args.model}, beam {args.beam}, {args.threads} threads, real time + "
        f"{args.trailing_silence:g} s silence, {args.rounds} requests per stream; latency audio-stop "
        f"to transcript (s)"
    )
    print(f"{'streams':>7} {'server':<24} {'mean':>6} {'p50':>6} {'p95':>6} {'max':>6} {'WER %':>6}")
    try:
        await start_servers(runs, clips[0], args.language)
        passed = {run.name for run in runs}  # still within the bound at the last N
        for streams in (int(n) for n in args.streams.split(",")):
            for run in runs:
                latencies, texts, answered = await run_streams(
                    run.port, clips, streams, args.rounds, args.language, args.trailing_silence, streams
                )
                references = [normalise(c.with_suffix(".txt").read_text()) for c in answered]
                wer = jiwer.wer(references, [normalise(t) or "<empty>" for t in texts])
                p95 = percentile(latencies, 0.95)
                print(
                    f"{streams:>7} {run.name:<24} {statistics.mean(latencies):6.2f} "
                    f"{percentile(latencies, 0.5):6.2f} {p95:6.2f} {max(latencies):6.2f} {wer * 100:6.2f}",
                    flush=True,
                )
                if p95 <= args.target and best[run.name] == streams_before(streams, args.streams):
                    best[run.name] = streams
                elif p95 > args.target:
                    passed.discard(run.name)
            if not passed:
                break
    finally:
        stop_servers(runs)
    for name, streams in best.items():
        kept = f"up to {streams}" if streams else "not even 1"
        print(f"{name}: {kept} concurrent streams with p95 <= {args.target:g} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
