"""`POST /api/willow`: a Willow device's audio, decoded while the body is still arriving.

Willow sends the utterance as a chunked request body while the user speaks, described by the
`x-audio-sample-rate`, `x-audio-bits`, `x-audio-channel` and `x-audio-codec` headers. WIS reads
the whole body and only then starts Whisper; here every chunk goes into the streaming engine
as it lands, so the transcript is nearly ready when the last byte arrives. Missing or invalid
headers get a 400 with a JSON message (WIS crashes on them). AMR-WB bodies are decoded once
complete (PyAV's decoder wants whole frames with their file header).
"""

from __future__ import annotations

import asyncio
import struct
import time

from aiohttp import web

from ..engine.asr import AsrEngine, TranscriptionOptions
from ..engine.audio import WHISPER_RATE, PcmByteStream, PcmFormat, decode_bytes
from ..engine.streaming import StreamingPolicy, TranscriptStream
from ..errors import InvalidAudioError, InvalidRequestError

CODECS = ("pcm", "wav", "amrwb")
_CHUNK_HEADER = struct.Struct("<4sI")
MAX_WAV_HEADER = 4096


def willow_format(request: web.Request) -> tuple[PcmFormat, str]:
    """The body's format from Willow's headers, or a clear error."""

    def number(header: str, default: int | None = None) -> int:
        value = request.headers.get(header)
        if value is None:
            if default is None:
                raise InvalidRequestError(f"header {header} is required")
            return default
        try:
            return int(value)
        except ValueError as err:
            raise InvalidRequestError(f"header {header} must be an integer, got {value!r}") from err

    codec = request.headers.get("x-audio-codec", "pcm").strip().lower()
    if codec not in CODECS:
        raise InvalidRequestError(f"x-audio-codec must be one of {', '.join(CODECS)}, got {codec!r}")
    rate = number("x-audio-sample-rate", 16000 if codec != "pcm" else None)
    bits = number("x-audio-bits", 16)
    channels = number("x-audio-channel", 1)
    if bits not in (8, 16, 32):
        raise InvalidRequestError(f"x-audio-bits must be 8, 16 or 32, got {bits}")
    if not 1 <= channels <= 8:
        raise InvalidRequestError(f"x-audio-channel must be from 1 to 8, got {channels}")
    return PcmFormat(rate, bits // 8, channels).validate(), codec


class WavHeader:
    """Strips a RIFF/WAVE header off a stream of bytes, and reads the format from it."""

    def __init__(self) -> None:
        self._buffer = b""
        self.format: PcmFormat | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The PCM bytes in `data` once the header has passed (b"" while it is still coming)."""
        if self.done:
            return data
        self._buffer += data
        buffer = self._buffer
        if len(buffer) >= 12 and (buffer[:4] != b"RIFF" or buffer[8:12] != b"WAVE"):
            raise InvalidAudioError("the body is not a WAV file (no RIFF/WAVE header)")
        offset = 12
        while len(buffer) >= offset + 8:
            chunk_id, size = _CHUNK_HEADER.unpack_from(buffer, offset)
            if chunk_id == b"data":
                if self.format is None:
                    raise InvalidAudioError("the WAV file has no fmt chunk before its data")
                self.done = True
                self._buffer = b""
                return buffer[offset + 8 :]
            if len(buffer) < offset + 8 + size:
                break
            if chunk_id == b"fmt ":
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", buffer, offset + 8)
                if tag not in (1, 0xFFFE) or bits not in (8, 16, 32):
                    raise InvalidAudioError("only integer PCM WAV (8, 16 or 32 bit) is accepted")
                self.format = PcmFormat(rate, bits // 8, channels).validate()
            offset += 8 + size + (size & 1)
        if len(buffer) > MAX_WAV_HEADER:
            raise InvalidAudioError("the WAV header is too long")
        return b""


async def transcribe_body(
    request: web.Request, engine: AsrEngine, options: TranscriptionOptions, max_seconds: float
) -> tuple[str, str | None, float, float]:
    """The body's text and language, its duration, and the seconds from the last byte to the
    answer."""
    fmt, codec = willow_format(request)
    resident, decode_request = await engine.prepare(options)
    stream = TranscriptStream(engine, resident, decode_request, StreamingPolicy())
    try:
        if codec == "amrwb":
            body = await request.read()
            audio = await asyncio.to_thread(decode_bytes, body, "the AMR-WB body", max_seconds)
            stream.push(audio)
            seconds = len(audio) / WHISPER_RATE
        else:
            seconds = await _stream_pcm(request, stream, fmt, codec == "wav", max_seconds)
        last_byte = time.perf_counter()
        result = await stream.finish()
    except BaseException:
        await stream.cancel()
        raise
    return result.text, result.language, seconds, time.perf_counter() - last_byte


async def _stream_pcm(
    request: web.Request, stream: TranscriptStream, fmt: PcmFormat, wav: bool, max_seconds: float
) -> float:
    pcm, header = PcmByteStream(fmt, max_seconds), WavHeader() if wav else None
    async for chunk in request.content.iter_any():
        data = header.feed(chunk) if header is not None else chunk
        if header is not None and header.format is not None:
            pcm.format = header.format  # set before the first PCM byte: the WAV knows best
        stream.push(pcm.push(data))
    if header is not None and not header.done:
        raise InvalidAudioError("the body ended inside its WAV header")
    stream.push(pcm.flush())
    return pcm.input_seconds
