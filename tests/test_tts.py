"""Text to speech over Wyoming: Piper's voice, heard back by our own ASR (real voice, real models)."""

from __future__ import annotations

import asyncio
import shutil

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info, SelectProgram
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wis_wyoming.engine.asr import PassKind, TranscriptionOptions
from wis_wyoming.engine.audio import PcmFormat, StreamingResampler
from wis_wyoming.engine.voices import BUNDLED_VOICE, bundled_voice_files

from .conftest import corpus, reference_text

normalise = EnglishTextNormalizer()
REPLY = "The kitchen lights are now on in the hall. Dr. Jones set the heating to 21°C at 7:05. Anything else?"


async def read_speech(client: AsyncTcpClient, until: str = "audio-stop") -> tuple[list[str], int, bytes]:
    """Event types up to `until`, the sample rate and the audio."""
    types, rate, pcm = [], 0, bytearray()
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout=60)
        assert event is not None, f"connection closed after {types}"
        types.append(event.type)
        if AudioStart.is_type(event.type):
            rate = AudioStart.from_event(event).rate
        elif AudioChunk.is_type(event.type):
            pcm += AudioChunk.from_event(event).audio
        if event.type in (until, "error"):
            return types, rate, bytes(pcm)


async def synthesize(port: int, text: str, **data) -> tuple[list[str], int, bytes]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        event = Synthesize(text=text).event()
        event.data.update(data)
        await client.write_event(event)
        return await read_speech(client)


async def hear(server, pcm: bytes, rate: int, model: str = "tiny.en") -> str:
    """The model's greedy transcript: the temperature fallback samples, and which decoder replica
    samples (so what it picks) depends on timing."""
    resampler = StreamingResampler()
    audio = np.concatenate([resampler.push(pcm, PcmFormat(rate, 2, 1)), resampler.flush()])
    resident, request = await server.engine.prepare(TranscriptionOptions(model=model, language="en"))
    decoded = await server.engine.decode(resident, audio, request, kind=PassKind.GREEDY)
    assert decoded is not None
    return decoded.text.strip()


def collapse(types: list[str]) -> list[str]:
    """Event types with runs of audio-chunk shown once."""
    return [t for i, t in enumerate(types) if t != "audio-chunk" or types[i - 1] != "audio-chunk"]


async def test_info_lists_the_bundled_voice_with_streaming(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
    assert len(info.tts) == 1 and info.tts[0].supports_synthesize_streaming
    voice = next(v for v in info.tts[0].voices if v.name == BUNDLED_VOICE)
    assert voice.languages == ["en_US"]
    assert info.asr, "one server gives speech to text and text to speech"


async def test_spoken_commands_are_heard_back_by_our_asr(server):
    references, heard = [], []
    for clip in corpus("commands"):
        types, rate, pcm = await synthesize(server.port, reference_text(clip))
        assert collapse(types) == ["audio-start", "audio-chunk", "audio-stop"]
        references.append(normalise(reference_text(clip)))
        heard.append(normalise(await hear(server, pcm, rate)) or "<empty>")
    assert jiwer.wer(references, heard) < 0.15


async def test_numbers_units_and_abbreviations_are_read_out(server):
    # Without Piper's noise the voice says it the same way every time (with it, tiny.en once heard
    # "Dr. Joan" in CI); base hears a name better than tiny.en.
    _, rate, pcm = await synthesize(server.port, REPLY, noise_scale=0.0, noise_w_scale=0.0)
    text = (await hear(server, pcm, rate, model="base")).lower()
    # Whisper writes "Dr." and "7:05"/"7.05"/"705" back its own way; the words prove how it was read.
    assert "21 degree" in text and "celsius" in text
    # The first sentence is spoken in two parts (quick start): they join into one.
    assert "jones" in text and "kitchen lights are now on in the hall" in text


async def test_streamed_text_is_spoken_sentence_by_sentence_before_it_ends(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(SynthesizeStart().event())
        for piece in ("The kitchen ", "lights are now on in the hall", ". Dr. Jones set the hea"):
            await client.write_event(SynthesizeChunk(text=piece).event())
        # The first sentence is complete: its audio comes while the rest of the text is unsent.
        first = await asyncio.wait_for(client.read_event(), timeout=30)
        assert first is not None and first.type == "audio-start"
        chunk = await asyncio.wait_for(client.read_event(), timeout=30)
        assert chunk is not None and chunk.type == "audio-chunk"
        for piece in ("ting to 21°C at 7:05", ". Anything else?"):
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text=REPLY).event())  # Home Assistant's compatibility copy
        await client.write_event(SynthesizeStop().event())
        types, _, _ = await read_speech(client, until="synthesize-stopped")
    assert collapse(["audio-start", "audio-chunk", *types]) == [
        "audio-start",
        "audio-chunk",
        "audio-stop",
        "synthesize-stopped",
    ]


