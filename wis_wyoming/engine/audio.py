"""Audio in: raw PCM of any rate/width/channel count, or files, to Whisper's 16 kHz mono float32."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from faster_whisper.audio import decode_audio

from ..errors import AudioTooLongError, InvalidAudioError

WHISPER_RATE = 16_000
SUPPORTED_WIDTHS = (1, 2, 4)
MAX_CHANNELS = 16


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved little-endian PCM, as Wyoming's audio events describe it."""

    rate: int
    width: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    def validate(self) -> PcmFormat:
        if not isinstance(self.rate, int) or not 1_000 <= self.rate <= 384_000:
            raise InvalidAudioError(f"unsupported sample rate {self.rate!r} (1000–384000 Hz)")
        if self.width not in SUPPORTED_WIDTHS:
            raise InvalidAudioError(f"unsupported sample width {self.width!r} (1, 2 or 4 bytes)")
        if not isinstance(self.channels, int) or not 1 <= self.channels <= MAX_CHANNELS:
            raise InvalidAudioError(f"unsupported channel count {self.channels!r} (1–{MAX_CHANNELS})")
        return self


def pcm_to_mono_float(pcm: bytes, fmt: PcmFormat) -> np.ndarray:
    """Decode interleaved PCM to mono float32 in [-1, 1] at the source rate."""
    if len(pcm) % fmt.frame_bytes:
        raise InvalidAudioError(
            f"audio payload of {len(pcm)} bytes is not a whole number of "
            f"{fmt.width}-byte × {fmt.channels}-channel frames"
        )
    if fmt.width == 1:
        # 8-bit PCM is unsigned (WAV convention, and what wyoming's wav helpers pass through).
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.width == 2:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    else:
        samples = np.frombuffer(pcm, dtype="<i4").astype(np.float32) / 2147483648.0
    if fmt.channels > 1:
        samples = samples.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32)
    return samples


class StreamingResampler:
    """Converts a stream of PCM chunks to 16 kHz mono float32 as they arrive.

    The resampler keeps filter state across chunks (libswresample through PyAV), so chunk
    boundaries leave no clicks; `flush` returns the filter's tail. A change of format mid-stream
    flushes the old resampler and starts a new one.
    """

    def __init__(self) -> None:
        self._format: PcmFormat | None = None
        self._resampler: av.AudioResampler | None = None
        self.input_seconds = 0.0

    def push(self, pcm: bytes, fmt: PcmFormat) -> np.ndarray:
        samples = pcm_to_mono_float(pcm, fmt.validate())
        self.input_seconds += len(samples) / fmt.rate
        pieces = []
        if fmt != self._format:
            pieces.append(self.flush())
            self._format = fmt
            if fmt.rate != WHISPER_RATE:
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE)
        if self._resampler is None or not len(samples):
            pieces.append(samples)
        else:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = fmt.rate
            pieces.extend(f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame))
        return _concat(pieces)

    def flush(self) -> np.ndarray:
        resampler, self._resampler, self._format = self._resampler, None, None
        if resampler is None:
            return np.zeros(0, dtype=np.float32)
        return _concat([f.to_ndarray().reshape(-1) for f in resampler.resample(None)])


class PcmByteStream:
    """PCM from a byte stream (an HTTP body, WebSocket messages), whose pieces need not end on
    a frame, to 16 kHz mono float32: the bytes of a split frame wait for the rest. Wyoming's
    audio chunks are framed, so there an unaligned chunk is an error (`StreamingResampler`)."""

    def __init__(self, fmt: PcmFormat, max_seconds: float) -> None:
        self.format = fmt
        self.max_seconds = max_seconds
        self._resampler = StreamingResampler()
        self._pending = b""

    @property
    def input_seconds(self) -> float:
        return self._resampler.input_seconds

    def push(self, data: bytes) -> np.ndarray:
        data = self._pending + data
        usable = len(data) - len(data) % self.format.frame_bytes
        self._pending = data[usable:]
        audio = self._resampler.push(data[:usable], self.format) if usable else np.zeros(0, np.float32)
        if self.input_seconds > self.max_seconds:
            raise AudioTooLongError(f"audio is longer than {self.max_seconds:g} s")
        return audio

    def flush(self) -> np.ndarray:
        """The resampler's tail (a partial last frame is dropped)."""
        return self._resampler.flush()


def _concat(pieces: list[np.ndarray]) -> np.ndarray:
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def decode_file(path: str | Path) -> np.ndarray:
    """Any file PyAV can read (WAV, FLAC, MP3, Opus, ...) as 16 kHz mono float32."""
    try:
        return decode_audio(str(path), sampling_rate=WHISPER_RATE)
    except (av.error.FFmpegError, OSError) as err:
        raise InvalidAudioError(f"cannot decode {path}: {err}") from err


def decode_bytes(data: bytes, what: str, max_seconds: float) -> np.ndarray:
    """An uploaded file (any format PyAV reads) as 16 kHz mono float32, at most `max_seconds` long.
    CPU work: call it off the event loop."""
    if not data:
        raise InvalidAudioError(f"{what} is empty")
    try:
        audio = decode_audio(io.BytesIO(data), sampling_rate=WHISPER_RATE)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
        raise InvalidAudioError(f"{what} cannot be decoded: {err}") from err
    if len(audio) / WHISPER_RATE > max_seconds:
        raise AudioTooLongError(f"audio is longer than {max_seconds:g} s")
    return audio


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
