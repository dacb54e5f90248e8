"""One Wyoming connection: describe, select-program, transcribe and audio streams.

A connection serves any number of requests in turn. A request is an optional `transcribe`, then
`audio-start`, `audio-chunk`s and `audio-stop`. Every bad event gets one `error` event with a code
and a message. When a request fails, the rest of it is swallowed and its `audio-stop` is answered
by closing the connection: clients that wait only for a `transcript` (Home Assistant's STT entity
ignores `error` events) then fail at once instead of waiting forever. Errors outside a request
(a bad `select-program`, a stray `audio-stop`) leave the connection open. Bytes that cannot be
parsed as events end the connection too: there is no way to find the next event boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from ..engine.asr import AsrEngine, TranscriptionOptions
from ..engine.audio import PcmFormat, StreamingResampler
from ..errors import AudioTooLongError, InvalidRequestError, WisError
from .wyoming_events import ProtocolError, read_event
from .wyoming_info import ASR_PROGRAM_NAME, info_event

_LOGGER = logging.getLogger(__name__)


# Events whose failure spoils the request they belong to.
_REQUEST_EVENTS = frozenset({"transcribe", "audio-start", "audio-chunk"})


class OutOfOrderError(InvalidRequestError):
    code = "out-of-order"


@dataclass
class WyomingService:
    """What every connection shares."""

    engine: AsrEngine
    max_audio_seconds: float
    background: set[asyncio.Task] = field(default_factory=set)

    def warm_up(self, model: str | None) -> None:
        """Start loading a model while the client is still sending audio."""
        if model is None or model in self.engine.resident:
            return
        task = asyncio.create_task(self.engine.model(model))
        self.background.add(task)
        task.add_done_callback(self._warm_up_done)

    def _warm_up_done(self, task: asyncio.Task) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.warning("Loading a model in the background failed: %s", task.exception())


@dataclass
class _AudioStream:
    options: TranscriptionOptions
    resampler: StreamingResampler = field(default_factory=StreamingResampler)
    pieces: list[np.ndarray] = field(default_factory=list)
    failed: bool = False  # an error was sent: swallow the rest of this stream until audio-stop


def _format_of(event: Event) -> PcmFormat:
    try:
        return PcmFormat(int(event.data["rate"]), int(event.data["width"]), int(event.data["channels"]))
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidRequestError(f"{event.type} needs integer rate, width and channels") from err


def _optional_str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"transcribe '{key}' must be a string, got {value!r}")
    return value


def _options_of(event: Event, connection_model: str | None) -> TranscriptionOptions:
    """Wyoming's transcribe fields, plus wis extensions: task, beam_size, initial_prompt."""
    data = event.data
    beam_size = data.get("beam_size")
    if beam_size is not None and (not isinstance(beam_size, int) or isinstance(beam_size, bool)):
        raise InvalidRequestError(f"transcribe 'beam_size' must be an integer, got {beam_size!r}")
    return TranscriptionOptions(
        model=_optional_str(data, "name") or connection_model,
        language=_optional_str(data, "language"),
        task=_optional_str(data, "task"),
        beam_size=beam_size,
        initial_prompt=_optional_str(data, "initial_prompt"),
    )


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.engine = service.engine
        self._connection_model: str | None = None  # chosen by select-program
        self._request: TranscriptionOptions | None = None  # from the last transcribe
        self._request_refused = False  # the last transcribe was refused: so is its audio
        self._stream: _AudioStream | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await read_event(self.reader)
                except ProtocolError as err:
                    _LOGGER.warning("Closing connection after malformed input: %s", err)
                    await self._send_error(err)
                    break
                if event is None or not await self.handle_event(event):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            _LOGGER.debug("Client went away")
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        """Handle one event; False closes the connection (a failed request has ended)."""
        in_request = self._stream is not None
        try:
            return await self._dispatch(event)
        except WisError as err:
            _LOGGER.info("Refused %s: %s", event.type, err)
            error, code = err, None
        except ConnectionError:
            raise
        except Exception as err:  # a bug must cost one request, not the server
            _LOGGER.exception("Internal error while handling %s", event.type)
            error, code = WisError(f"internal error: {err}"), "internal-error"
        await self._send_error(error, code)
        return not self._spoil_request(event, in_request)

    def _spoil_request(self, event: Event, in_request: bool) -> bool:
        """After an error about the current request, swallow the rest of it until audio-stop.

        One error per broken request, rather than one per chunk that follows it. Returns True
        when the failed event ended a request (its audio-stop), so the connection closes.
        """
        if event.type == "audio-stop":
            return in_request
        if event.type not in _REQUEST_EVENTS:
            return False
        if self._stream is not None:
            self._stream.failed = True
            self._stream.pieces.clear()
        else:
            self._request_refused = True
        return False

    async def _send_error(self, err: WisError, code: str | None = None) -> None:
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=str(err), code=code or err.code).event())

    async def _dispatch(self, event: Event) -> bool:
        if AudioChunk.is_type(event.type):
            self._on_audio_chunk(event)
        elif AudioStart.is_type(event.type):
            self._on_audio_start(event)
        elif AudioStop.is_type(event.type):
            return await self._on_audio_stop()
        elif Transcribe.is_type(event.type):
            self._on_transcribe(event)
        elif Describe.is_type(event.type):
            await self.write_event(info_event(self.engine))
        elif SelectProgram.is_type(event.type):
            self._on_select_program(event)
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        else:
            # The protocol asks servers to drop events they do not know.
            _LOGGER.debug("Ignoring event %s", event.type)
        return True

    # --- requests --------------------------------------------------------------------------------

    def _on_select_program(self, event: Event) -> None:
        name = event.data.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("select-program needs a program name")
        if name == ASR_PROGRAM_NAME:
            self._connection_model = None
            return
        # A model name selects that model for the rest of the connection.
        try:
            self.engine.describe(name)
        except WisError as err:
            raise InvalidRequestError(
                f"unknown program {name!r}; programs: {ASR_PROGRAM_NAME}, "
                f"or a model name: {', '.join(m.name for m in self.engine.catalogue())}"
            ) from err
        self._connection_model = name
        self.service.warm_up(name)

    def _on_transcribe(self, event: Event) -> None:
        if self._stream is not None:
            raise OutOfOrderError("transcribe arrived while an audio stream is open; send audio-stop first")
        self._request, self._request_refused = None, False
        options = _options_of(event, self._connection_model)
        model = self.engine.validate(options)
        self._request = options
        self.service.warm_up(model.name)

    def _on_audio_start(self, event: Event) -> None:
        if self._stream is not None:
            # Both streams are spoiled: the rest is swallowed until the client's audio-stop.
            raise OutOfOrderError("audio-start arrived while another audio stream is open")
        options = self._request or TranscriptionOptions(model=self._connection_model)
        self._stream = _AudioStream(options, failed=self._request_refused)
        _format_of(event).validate()

    def _on_audio_chunk(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            self._stream = _AudioStream(TranscriptionOptions(), failed=True)
            raise OutOfOrderError("audio-chunk arrived before audio-start")
        if stream.failed:
            return
        stream.pieces.append(stream.resampler.push(event.payload or b"", _format_of(event)))
        if stream.resampler.input_seconds > self.service.max_audio_seconds:
            raise AudioTooLongError(
                f"audio is longer than the limit of {self.service.max_audio_seconds:g} s; stream dropped"
            )

    async def _on_audio_stop(self) -> bool:
        stream, self._stream = self._stream, None
        self._request, self._request_refused = None, False
        if stream is None:
            raise OutOfOrderError("audio-stop arrived without an open audio stream")
        if stream.failed:
            _LOGGER.debug("Failed request ended: closing the connection")
            return False
        stream.pieces.append(stream.resampler.flush())
        audio = np.concatenate(stream.pieces) if stream.pieces else np.zeros(0, np.float32)
        started = time.perf_counter()
        result = await self.engine.transcribe(audio, stream.options)
        _LOGGER.info(
            "%s: %.2f s of audio in %.3f s (%.3f s queued) [%s]: %s",
            result.model,
            result.duration,
            time.perf_counter() - started,
            result.queue_seconds,
            result.language,
            result.text,
        )
        await self.write_event(Transcript(text=result.text, language=result.language).event())
        return True