async def test_the_tts_program_can_be_selected_and_spoken_with(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(SelectProgram(name="wis-piper").event())
        await client.write_event(Synthesize(text="Selected.").event())
        types, _, pcm = await read_speech(client)
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and len(pcm) > 5000


async def test_streamed_and_whole_text_give_the_same_audio(server):
    """Piper samples noise, so the same sentence never comes out twice the same; the cache
    holds each sentence's audio. Equal audio therefore means the stream cut the text into the
    very same sentences, and put the same silence between them, as the whole text."""
    text = "Good morning. It is 7:30 and 18°C outside. Dr. Brown called twice!"
    _, whole_rate, whole = await synthesize(server.port, text)
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(SynthesizeStart().event())
        for index in range(0, len(text), 4):
            await client.write_event(SynthesizeChunk(text=text[index : index + 4]).event())
        await client.write_event(SynthesizeStop().event())
        types, rate, streamed = await read_speech(client, until="synthesize-stopped")
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert rate == whole_rate and streamed == whole


async def test_a_cached_sentence_comes_back_identical(server):
    text = "The garage door has been open for ten minutes."
    _, _, first = await synthesize(server.port, text)
    _, _, again = await synthesize(server.port, text)
    _, _, fresh = await synthesize(server.port, text, cache=False)
    assert again == first
    assert fresh != first, "without the cache Piper's noise makes every rendering differ"


async def test_unknown_voice_and_bad_options_get_clear_errors(server):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event())
        error = Error.from_event(await client.read_event())
        assert error.code == "unknown-voice" and BUNDLED_VOICE in error.text
        event = Synthesize(text="Hello.").event()
        event.data["length_scale"] = "slow"
        await client.write_event(event)
        assert Error.from_event(await client.read_event()).code == "invalid-request"
        await client.write_event(SynthesizeChunk(text="orphan").event())
        assert Error.from_event(await client.read_event()).code == "invalid-request"
        # A stream that never ends its text is cut off at the text limit, and still answered.
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="la " * 7000).event())
        assert Error.from_event(await client.read_event()).code == "invalid-request"
        await client.write_event(SynthesizeStop().event())
        assert (await client.read_event()).type == "synthesize-stopped"
        # The connection still works.
        await client.write_event(Synthesize(text="Still here.").event())
        types, _, pcm = await read_speech(client)
    assert types[-1] == "audio-stop" and len(pcm) > 10000


async def test_a_voice_copied_into_the_directory_is_offered_without_restart(server, caplog):
    voices_dir = server.settings.voices_path
    voices_dir.mkdir(parents=True, exist_ok=True)
    model, config = bundled_voice_files()
    shutil.copy(model, voices_dir / "kitchen.onnx")
    shutil.copy(config, voices_dir / "kitchen.onnx.json")
    (voices_dir / "broken.onnx").write_bytes(b"\x08not a model")
    (voices_dir / "broken.onnx.json").write_text("{not json")
    try:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Describe().event())
            names = [v.name for v in Info.from_event(await client.read_event()).tts[0].voices]
        assert "kitchen" in names and "broken" not in names
        assert any("broken" in record.message for record in caplog.records)
        types, _, pcm = await synthesize(server.port, "Voice from the folder.", voice={"name": "kitchen"})
        assert types[-1] == "audio-stop" and len(pcm) > 10000
    finally:
        for name in ("kitchen.onnx", "kitchen.onnx.json", "broken.onnx", "broken.onnx.json"):
            (voices_dir / name).unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65, "con..x"])
def test_custom_voice_names_cannot_leave_the_directory(server, name):
    model, config = bundled_voice_files()
    with pytest.raises(Exception, match="invalid voice name"):
        server.tts.catalogue.add(name, model.read_bytes(), config.read_bytes())


def test_custom_voices_are_added_and_removed_but_the_bundled_one_stays(server):
    catalogue = server.tts.catalogue
    model, config = bundled_voice_files()
    voice = catalogue.add("porch", model.read_bytes(), config.read_bytes())
    assert voice.name == "porch" and not voice.bundled
    assert "porch" in [v.name for v in catalogue.voices()]
    with pytest.raises(Exception, match="exists"):
        catalogue.add("porch", model.read_bytes(), config.read_bytes())
    catalogue.remove("porch")
    assert "porch" not in [v.name for v in catalogue.voices()]
    with pytest.raises(Exception, match="bundled"):
        catalogue.remove(BUNDLED_VOICE)
    with pytest.raises(Exception, match="not valid JSON"):
        catalogue.add("bad", model.read_bytes(), b"{")
    with pytest.raises(Exception, match="not an ONNX"):
        catalogue.add("bad", b"<html>", config.read_bytes())


async def test_a_client_that_leaves_mid_reply_costs_nothing_to_others(server, caplog):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Synthesize(text=" ".join([REPLY] * 4)).event())
        event = await asyncio.wait_for(client.read_event(), timeout=30)
        assert event is not None and event.type == "audio-start"
    types, _, pcm = await synthesize(server.port, "Someone else is still served.")
    assert types[-1] == "audio-stop" and len(pcm) > 10000
    await asyncio.sleep(0.5)  # the abandoned reply has reached its next write by now
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
