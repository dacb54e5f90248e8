"""A small Wyoming test client built on wyoming.client.AsyncTcpClient."""

from __future__ import annotations

from pathlib import Path

from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from .conftest import read_wav

SAMPLES_PER_CHUNK = 1024


async def send_audio(
    client: AsyncTcpClient,
    pcm: bytes,
    rate: int,
    width: int,
    channels: int,
    transcribe: Transcribe | Event | None = None,
) -> None:
    if transcribe is not None:
        await client.write_event(transcribe if isinstance(transcribe, Event) else transcribe.event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = SAMPLES_PER_CHUNK * width * channels
    for offset in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate, width, channels, pcm[offset : offset + step]).event())
    await client.write_event(AudioStop().event())


async def send_wav(client: AsyncTcpClient, wav: Path, transcribe: Transcribe | Event | None = None) -> None:
    pcm, rate, width, channels = read_wav(wav)
    await send_audio(client, pcm, rate, width, channels, transcribe)


STREAMING_EVENTS = frozenset({"transcript-start", "transcript-chunk", "transcript-stop"})


async def next_event(client: AsyncTcpClient) -> Event:
    """The next event that is not a streaming-transcript event: what a client that does not
    stream (Home Assistant before streaming STT) acts on."""
    while True:
        event = await client.read_event()
        assert event is not None, "server closed the connection"
        if event.type not in STREAMING_EVENTS:
            return event


async def read_answer(client: AsyncTcpClient) -> list[Event]:
    """Every event of one streamed answer, up to transcript-stop (or an error)."""
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"server closed the connection after {[e.type for e in events]}"
        events.append(event)
        if event.type in ("transcript-stop", "error"):
            return events


async def transcribe_wav(port: int, wav: Path, transcribe: Transcribe | None = None) -> Event:
    """One request on a fresh connection; returns the server's answer (transcript or error)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await send_wav(client, wav, transcribe)
        return await next_event(client)
