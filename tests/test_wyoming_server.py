"""The Wyoming server end to end, through wyoming.client.AsyncTcpClient on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info, SelectProgram
from wyoming.ping import Ping

from wis_wyoming.app import WisServer
from wis_wyoming.transports.wyoming_info import ASR_PROGRAM_NAME

from .conftest import read_wav, reference_text, speech
from .wyoming_client import next_event, send_audio, send_wav, transcribe_wav

normalise = EnglishTextNormalizer()
LAMP = "commands/turn_on_the_living_room_lamp.wav"  # 44.1 kHz stereo
DOOR = "commands/lock_the_Front_Door.wav"  # 16 kHz mono
LOUD = "commands/set_a_timer_for_30_seconds.wav"  # 16 kHz mono, loud enough to survive 8-bit


def assert_transcript_matches(event: Event, wav_name: str) -> Transcript:
    assert event.type == "transcript", event
    transcript = Transcript.from_event(event)
    assert normalise(transcript.text) == normalise(reference_text(speech(wav_name)))
    return transcript


async def test_info_lists_every_model_with_languages(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await next_event(client))
    assert [p.name for p in info.asr] == [ASR_PROGRAM_NAME]
    program = info.asr[0]
    assert program.installed and program.version and program.attribution.name
    models = {m.name: m for m in program.models}
    assert {"tiny.en", "base"} <= set(models)
    assert models["tiny.en"].languages == ["en"]
    assert {"en", "de", "es", "fr", "ja"} <= set(models["base"].languages)
    assert len(models["base"].languages) == 99
    for model in models.values():
        assert model.installed and model.version and model.description
        assert model.attribution.url.startswith("https://")


async def test_describe_reports_resident_models(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        event = await next_event(client)
    assert sorted(event.data["wis"]["resident"]) == ["base", "tiny.en"]
    assert event.data["wis"]["default_model"] == "tiny.en"


async def test_default_model_transcribes_a_command(server):
    event = await transcribe_wav(server.port, speech(LAMP))
    assert assert_transcript_matches(event, LAMP).language == "en"


async def test_transcribe_name_selects_the_model(server):
    wav = "multilingual/living_room_light_de.wav"
    event = await transcribe_wav(server.port, speech(wav), Transcribe(name="base"))
    transcript = Transcript.from_event(event)
    assert transcript.language == "de"
    assert "wohnzimmerlicht" in transcript.text.lower()


async def test_select_program_by_model_name_applies_to_the_connection(server):
    wav = speech("multilingual/living_room_light_es.wav")
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(SelectProgram(name="base").event())
        for _ in range(2):  # the choice holds for every request on the connection
            await send_wav(client, wav, Transcribe(language="es"))
            transcript = Transcript.from_event(await next_event(client))
            assert transcript.language == "es"
            assert "luz" in transcript.text.lower()
        # Selecting the program itself goes back to the default model (tiny.en, English-only).
        await client.write_event(SelectProgram(name=ASR_PROGRAM_NAME).event())
        await send_wav(client, speech(LAMP))
        assert_transcript_matches(await next_event(client), LAMP)


async def test_select_program_with_unknown_name_is_an_error(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(SelectProgram(name="no-such-program").event())
        event = await next_event(client)
        assert event.type == "error"
        assert "no-such-program" in event.data["text"] and "tiny.en" in event.data["text"]
        await send_wav(client, speech(LAMP))
        assert_transcript_matches(await next_event(client), LAMP)


async def test_44k_stereo_input_is_converted(server):
    _, rate, _, channels = read_wav(speech(LAMP))
    assert (rate, channels) == (44100, 2)
    assert_transcript_matches(await transcribe_wav(server.port, speech(LAMP)), LAMP)


async def test_8_bit_and_32_bit_audio_are_understood(server):
    pcm, rate, width, channels = read_wav(speech(LOUD))
    assert (width, channels) == (2, 1)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    for width, converted in (
        (1, ((samples >> 8) + 128).astype(np.uint8).tobytes()),
        (4, (samples << 16).astype("<i4").tobytes()),
    ):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await send_audio(client, converted, rate, width, 1)
            assert_transcript_matches(await next_event(client), LOUD)


async def test_two_requests_on_one_connection(server):
    first, second = LAMP, DOOR
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await send_wav(client, speech(first), Transcribe())
        assert_transcript_matches(await next_event(client), first)
        await send_wav(client, speech(second), Transcribe())
        assert_transcript_matches(await next_event(client), second)
        await client.write_event(Ping(text="still here").event())
        pong = await next_event(client)
        assert pong.type == "pong" and pong.data["text"] == "still here"


async def test_concurrent_clients_all_get_their_own_transcript(server):
    wavs = [
        LAMP,
        DOOR,
        LOUD,
        "commands/is_the_Garage_Door_open.wav",
    ]
    events = await asyncio.gather(*(transcribe_wav(server.port, speech(w)) for w in wavs))
    for event, wav in zip(events, wavs, strict=True):
        assert_transcript_matches(event, wav)


async def test_short_request_on_one_model_is_not_held_up_by_a_long_one_on_another(server):
    """Each model has its own worker: a 30 s clip on base does not queue tiny.en requests."""
    finished: list[str] = []

    async def run(name: str, wav: str, model: str) -> None:
        await transcribe_wav(server.port, speech(wav), Transcribe(name=model))
        finished.append(name)

    long = asyncio.create_task(run("long", "wis/wis_30sec.wav", "base"))
    await asyncio.sleep(0.5)  # the long request is in the base worker by now
    await run("short", LAMP, "tiny.en")
    await long
    assert finished == ["short", "long"]


async def test_empty_audio_gives_an_empty_transcript(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await send_audio(client, b"", 16000, 2, 1, Transcribe())
        event = await next_event(client)
        assert event.type == "transcript" and event.data["text"] == ""
        # ...and an audio-start straight followed by audio-stop, with zero-length chunks.
        await client.write_event(AudioStart(16000, 2, 1).event())
        await client.write_event(AudioChunk(16000, 2, 1, b"").event())
        await client.write_event(AudioStop().event())
        event = await next_event(client)
        assert event.type == "transcript" and event.data["text"] == ""


async def test_unknown_model_is_refused_before_the_audio(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Transcribe(name="large-v9").event())
        event = await next_event(client)
        assert event.type == "error" and event.data["code"] == "unknown-model"
        assert "tiny.en" in event.data["text"] and "base" in event.data["text"]
        # The connection is still good: a new request succeeds with the default model.
        await send_wav(client, speech(LAMP), Transcribe())
        assert_transcript_matches(await next_event(client), LAMP)


async def test_client_that_ignores_an_error_sees_the_connection_close_at_audio_stop(server):
    """Home Assistant's STT entity waits only for a transcript: it must not wait forever."""
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await send_wav(client, speech(LAMP), Transcribe(name="large-v9"))
        assert (await next_event(client)).type == "error"
        assert await client.read_event() is None  # no transcript from the default model: closed


