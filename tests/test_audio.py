"""PCM conversion: any rate, width and channel count to 16 kHz mono float32."""

from __future__ import annotations

import numpy as np
import pytest

from wis_wyoming.engine.audio import PcmFormat, StreamingResampler, decode_file, pcm_to_mono_float
from wis_wyoming.errors import InvalidAudioError

from .conftest import read_wav, speech


def stream(pcm: bytes, fmt: PcmFormat, chunk_frames: int) -> np.ndarray:
    resampler = StreamingResampler()
    step = chunk_frames * fmt.frame_bytes
    pieces = [resampler.push(pcm[i : i + step], fmt) for i in range(0, len(pcm), step)]
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


@pytest.mark.parametrize(
    "wav",
    [
        "commands/turn_on_the_living_room_lamp.wav",  # 44.1 kHz stereo
        "misc/LJ001-0002.wav",  # 22.05 kHz mono
        "misc/common_voice_en_22058267.wav",  # 48 kHz mono
        "commands/lock_the_Front_Door.wav",  # 16 kHz mono: passed through
    ],
)
def test_streamed_chunks_match_a_whole_file_decode(wav):
    pcm, rate, width, channels = read_wav(speech(wav))
    ours = stream(pcm, PcmFormat(rate, width, channels), chunk_frames=1000)
    reference = decode_file(speech(wav))
    assert abs(len(ours) - len(reference)) <= 2
    n = min(len(ours), len(reference))
    assert np.max(np.abs(ours[:n] - reference[:n])) < 1e-3
    assert ours.dtype == np.float32


def test_chunk_size_does_not_change_the_result():
    pcm, rate, width, channels = read_wav(speech("misc/LJ001-0002.wav"))
    fmt = PcmFormat(rate, width, channels)
    small, large = stream(pcm, fmt, 37), stream(pcm, fmt, 4096)
    n = min(len(small), len(large))
    assert abs(len(small) - len(large)) <= 2
    assert np.max(np.abs(small[:n] - large[:n])) < 1e-4


def test_widths_decode_to_the_same_signal():
    signal = (np.sin(np.linspace(0, 200, 1600)) * 0.5).astype(np.float32)
    s16 = (signal * 32767).astype("<i2")
    as8 = pcm_to_mono_float(
        ((s16.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes(), PcmFormat(16000, 1, 1)
    )
    as16 = pcm_to_mono_float(s16.tobytes(), PcmFormat(16000, 2, 1))
    as32 = pcm_to_mono_float((s16.astype(np.int32) << 16).astype("<i4").tobytes(), PcmFormat(16000, 4, 1))
    assert np.max(np.abs(as16 - signal)) < 1e-4
    assert np.max(np.abs(as32 - as16)) < 1e-6
    assert np.max(np.abs(as8 - as16)) < 1 / 64


def test_stereo_is_averaged_to_mono():
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    stereo = np.stack([left, right], axis=1).reshape(-1).tobytes()
    mono = pcm_to_mono_float(stereo, PcmFormat(16000, 2, 2))
    assert np.allclose(mono, 2000 / 32768)


def test_input_seconds_count_the_source_audio():
    resampler = StreamingResampler()
    resampler.push(bytes(44100 * 2 * 2), PcmFormat(44100, 2, 2))
    assert resampler.input_seconds == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (PcmFormat(16000, 3, 1), "sample width"),
        (PcmFormat(500, 2, 1), "sample rate"),
        (PcmFormat(16000, 2, 0), "channel count"),
    ],
)
def test_unsupported_formats_are_refused(fmt, message):
    with pytest.raises(InvalidAudioError, match=message):
        StreamingResampler().push(bytes(12), fmt)


def test_partial_frames_are_refused():
    with pytest.raises(InvalidAudioError, match="whole number"):
        pcm_to_mono_float(bytes(5), PcmFormat(16000, 2, 2))


def test_undecodable_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"RIFF not really audio")
    with pytest.raises(InvalidAudioError, match="cannot decode"):
        decode_file(bogus)
