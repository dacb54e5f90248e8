"""The WIS-compatible HTTP API, with real audio over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from dataclasses import dataclass

import aiohttp
import jiwer
import numpy as np
import openai
import pytest
import pytest_asyncio
from whisper_normalizer.english import EnglishTextNormalizer

from wis_wyoming.app import WisServer
from wis_wyoming.engine.asr import TranscriptionOptions
from wis_wyoming.engine.audio import PcmFormat, StreamingResampler

from .conftest import REPO, corpus, http_settings, read_wav, reference_text, speech

normalise = EnglishTextNormalizer()
LIBRI = speech("librispeech/1089-134686-0000.wav")
DOOR = speech("commands/lock_the_Front_Door.wav")
KEY = "kitchen-secret"


@dataclass
class Http:
    session: aiohttp.ClientSession  # sends the API key
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http(base_settings):
    """tiny.en, Piper and the LLM behind the HTTP API, with an API key."""
    settings, url = http_settings(base_settings, api_key=KEY)
    headers = {"X-API-Key": KEY}
    async with WisServer(settings), aiohttp.ClientSession(url, headers=headers) as session:
        yield Http(session, url)


def form(path, field: str = "audio_file") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field(field, path.read_bytes(), filename=path.name, content_type="audio/wav")
    return data


async def test_ping_needs_no_key_and_the_rest_does(http):
    async with http.session.get("/api/status") as response:  # the fixture's session sends the key
        assert response.status == 200
    async with aiohttp.ClientSession(http.url) as anonymous:
        async with anonymous.get("/api/ping") as response:
            assert response.status == 200 and await response.text() == "pong"
        async with anonymous.get("/api/status") as response:
            assert response.status == 401 and (await response.json())["error"] == "unauthorized"
        headers = {"Authorization": f"Bearer {KEY}"}
        async with anonymous.get("/api/status", headers=headers) as response:
            assert response.status == 200


async def test_status_reports_models_voices_and_llm(http):
    async with http.session.get("/api/status") as response:
        status = await response.json()
    assert status["asr"]["resident"] == ["tiny.en"] and status["uptime_s"] >= 0
    assert "en_US-joe-medium" in status["tts"]["voices"] and status["llm"]


async def test_asr_answers_in_the_wis_shape(http):
    async with http.session.post("/api/asr", params={"beam_size": "1"}, data=form(LIBRI)) as response:
        assert response.status == 200
        body = await response.json()
    assert set(body) == {"text", "language", "infer_time", "infer_speedup", "audio_duration"}
    assert jiwer.wer(normalise(reference_text(LIBRI)), normalise(body["text"])) < 0.15
    assert body["language"] == "en" and 10000 < body["audio_duration"] < 11000
    assert body["infer_time"] > 0 and body["infer_speedup"] > 1


async def test_bad_asr_requests_get_json_4xx(http):
    cases = [
        ({"beam_size": "wide"}, form(DOOR), 400, "invalid-request"),
        ({"force_language": "klingon"}, form(DOOR), 400, "invalid-request"),
        ({"model": "huge"}, form(DOOR), 400, "unknown-model"),
        ({}, form(DOOR, field="file"), 400, "invalid-request"),
    ]
    for params, data, status, code in cases:
        async with http.session.post("/api/asr", params=params, data=data) as response:
            assert response.status == status, params
            assert (await response.json())["error"] == code
    garbage = aiohttp.FormData()
    garbage.add_field("audio_file", b"this is not audio at all" * 100, filename="x.wav")
    async with http.session.post("/api/asr", data=garbage) as response:
        assert response.status == 400 and (await response.json())["error"] == "invalid-audio"
    async with http.session.post("/api/asr", data=b"raw") as response:
        assert response.status == 400
    async with http.session.get("/api/nothing-here") as response:
        assert response.status == 404 and "error" in await response.json()


async def test_tts_returns_wav_and_says_when_it_came_from_the_cache(http):
    params = {"text": "The back door is open.", "voice": "en_US-joe-medium"}
    async with http.session.get("/api/tts", params=params) as response:
        assert response.status == 200 and response.headers["X-WIS-Cache"] == "MISS"
        first = await response.read()
    async with http.session.get("/api/tts", params=params) as response:
        assert response.headers["X-WIS-Cache"] == "HIT" and await response.read() == first
    async with http.session.get("/api/tts", params={**params, "nocache": "true"}) as response:
        assert response.headers["X-WIS-Cache"] == "MISS"
    with wave.open(io.BytesIO(first)) as wav:
        assert wav.getframerate() == 22050 and wav.getnframes() > 22050
    async with http.session.get("/api/tts", params={"text": "Hi.", "voice": "nobody"}) as response:
        assert response.status == 400 and (await response.json())["error"] == "unknown-voice"


async def test_llm_and_its_wis_alias_answer(http):
    for route in ("/api/llm", "/api/chatbot"):
        async with http.session.get(route, params={"text": "What color is grass?"}) as response:
            assert response.status == 200
            assert (await response.json())["text"]
    async with http.session.get("/api/llm") as response:
        assert response.status == 400


async def paced(data: bytes, bytes_per_second: float, step: int = 3200):
    """The body in chunks, at `bytes_per_second` (a Willow device streams while the user speaks)."""
    for offset in range(0, len(data), step):
        yield data[offset : offset + step]
        await asyncio.sleep(step / bytes_per_second)


PCM_HEADERS = {"x-audio-sample-rate": "16000", "x-audio-bits": "16", "x-audio-channel": "1"}


async def test_willow_pcm_streamed_in_chunks_is_transcribed(http):
    pcm, rate, width, _ = read_wav(LIBRI)
    headers = {**PCM_HEADERS, "x-audio-codec": "pcm"}
    body = paced(pcm, 4 * rate * width)  # four times real time keeps the test short
    async with http.session.post(
        "/api/willow", params={"stats": "true"}, data=body, headers=headers
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert jiwer.wer(normalise(reference_text(LIBRI)), normalise(answer["text"])) < 0.15
    assert answer["language"] == "en" and 10000 < answer["audio_duration"] < 11000
    assert answer["infer_time"] >= 0


async def test_willow_wav_body_uses_the_format_in_its_header(http):
    headers = {
        "x-audio-codec": "wav",
        "x-audio-sample-rate": "44100",
        "x-audio-bits": "8",
    }  # the WAV knows better
    body = paced(DOOR.read_bytes(), 200_000, step=1000)
    async with http.session.post("/api/willow", data=body, headers=headers) as response:
        assert response.status == 200
        answer = await response.json()
    assert set(answer) == {"text", "language"}
    assert normalise(answer["text"]) == normalise(reference_text(DOOR))


async def test_willow_refuses_missing_or_invalid_headers_with_json(http):
    pcm = read_wav(DOOR)[0]
    cases = [
        ({"x-audio-codec": "pcm"}, "x-audio-sample-rate is required"),
        ({**PCM_HEADERS, "x-audio-codec": "opus"}, "x-audio-codec must be one of"),
        ({**PCM_HEADERS, "x-audio-bits": "12"}, "x-audio-bits must be 8, 16 or 32"),
        ({**PCM_HEADERS, "x-audio-sample-rate": "fast"}, "must be an integer"),
        ({**PCM_HEADERS, "x-audio-codec": "wav"}, "not a WAV file"),
    ]
    for headers, message in cases:
        async with http.session.post("/api/willow", data=pcm, headers=headers) as response:
            assert response.status == 400, headers
            assert message in (await response.json())["message"]


async def test_openai_client_transcribes_in_every_response_format(http):
    client = openai.AsyncOpenAI(base_url=f"{http.url}/v1", api_key=KEY)
    try:
        with LIBRI.open("rb") as audio:
            result = await client.audio.transcriptions.create(model="whisper-1", file=audio)
        assert jiwer.wer(normalise(reference_text(LIBRI)), normalise(result.text)) < 0.15
        with LIBRI.open("rb") as audio:
            verbose = await client.audio.transcriptions.create(
                model="tiny.en", file=audio, response_format="verbose_json"
            )
        assert verbose.language == "en" and verbose.segments and 10 < verbose.duration < 11
        for response_format, first_line in (("srt", "1"), ("vtt", "WEBVTT"), ("text", None)):
            with DOOR.open("rb") as audio:
                text = await client.audio.transcriptions.create(
                    model="whisper-1", file=audio, response_format=response_format
                )
            lines = str(text).strip().splitlines()
            assert first_line is None or lines[0] == first_line
            assert "front door" in str(text).lower()
        with DOOR.open("rb") as audio:
            stream = await client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
            events = [event async for event in stream]
        assert events[-1].type == "transcript.text.done" and "front door" in events[-1].text.lower()
        assert "".join(e.delta for e in events[:-1]).strip() == events[-1].text.strip()
    finally:
        await client.close()


SPOKEN = "The kitchen window is open."


async def test_openai_client_speaks_and_chats(http, server):
    client = openai.AsyncOpenAI(base_url=f"{http.url}/v1", api_key=KEY)
    try:
        speech_response = await client.audio.speech.create(
            model="tts-1", voice="alloy", input=SPOKEN, response_format="wav"
        )
        wav_bytes = speech_response.read()
        with wave.open(io.BytesIO(wav_bytes)) as wav:
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        resampler = StreamingResampler()
        audio = np.concatenate([resampler.push(pcm, PcmFormat(rate, 2, 1)), resampler.flush()])
        heard = await server.engine.transcribe(audio, TranscriptionOptions(model="tiny.en"))
        # Piper draws its noise anew for each synthesis; tiny.en once heard "catching" for "kitchen".
        assert jiwer.wer(normalise(SPOKEN), normalise(heard.text)) <= 0.2
        chat = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Say hello."}], max_tokens=20
        )
        assert chat.choices[0].message.content
        stream = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Count to three."}], max_tokens=20, stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
        assert len(pieces) > 2 and "".join(pieces).strip()
        models = [model.id async for model in client.models.list()]
        assert "tiny.en" in models and "en_US-joe-medium" in models
    finally:
        await client.close()


async def test_websocket_streams_committed_text_then_the_final_one_for_each_utterance(http):
    pcm, rate, width, _ = read_wav(LIBRI)
    door = read_wav(DOOR)[0]
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.ws_connect(f"{http.url}/api/ws/asr?api_key={KEY}") as socket,
    ):
        await socket.send_bytes(b"\0\0")  # audio before the options
        assert (await socket.receive_json())["error"] == "invalid-request"
        await socket.send_json({"model": "tiny.en", "sample_rate": rate, "bits": 16})
        step = rate * width // 10
        for offset in range(0, len(pcm), step):  # 0.1 s frames at twice real time
            await socket.send_bytes(pcm[offset : offset + step])
            await asyncio.sleep(0.05)
        await socket.send_json({"type": "end"})
        messages = []
        while not messages or messages[-1]["type"] != "final":
            messages.append(await socket.receive_json(timeout=60))
        committed = [m["text"] for m in messages if m["type"] == "committed"]
        final = messages[-1]
        assert committed, "text settles while the audio arrives"
        assert final["text"].startswith("".join(committed).strip()[:20])
        assert jiwer.wer(normalise(reference_text(LIBRI)), normalise(final["text"])) < 0.15
        # A second utterance on the same socket.
        await socket.send_json({"sample_rate": 16000})
        await socket.send_bytes(door)
        await socket.send_json({"type": "end"})
        while (message := await socket.receive_json(timeout=60))["type"] != "final":
            pass
        assert normalise(message["text"]) == normalise(reference_text(DOOR))
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await anonymous.ws_connect(f"{http.url}/api/ws/asr")  # no key


async def test_many_websockets_at_once_each_get_their_own_transcript(http):
    """Six sockets stream six commands at the same time, in real time: each final transcript is
    its own command's, and committed text still begins it."""
    clips = corpus("commands")[:6]

    async def stream(clip) -> tuple[str, str]:
        pcm, rate, width, _ = read_wav(clip)
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.ws_connect(f"{http.url}/api/ws/asr?api_key={KEY}") as socket,
        ):
            await socket.send_json({"model": "tiny.en", "sample_rate": rate, "bits": 8 * width})
            step = rate * width // 10
            for offset in range(0, len(pcm), step):
                await socket.send_bytes(pcm[offset : offset + step])
                await asyncio.sleep(0.1)
            await socket.send_json({"type": "end"})
            committed = ""
            while (message := await socket.receive_json(timeout=60))["type"] != "final":
                assert message["type"] == "committed", message
                committed += message["text"]
            return committed, message["text"]

    results = await asyncio.gather(*(stream(clip) for clip in clips))
    for clip, (committed, final) in zip(clips, results, strict=True):
        assert final.startswith(committed.strip())
        reference = normalise(reference_text(clip))
        others = [normalise(reference_text(other)) for other in clips if other != clip]
        # Its own command, not another socket's: nearer its reference than any other.
        mine = jiwer.wer(reference, normalise(final))
        assert mine <= 0.5 and all(mine < jiwer.wer(other, normalise(final)) for other in others), (
            clip.name,
            final,
        )


