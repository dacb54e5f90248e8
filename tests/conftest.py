"""Shared fixtures: the speech corpus, a prepared model cache, servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from wis_wyoming.app import WisServer
from wis_wyoming.config import Settings
from wis_wyoming.engine.streaming import TranscriptStream

REPO = Path(__file__).resolve().parent.parent
SPEECH = Path(os.environ.get("WIS_SPEECH_DIR", REPO.parent / "shared" / "speech"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_settings(base: Settings, **changes: Any) -> tuple[Settings, str]:
    """tiny.en behind the HTTP API on a free port of 127.0.0.1, with `changes`; and its URL."""
    port = free_port()
    return replace(base, models=["tiny.en"], http_port=port, **changes), f"http://127.0.0.1:{port}"


async def push_in_real_time(stream: TranscriptStream, audio: np.ndarray, step: int = 4096) -> None:
    """Feed 16 kHz audio to a stream as a microphone would: `step` samples at a time, in real time."""
    started = time.perf_counter()
    for offset in range(0, len(audio), step):
        stream.push(audio[offset : offset + step])
        await asyncio.sleep(max(0.0, started + (offset + step) / 16000 - time.perf_counter()))


def speech(relative: str) -> Path:
    path = SPEECH / relative
    assert path.is_file(), f"speech corpus file missing: {path} (set WIS_SPEECH_DIR)"
    return path


def reference_text(wav: Path) -> str:
    return wav.with_suffix(".txt").read_text(encoding="utf-8").strip()


def corpus(folder: str) -> list[Path]:
    files = sorted((SPEECH / folder).glob("*.wav"))
    assert files, f"no clips in {SPEECH / folder}"
    return files


def read_wav(path: Path) -> tuple[bytes, int, int, int]:
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate(), wav.getsampwidth(), wav.getnchannels()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache: the bundled base model is assembled into it once per test session."""
    return tmp_path_factory.mktemp("wis-cache")


@pytest.fixture(scope="session")
def base_settings(cache_dir: Path) -> Settings:
    return Settings(
        uri="tcp://127.0.0.1:0",
        models=["tiny.en", "base"],
        cache_dir=cache_dir,
        local_files_only=True,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(base_settings: Settings):
    """The main server: tiny.en (default) and base resident."""
    async with WisServer(base_settings) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def small_limits_server(base_settings: Settings):
    """tiny.en only, with a 5 s audio limit and one request in flight per model."""
    settings = replace(base_settings, models=["tiny.en"], max_audio_seconds=5.0, max_queue=1)
    async with WisServer(settings) as running:
        yield running
