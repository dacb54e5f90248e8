"""Willow endpoint latency: decoding while the body arrives vs after the whole body (WIS's way).

WIS's own clips (`shared/speech/wis`: 3.8, 10.7 and 29.3 s) are uploaded as a chunked body
paced in real time, as a Willow device sends them while the user speaks, in three ways,
alternating, in one run, on the same model, beam and threads:
- `/api/willow`: every chunk goes into the streaming engine as it lands;
- `/api/asr` after the whole body has been read, on the same server: decoding after the body,
  with everything else of ours (the adaptive encoder window: only the spoken frames encoded);
- `/api/asr` after the whole body on a second server with `--encoder-window padded`: what WIS
  does (its /api/willow buffers the body, pads it to Whisper's 30 s window and runs Whisper).
The latency is from the last byte of the body to the response. Target: streaming ≤ 0.25× of
WIS's way for the 10 s and 30 s clips; the ratio to our own after-body decode is printed too.

    .venv/bin/python bench/willow_latency.py --model tiny.en --beam 1 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import wave

import aiohttp
from wyoming_latency import SPEECH, free_port

from wis_wyoming.engine.audio import wav_bytes

CHUNK_SECONDS = 0.1


async def paced(pcm: bytes, rate: int, marks: dict) -> object:
    step = int(rate * CHUNK_SECONDS) * 2
    started = time.perf_counter()
    for index, offset in enumerate(range(0, len(pcm), step)):
        yield pcm[offset : offset + step]
        await asyncio.sleep(max(0.0, started + (index + 1) * CHUNK_SECONDS - time.perf_counter()))
    marks["last_byte"] = time.perf_counter()


async def streamed(session: aiohttp.ClientSession, pcm: bytes, rate: int, beam: int) -> tuple[float, str]:
    marks: dict = {}
    headers = {
        "x-audio-codec": "pcm",
        "x-audio-sample-rate": str(rate),
        "x-audio-bits": "16",
        "x-audio-channel": "1",
    }
    params = {"beam_size": str(beam)}
    async with session.post(
        "/api/willow", data=paced(pcm, rate, marks), headers=headers, params=params
    ) as response:
        body = await response.json()
    return time.perf_counter() - marks["last_byte"], body["text"]


async def after_body(session: aiohttp.ClientSession, pcm: bytes, rate: int, beam: int) -> tuple[float, str]:
    """The same paced upload, read whole by the client first (so the server's clock starts at the
    last byte, as WIS's does), then sent at once to /api/asr."""
    marks: dict = {}
    received = b"".join([chunk async for chunk in paced(pcm, rate, marks)])
    form = aiohttp.FormData()
    form.add_field("audio_file", wav_bytes(received, rate), filename="clip.wav", content_type="audio/wav")
    async with session.post("/api/asr", data=form, params={"beam_size": str(beam)}) as response:
        body = await response.json()
    return time.perf_counter() - marks["last_byte"], body["text"]


def start_server(model: str, beam: int, window: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [
        sys.executable, "-m", "wis_wyoming", "serve", "--uri", f"tcp://127.0.0.1:{free_port()}",
        "--http-port", str(port), "--models", model, "--local-files-only", "--log-level", "WARNING",
        "--no-tts", "--llm", "none", "--beam-size", str(beam), "--encoder-window", window,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), port


async def wait_http(session: aiohttp.ClientSession, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            async with session.get("/api/ping") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            await asyncio.sleep(0.5)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours, ours_port = start_server(args.model, args.beam, "auto")
    wis, wis_port = start_server(args.model, args.beam, "padded")
    clips = sorted((SPEECH / "wis").glob("*.wav"), key=lambda p: p.stat().st_size)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{ours_port}") as session,
            aiohttp.ClientSession(f"http://127.0.0.1:{wis_port}") as wis_session,
        ):
            await wait_http(session, ours)
            await wait_http(wis_session, wis)
            ways = (
                ("streamed", streamed, session),
                ("after body", after_body, session),
                ("WIS's way", after_body, wis_session),
            )
            for clip in clips:
                with wave.open(str(clip)) as wav:
                    rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
                for _, way, client in ways:
                    await way(client, pcm[: rate * 2], rate, args.beam)  # warm-up
                for _ in range(args.rounds):
                    for name, way, client in ways:
                        latency, _ = await way(client, pcm, rate, args.beam)
                        results.setdefault(clip.name, {}).setdefault(name, []).append(latency)
    finally:
        for process in (ours, wis):
            process.terminate()
            process.wait(timeout=30)
    print(
        f"model {args.model}, beam {args.beam}, {os.cpu_count()} cores, body paced in real time; "
        f"ms from the last byte to the response (mean of {args.rounds}); after body: our /api/asr "
        "(adaptive window), WIS's way: /api/asr on the padded 30 s window"
    )
    print(f"{'clip':<16} {'streamed':>9} {'after body':>11} {'ratio':>6} {'WIS way':>8} {'ratio':>6}")
    for clip, timed in results.items():
        ours_s, whole, padded = (statistics.mean(timed[n]) for n in ("streamed", "after body", "WIS's way"))
        print(
            f"{clip:<16} {ours_s * 1000:9.0f} {whole * 1000:11.0f} {ours_s / whole:6.2f}"
            f" {padded * 1000:8.0f} {ours_s / padded:6.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