async def test_language_without_a_model_name_goes_to_a_model_that_speaks_it(server):
    """The default is tiny.en (English-only); HA sends only its pipeline's language."""
    wav = "multilingual/living_room_light_de.wav"
    transcript = Transcript.from_event(
        await transcribe_wav(server.port, speech(wav), Transcribe(language="de"))
    )
    assert transcript.language == "de"
    assert "wohnzimmerlicht" in transcript.text.lower()
    french = speech("multilingual/whats_your_name_french.wav")
    event = await transcribe_wav(server.port, french, Event("transcribe", {"task": "translate"}))
    assert "call yourself" in Transcript.from_event(event).text.lower()


async def test_english_only_model_refuses_other_languages_and_translation(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for transcribe in (
            Transcribe(name="tiny.en", language="de"),
            Event("transcribe", {"name": "tiny.en", "task": "translate"}),
        ):
            await client.write_event(transcribe.event() if isinstance(transcribe, Transcribe) else transcribe)
            event = await next_event(client)
            assert event.type == "error" and "English-only" in event.data["text"]


async def test_bad_transcribe_options_are_errors(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for data in ({"beam_size": "five"}, {"beam_size": 99}, {"task": "summarise"}, {"name": 7}):
            await client.write_event(Event("transcribe", data))
            event = await next_event(client)
            assert event.type == "error", data


async def test_chunk_before_audio_start_fails_that_request_only(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(AudioChunk(16000, 2, 1, bytes(3200)).event())
        event = await next_event(client)
        assert event.type == "error" and event.data["code"] == "out-of-order"
        # One error per broken request: the rest of it is swallowed, and its end closes.
        await client.write_event(AudioChunk(16000, 2, 1, bytes(3200)).event())
        await client.write_event(AudioStop().event())
        assert await client.read_event() is None
    assert_transcript_matches(await transcribe_wav(server.port, speech(LAMP)), LAMP)


async def test_stray_audio_stop_is_an_error_and_the_connection_stays_open(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(AudioStop().event())
        event = await next_event(client)
        assert event.type == "error" and event.data["code"] == "out-of-order"
        await send_wav(client, speech(LAMP), Transcribe())
        assert_transcript_matches(await next_event(client), LAMP)


async def test_transcribe_inside_an_audio_stream_is_an_error(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(AudioStart(16000, 2, 1).event())
        await client.write_event(Transcribe().event())
        event = await next_event(client)
        assert event.type == "error" and event.data["code"] == "out-of-order"
        await client.write_event(AudioStop().event())
        assert await client.read_event() is None


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([Event("audio-start", {"rate": 16000})], "integer rate, width and channels"),
        ([AudioStart(16000, 3, 1).event()], "sample width"),  # 24-bit is not a Wyoming width
        ([AudioStart(16000, 2, 1).event(), AudioChunk(16000, 2, 1, bytes(3)).event()], "whole number"),
        ([AudioStart(16000, 2, 1).event(), AudioChunk(0, 2, 1, bytes(4)).event()], "sample rate"),
    ],
)
async def test_malformed_audio_is_an_error(server, events, expected):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for event in events:
            await client.write_event(event)
        error = await next_event(client)
        assert error.type == "error" and expected in error.data["text"]
        await client.write_event(AudioStop().event())
        assert await client.read_event() is None
    assert_transcript_matches(await transcribe_wav(server.port, speech(LAMP)), LAMP)


async def test_unparseable_bytes_get_an_error_and_other_clients_carry_on(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"this is not json\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    header = json.loads(line)
    assert header["type"] == "error"
    data = json.loads(await reader.readexactly(header["data_length"]))
    assert data["code"] == "malformed-event"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and that connection is closed
    writer.close()
    # A header announcing a 1 GiB payload is refused without reading it.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(json.dumps({"type": "audio-chunk", "payload_length": 1 << 30}).encode() + b"\n")
    await writer.drain()
    header = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert header["type"] == "error"
    writer.close()
    assert_transcript_matches(await transcribe_wav(server.port, speech(LAMP)), LAMP)


async def test_audio_over_the_limit_is_refused(small_limits_server):
    port = small_limits_server.port
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await send_wav(client, speech("wis/wis_10sec.wav"), Transcribe())
        event = await next_event(client)
        assert event.type == "error" and event.data["code"] == "audio-too-long"
        assert "5 s" in event.data["text"]
        assert await client.read_event() is None
    assert_transcript_matches(await transcribe_wav(port, speech(LAMP)), LAMP)


async def test_overload_is_refused_with_a_clear_error(small_limits_server):
    """max_queue=1: while one request runs on tiny.en, a second one is refused, not queued."""
    port = small_limits_server.port
    pcm, rate, width, channels = read_wav(speech("librispeech/1089-134686-0000.wav"))
    pcm = pcm[: 4 * rate * width * channels]  # under the 5 s limit, long enough to be still running

    async def request() -> Event:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await send_audio(client, pcm, rate, width, channels, Transcribe(language="en"))
            return await next_event(client)

    events = await asyncio.gather(*(request() for _ in range(4)))
    kinds = sorted(e.type for e in events)
    assert "transcript" in kinds
    refused = [e for e in events if e.type == "error"]
    assert refused and all(e.data["code"] == "overloaded" for e in refused)
    assert "busy" in refused[0].data["text"]
    # Once the model is free again, requests go through.
    assert (await request()).type == "transcript"


async def test_event_loop_answers_while_a_long_transcription_runs(server):
    """Inference runs on worker threads: a ping is answered before a 30 s clip is transcribed."""
    order: list[str] = []

    async def long_request() -> None:
        await transcribe_wav(server.port, speech("wis/wis_30sec.wav"), Transcribe(name="base"))
        order.append("transcript")

    task = asyncio.create_task(long_request())
    await asyncio.sleep(0.5)
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Ping(text="now").event())
        assert (await next_event(client)).type == "pong"
        order.append("pong")
        await client.write_event(Describe().event())
        assert (await next_event(client)).type == "info"
    await task
    assert order == ["pong", "transcript"]


async def test_unix_socket_transport(base_settings, tmp_path):
    socket_path = tmp_path / "wis.sock"
    settings = replace(base_settings, uri=f"unix://{socket_path}", models=["tiny.en"])
    async with WisServer(settings), AsyncClient.from_uri(f"unix://{socket_path}") as client:
        await send_wav(client, speech(DOOR), Transcribe())
        assert_transcript_matches(await next_event(client), DOOR)


async def test_a_bad_select_program_does_not_spoil_an_open_stream(server):
    pcm, rate, width, channels = read_wav(speech(DOOR))
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate, width, channels).event())
        half = len(pcm) // 2
        await client.write_event(AudioChunk(rate, width, channels, pcm[:half]).event())
        await client.write_event(SelectProgram(name="nonsense").event())
        assert (await next_event(client)).type == "error"
        await client.write_event(AudioChunk(rate, width, channels, pcm[half:]).event())
        await client.write_event(AudioStop().event())
        assert_transcript_matches(await next_event(client), DOOR)


async def test_initial_prompt_biases_the_decoder(server):
    """tiny.en hears "the incubi" without help; a prompt naming the device fixes the spelling."""
    wav = speech("commands/whats_the_temperature_of_the_EcoBee.wav")
    plain = Transcript.from_event(await transcribe_wav(server.port, wav, Transcribe(name="tiny.en")))
    prompted = Transcript.from_event(
        await transcribe_wav(
            server.port, wav, Event("transcribe", {"name": "tiny.en", "initial_prompt": "EcoBee"})
        )
    )
    assert "EcoBee" not in plain.text
    assert "EcoBee" in prompted.text


async def test_a_model_not_resident_loads_on_first_use(small_limits_server):
    port = small_limits_server.port
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        assert (await next_event(client)).data["wis"]["resident"] == ["tiny.en"]
        await send_wav(client, speech("multilingual/living_room_light_de.wav"), Transcribe(name="base"))
        transcript = Transcript.from_event(await next_event(client))
        assert transcript.language == "de" and "wohnzimmerlicht" in transcript.text.lower()
        await client.write_event(Describe().event())
        assert (await next_event(client)).data["wis"]["resident"] == ["base", "tiny.en"]
