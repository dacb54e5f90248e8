"""`/api/ws/asr`: streaming speech to text over a WebSocket.

One socket carries any number of utterances, each:
- a JSON text message with the options: `model`, `language`, `beam_size`, and the format of
  the audio to come, `sample_rate` (16000), `bits` (16), `channels` (1);
- binary messages of little-endian PCM, as the microphone gives them;
- `{"type": "end"}` when the utterance is over.
The server answers `{"type": "committed", "text"}` for each piece of text that settles while
the audio arrives (never taken back; joined, they begin the final text), then `{"type":
"final", "text", "language", "duration"}`. A bad message gets `{"type": "error", "error",
"message"}`, and the utterance it belonged to is dropped; the socket stays open.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from ..engine.asr import AsrEngine, TranscriptionOptions
from ..engine.audio import PcmByteStream, PcmFormat
from ..engine.streaming import StreamingPolicy, TranscriptStream
from ..errors import InvalidRequestError, WisError

_LOGGER = logging.getLogger(__name__)


@dataclass
class _Utterance:
    stream: TranscriptStream
    pcm: PcmByteStream


def _options(message: dict) -> tuple[TranscriptionOptions, PcmFormat]:
    def integer(key: str, default: int) -> int:
        value = message.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequestError(f"'{key}' must be an integer, got {value!r}")
        return value

    bits = integer("bits", 16)
    if bits not in (8, 16, 32):
        raise InvalidRequestError(f"'bits' must be 8, 16 or 32, got {bits}")
    fmt = PcmFormat(integer("sample_rate", 16000), bits // 8, integer("channels", 1)).validate()
    for key in ("model", "language"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise InvalidRequestError(f"'{key}' must be a string")
    beam = message.get("beam_size")
    if beam is not None and (not isinstance(beam, int) or isinstance(beam, bool)):
        raise InvalidRequestError("'beam_size' must be an integer")
    return TranscriptionOptions(
        model=message.get("model"), language=message.get("language"), beam_size=beam
    ), fmt


async def asr_socket(request: web.Request, engine: AsrEngine, max_seconds: float) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
    await socket.prepare(request)
    utterance: _Utterance | None = None

    async def send_error(err: WisError) -> None:
        with contextlib.suppress(ConnectionError):
            await socket.send_json({"type": "error", "error": err.code, "message": str(err)})

    try:
        async for message in socket:
            try:
                if message.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(message.data)
                    except ValueError as err:
                        raise InvalidRequestError("text messages must be JSON") from err
                    if not isinstance(data, dict):
                        raise InvalidRequestError("text messages must be JSON objects")
                    if data.get("type") == "end":
                        if utterance is None:
                            raise InvalidRequestError("'end' without an utterance: send the options first")
                        current, utterance = utterance, None
                        await _finish(socket, current)
                    else:
                        if utterance is not None:
                            await utterance.stream.cancel()
                        utterance = await _start(socket, engine, data, max_seconds)
                elif message.type == WSMsgType.BINARY:
                    if utterance is None:
                        raise InvalidRequestError("audio arrived before the options message")
                    utterance.stream.push(utterance.pcm.push(message.data))
            except WisError as err:
                if utterance is not None:
                    await utterance.stream.cancel()
                    utterance = None
                await send_error(err)
    finally:
        if utterance is not None:
            await utterance.stream.cancel()
    return socket


async def _start(
    socket: web.WebSocketResponse, engine: AsrEngine, data: dict, max_seconds: float
) -> _Utterance:
    options, fmt = _options(data)
    resident, decode_request = await engine.prepare(options)

    async def committed(text: str) -> None:
        with contextlib.suppress(ConnectionError):
            await socket.send_json({"type": "committed", "text": text})

    stream = TranscriptStream(engine, resident, decode_request, StreamingPolicy(), on_commit=committed)
    return _Utterance(stream, PcmByteStream(fmt, max_seconds))


async def _finish(socket: web.WebSocketResponse, utterance: _Utterance) -> None:
    utterance.stream.push(utterance.pcm.flush())
    result = await utterance.stream.finish()
    await socket.send_json(
        {"type": "final", "text": result.text, "language": result.language, "duration": result.duration}
    )