AMRWB = REPO / "tests" / "fixtures" / "lock_the_Front_Door.amr"  # scripts/make_amrwb_fixture.py


async def test_willow_amrwb_from_a_real_encoder_streamed_in_chunks_is_transcribed(http):
    data = AMRWB.read_bytes()
    assert data.startswith(b"#!AMR-WB\n")  # the MIME storage format, as Willow sends it
    headers = {**PCM_HEADERS, "x-audio-codec": "amrwb"}
    body = paced(data, 4 * 2981, step=305)  # 23.85 kbit/s (61-byte frames), five frames a chunk
    async with http.session.post(
        "/api/willow", params={"stats": "true"}, data=body, headers=headers
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert jiwer.wer(normalise(reference_text(DOOR)), normalise(answer["text"])) <= 0.25
    assert 2000 < answer["audio_duration"] < 2300  # 2.12 s, padded to whole 20 ms frames
    pcm = read_wav(DOOR)[0]  # PCM labelled as AMR-WB
    async with http.session.post("/api/willow", data=pcm, headers=headers) as response:
        assert response.status == 400 and (await response.json())["error"] == "invalid-audio"


async def dying_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An OpenAI-compatible server that streams three pieces of an answer and then dies: no last
    chunk, no [DONE], the connection just closes."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in ("The ", "lights ", "are"):
        event = b"data: " + json.dumps({"choices": [{"delta": {"content": piece}}]}).encode() + b"\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.close()


async def test_a_chat_stream_whose_llm_dies_midway_ends_with_an_error_event(base_settings):
    backend = await asyncio.start_server(dying_backend, "127.0.0.1", 0)
    settings, url = http_settings(
        base_settings,
        tts=False,
        llm="openai",
        llm_url=f"http://127.0.0.1:{backend.sockets[0].getsockname()[1]}/v1",
        llm_model="remote",
    )
    request = {
        "model": "any",
        "messages": [{"role": "user", "content": "Turn on the lights."}],
        "stream": True,
    }
    try:
        async with WisServer(settings), aiohttp.ClientSession(url) as session:
            async with session.post("/v1/chat/completions", json=request) as response:
                assert response.status == 200
                raw = (await response.read()).decode()  # the chunked body ends properly
            events = [json.loads(block[6:]) for block in raw.split("\n\n") if block.startswith("data: ")]
            said = "".join(event["choices"][0]["delta"].get("content", "") for event in events[:-1])
            assert said == "The lights are" and "[DONE]" not in raw
            error = events[-1]["error"]
            assert error["code"] == "llm-failed" and error["type"] == "server_error" and error["message"]
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none")
            try:
                stream = await client.chat.completions.create(
                    model="any", messages=request["messages"], stream=True
                )
                pieces = []
                with pytest.raises(openai.APIError):  # the official client raises on the event
                    async for chunk in stream:
                        pieces.append(chunk.choices[0].delta.content or "")
                assert "".join(pieces) == "The lights are"
            finally:
                await client.close()
    finally:
        backend.close()
