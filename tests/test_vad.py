"""Silero VAD: silence and noise are not transcribed; speech is trimmed, not cut."""

from __future__ import annotations

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.client import AsyncTcpClient

from wis_wyoming.engine.asr import TranscriptionOptions
from wis_wyoming.engine.audio import decode_file
from wis_wyoming.engine.vad import FRAME_SAMPLES, SpeechGate, SpeechTracker

from .conftest import speech
from .wyoming_client import next_event, send_audio

RATE = 16000
rng = np.random.default_rng(7)
NON_SPEECH = {
    "digital silence": np.zeros(3 * RATE),
    "room noise": rng.normal(size=3 * RATE) * 0.01,
    "mains hum": 0.05 * np.sin(np.arange(3 * RATE) * 2 * np.pi * 50 / RATE),
}


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("name", NON_SPEECH)
async def test_no_speech_gives_an_empty_transcript(server, name):
    """Without the VAD, Whisper answers these with " ." (tiny.en) or worse."""
    for model in ("tiny.en", "base"):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await send_audio(client, pcm16(NON_SPEECH[name]), RATE, 2, 1, Transcribe(name=model))
            transcript = Transcript.from_event(await next_event(client))
            assert transcript.text == "", (model, transcript.text)


def test_gate_finds_a_very_quiet_command():
    audio = decode_file(speech("commands/is_the_Front_Door_locked.wav"))
    assert np.abs(audio).max() < 0.1  # the corpus's gain test
    span = SpeechGate().speech_span(audio)
    assert span is not None and 0 < span[0] < span[1] <= len(audio)


def test_gate_sees_nothing_in_silence_or_noise():
    gate = SpeechGate()
    for audio in NON_SPEECH.values():
        assert gate.speech_span(audio.astype(np.float32)) is None
    assert gate.speech_span(np.zeros(0, np.float32)) is None


async def test_leading_silence_is_trimmed_and_timestamps_stay_true(server):
    command = decode_file(speech("commands/lock_the_Front_Door.wav"))
    padded = np.concatenate([np.zeros(2 * RATE, np.float32), command, np.zeros(RATE, np.float32)])
    result = await server.engine.transcribe(padded, TranscriptionOptions(model="tiny.en"))
    assert result.text.lower().rstrip(".") == "lock the front door"
    assert result.duration == pytest.approx(len(padded) / RATE)
    # Segment times refer to the audio as sent, not to the trimmed part.
    assert result.segments[0].start >= 1.5
    assert result.segments[-1].end <= result.duration


def test_a_streams_tracker_finds_the_span_the_gate_finds():
    """A stream's passes take the speech span from the frames its tracker already scored instead
    of running Silero again; padded by the gate, it is the gate's own span, and audio not pushed
    to the tracker yet counts as speech."""
    gate = SpeechGate()
    command = decode_file(speech("commands/add_apples_to_my_Shopping_List.wav"))
    silence = np.zeros(2 * RATE, dtype=np.float32)
    audio = np.concatenate([silence, command, silence])
    tracker = SpeechTracker()
    tracker.push(audio)

    found = gate.padded(tracker.speech_between(0, len(audio)), len(audio))
    expected = gate.speech_span(audio)
    assert found is not None and expected is not None
    assert abs(found[0] - expected[0]) <= FRAME_SAMPLES and abs(found[1] - expected[1]) <= FRAME_SAMPLES
    # A buffer that starts after a cut, mid-speech; one of silence only.
    start = len(silence) + len(command) // 2
    assert tracker.speech_between(start, len(audio))[0] == start
    assert tracker.speech_between(len(audio) - RATE, len(audio)) == (len(audio) - RATE,) * 2

    unscored = SpeechTracker()
    unscored.push(silence)
    assert unscored.speech_between(0, len(silence) + RATE) == (len(silence), len(silence) + RATE)
