"""Audio out: 16-bit mono PCM (what Piper makes) as WAV, FLAC, Ogg Vorbis, MP3, Opus, AAC or raw.

Encoding a reply takes milliseconds (about 10-60 ms for 3 s on one core) but is still CPU work,
so the routes call `encode_audio` through `asyncio.to_thread`, never on the event loop. PyAV
converts the samples to each encoder's sample format and cuts them into its frame size; a
codec that takes only some rates (MP3, AAC) gets the nearest one at or above the voice's own;
Opus is always 48 kHz, the rate every Opus decoder gives back.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from ..errors import InvalidRequestError
from .audio import wav_bytes


@dataclass(frozen=True)
class AudioEncoding:
    name: str
    content_type: str
    container: str | None = None  # PyAV muxer; None: written here (wav, pcm)
    codec: str | None = None
    rates: tuple[int, ...] = ()  # the only rates the codec takes; () any
    bit_rate: int | None = None  # None: the encoder's default


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_RATES = (48000,)  # Ogg Opus is decoded at 48 kHz whatever it was encoded at
ENCODINGS: dict[str, AudioEncoding] = {
    encoding.name: encoding
    for encoding in (
        AudioEncoding("wav", "audio/wav"),
        AudioEncoding("pcm", "audio/pcm"),  # raw 16-bit little-endian mono
        AudioEncoding("flac", "audio/flac", "flac", "flac"),
        AudioEncoding("mp3", "audio/mpeg", "mp3", "libmp3lame", _MP3_RATES, 64_000),
        AudioEncoding("ogg", "audio/ogg", "ogg", "libvorbis"),
        AudioEncoding("opus", "audio/ogg; codecs=opus", "ogg", "libopus", _OPUS_RATES, 32_000),
        AudioEncoding("aac", "audio/aac", "adts", "aac", (*_MP3_RATES, 64000, 88200, 96000), 64_000),
    )
}  # fmt: skip


def audio_encoding(name: str, allowed: tuple[str, ...] | None = None) -> AudioEncoding:
    """The encoding called `name`, or InvalidRequestError listing those on offer."""
    offered = allowed or tuple(ENCODINGS)
    encoding = ENCODINGS.get(name.strip().lower()) if isinstance(name, str) else None
    if encoding is None or encoding.name not in offered:
        raise InvalidRequestError(f"audio format {name!r} is not supported; use one of {', '.join(offered)}")
    return encoding


def encoded_rate(encoding: AudioEncoding, rate: int) -> int:
    """The sample rate the encoded audio has: the voice's own when the codec takes it."""
    if not encoding.rates or rate in encoding.rates:
        return rate
    return min((r for r in encoding.rates if r >= rate), default=max(encoding.rates))


def encode_audio(pcm: bytes, rate: int, encoding: AudioEncoding) -> bytes:
    """16-bit mono PCM at `rate` as a whole file in `encoding` (CPU work: call off the loop)."""
    if encoding.name == "pcm":
        return pcm
    if encoding.name == "wav":
        return wav_bytes(pcm, rate)
    assert encoding.container is not None and encoding.codec is not None
    out = io.BytesIO()
    with av.open(out, "w", format=encoding.container) as container:
        stream = container.add_stream(encoding.codec, rate=encoded_rate(encoding, rate), layout="mono")
        if encoding.bit_rate is not None:
            stream.bit_rate = encoding.bit_rate
        samples = np.frombuffer(pcm, dtype="<i2")
        if len(samples):
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):  # resampled and framed for the codec by PyAV
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


UNKNOWN_SIZE = 0xFFFFFFFF


def streaming_wav_header(rate: int) -> bytes:
    """The header of a 16-bit mono WAV whose length is not known yet: RIFF and data sizes of
    0xFFFFFFFF, the convention for WAV sent as it is made (browsers, FFmpeg and players read on
    to the end of the stream)."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", UNKNOWN_SIZE, b"WAVE",
        b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
        b"data", UNKNOWN_SIZE,
    )  # fmt: skip
