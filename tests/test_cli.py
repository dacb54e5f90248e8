"""The command line, run as a user would: real processes, real files, offline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from .conftest import speech

CLI = [sys.executable, "-m", "wis_wyoming"]


def run_cli(*args: str, cache_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WIS_CACHE_DIR": str(cache_dir)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_transcribe_prints_the_text(cache_dir):
    result = run_cli("transcribe", str(speech("commands/lock_the_Front_Door.wav")), cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lower().rstrip(".") == "lock the front door"


def test_transcribe_json_translates_with_base(cache_dir):
    french = speech("multilingual/whats_your_name_french.wav")
    result = run_cli(
        "transcribe", str(french), "--model", "base", "--task", "translate", "--json", cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["language"] == "fr" and report["task"] == "translate"
    assert "call yourself" in report["text"].lower()
    assert report["segments"] and report["segments"][0]["end"] > report["segments"][0]["start"]
    assert report["inference_seconds"] > 0


def test_transcribe_reports_bad_input_clearly(cache_dir, tmp_path):
    result = run_cli("transcribe", str(speech("commands/pause.wav")), "--model", "nope", cache_dir=cache_dir)
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr
    result = run_cli("transcribe", str(speech("commands/pause.wav")), "--beam", "0", cache_dir=cache_dir)
    assert result.returncode == 2 and "beam_size" in result.stderr
    missing = tmp_path / "missing.wav"
    result = run_cli("transcribe", str(missing), cache_dir=cache_dir)
    assert result.returncode == 2 and "cannot decode" in result.stderr


def test_models_lists_bundled_models(cache_dir):
    result = run_cli("models", "--json", "--uri", f"tcp://127.0.0.1:{free_port()}", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = {m["name"]: m for m in report["models"]}
    assert names["tiny.en"]["origin"] == "bundled" and names["base"]["languages"] == 99
    assert report["server"] is None


async def test_serve_runs_offline_reports_resident_models_and_stops_on_sigterm(cache_dir):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WIS_CACHE_DIR": str(cache_dir), "WIS_LOCAL_FILES_ONLY": "1"}
    process = subprocess.Popen(
        [*CLI, "serve", "--uri", f"tcp://127.0.0.1:{port}", "--models", "tiny.en,base"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        info = None
        deadline = time.monotonic() + 120
        while info is None and time.monotonic() < deadline and process.poll() is None:
            try:
                async with AsyncTcpClient("127.0.0.1", port) as client:
                    await client.write_event(Describe().event())
                    info = await client.read_event()
            except OSError:
                time.sleep(0.3)
        assert info is not None, "server did not come up"
        assert {m.name for m in Info.from_event(info).asr[0].models} >= {"tiny.en", "base"}
        models = run_cli("models", "--uri", f"tcp://127.0.0.1:{port}", cache_dir=cache_dir)
        assert "resident on" in models.stdout and "tiny.en" in models.stdout.split("resident on")[1]
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log
    # Start-up log: the resolved settings with their sources, and each model's load time.
    assert "models = ['tiny.en', 'base'] (command line)" in log
    assert "local_files_only = True (env WIS_LOCAL_FILES_ONLY)" in log
    assert "Loaded model tiny.en" in log and "Loaded model base" in log
    assert "Shutting down" in log


def test_serve_on_a_busy_port_says_so(cache_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--local-files-only", "--uri", f"tcp://127.0.0.1:{port}", cache_dir=cache_dir
        )
    assert result.returncode == 2
    assert f"cannot listen on tcp://127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uri", "tcp://nohost"], "expected tcp://HOST:PORT"),
        (["--models", "does-not-exist"], "unknown model 'does-not-exist'"),
        (["--device", "cuda:7"], "cuda"),
    ],
)
def test_serve_refuses_bad_settings_with_a_message(cache_dir, args, message):
    result = run_cli("serve", "--local-files-only", *args, cache_dir=cache_dir, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
