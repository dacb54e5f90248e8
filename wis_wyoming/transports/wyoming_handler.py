"""One Wyoming connection: describe, select-program, transcribe and audio streams, and the
synthesis events (handed to `wyoming_tts.TtsSession`).

A connection serves any number of requests in turn. A request is an optional `transcribe`, then
`audio-start`, `audio-chunk`s and `audio-stop`. Audio is decoded while it arrives (the engine's
TranscriptStream): committed text goes out as `transcript-start` and `transcript-chunk`s, and at
`audio-stop` the tail, then one `transcript` with the whole text (what older clients read) and
`transcript-stop`. With the server-side endpoint on, the answer goes out when the speaker stops;
the rest of the stream is swallowed. Every bad event gets one `error` event with a code
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
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from ..engine.asr import AsrEngine, TranscriptionOptions
from ..engine.audio import PcmFormat, StreamingResampler
from ..engine.conversation import ConversationAgent
from ..engine.intents import IntentRecognizer
from ..engine.streaming import StreamingPolicy, TranscriptStream
from ..engine.tts import TtsEngine
from ..engine.vad import ENDPOINT_SILENCE_SECONDS
from ..errors import AudioTooLongError, InvalidRequestError, WisError
from .wyoming_events import ProtocolError, read_event
from .wyoming_info import ASR_PROGRAM_NAME, TTS_PROGRAM_NAME, Programs, info_event
from .wyoming_llm import HANDLE_PROGRAM_NAME, INTENT_PROGRAM_NAME, LlmSession, is_llm_event
from .wyoming_tts import TtsSession, close_quietly, is_tts_event

_LOGGER = logging.getLogger(__name__)


OTHER_PROGRAMS = frozenset({TTS_PROGRAM_NAME, HANDLE_PROGRAM_NAME, INTENT_PROGRAM_NAME})
# Events whose failure spoils the request they belong to.
_REQUEST_EVENTS = frozenset({"transcribe", "audio-start", "audio-chunk"})


class OutOfOrderError(InvalidRequestError):
    code = "out-of-order"


@dataclass
class WyomingService:
    """What every connection shares."""

    engine: AsrEngine
    max_audio_seconds: float
    stream_transcripts: bool = True  # send transcript-start/chunk/stop
    vad_endpoint: bool = False  # answer when the speaker stops, before audio-stop
    policy: StreamingPolicy = field(default_factory=StreamingPolicy)
    tts: TtsEngine | None = None
    agent: ConversationAgent | None = None
    recognizer: IntentRecognizer | None = None
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


@dataclass(frozen=True)
class _Request:
    options: TranscriptionOptions
    endpoint_silence: float  # from vad_sensitivity; used when the server-side endpoint is on


@dataclass
class _AudioStream:
    request: _Request
    resampler: StreamingResampler = field(default_factory=StreamingResampler)
    backlog: list[np.ndarray] = field(default_factory=list)  # audio that came before the model
    transcript: TranscriptStream | None = None
    failed: bool = False  # an error was sent: swallow the rest of this stream until audio-stop
    started: bool = False  # transcript-start was sent
    answer: asyncio.Task | None = None  # the server-side endpoint's answer: the rest is swallowed

    def drop(self) -> None:
        self.failed = True
        self.backlog.clear()
        if self.transcript is not None:
            self.transcript.abort()


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


def _request_of(event: Event, connection_model: str | None) -> _Request:
    """Wyoming's transcribe fields, plus wis extensions: task, beam_size, initial_prompt."""
    data = event.data
    beam_size = data.get("beam_size")
    if beam_size is not None and (not isinstance(beam_size, int) or isinstance(beam_size, bool)):
        raise InvalidRequestError(f"transcribe 'beam_size' must be an integer, got {beam_size!r}")
    sensitivity = _optional_str(data, "vad_sensitivity") or "default"
    if sensitivity not in ENDPOINT_SILENCE_SECONDS:
        raise InvalidRequestError(
            f"unknown vad_sensitivity {sensitivity!r}; use {', '.join(ENDPOINT_SILENCE_SECONDS)}"
        )
    options = TranscriptionOptions(
        model=_optional_str(data, "name") or connection_model,
        language=_optional_str(data, "language"),
        task=_optional_str(data, "task"),
        beam_size=beam_size,
        initial_prompt=_optional_str(data, "initial_prompt"),
    )
    return _Request(options, ENDPOINT_SILENCE_SECONDS[sensitivity])


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.engine = service.engine
        self._connection_model: str | None = None  # chosen by select-program
        self._request: _Request | None = None  # from the last transcribe
        self._request_refused = False  # the last transcribe was refused: so is its audio
        self._stream: _AudioStream | None = None
        self._tts = TtsSession(service.tts, self.write_event, self._send_error) if service.tts else None
        self._llm = LlmSession(service.agent, service.recognizer, self.write_event)

    async def write_event(self, event: Event) -> None:
        # asyncio fails with AttributeError, not ConnectionError, on a transport the client
        # has already closed: say what it is, so the request ends quietly.
        if self.writer.is_closing():
            raise ConnectionResetError("the client has gone away")
        await super().write_event(event)

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
            await self._drop_stream()
            await close_quietly(self._tts)
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
            self._stream.drop()
        else:
            self._request_refused = True
        return False

    async def _send_error(self, err: WisError, code: str | None = None) -> None:
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=str(err), code=code or err.code).event())

    async def _dispatch(self, event: Event) -> bool:
        if AudioChunk.is_type(event.type):
            await self._on_audio_chunk(event)
        elif AudioStart.is_type(event.type):
            await self._on_audio_start(event)
        elif AudioStop.is_type(event.type):
            return await self._on_audio_stop()
        elif Transcribe.is_type(event.type):
            self._on_transcribe(event)
        elif is_llm_event(event.type):
            await self._llm.handle(event)
        elif is_tts_event(event.type):
            if self._tts is None:
                raise InvalidRequestError("text to speech is not enabled on this server")
            await self._tts.handle(event)
        elif Describe.is_type(event.type):
            await self.write_event(
                info_event(
                    self.engine,
                    self.service.stream_transcripts,
                    not self.service.vad_endpoint,
                    Programs(self.service.tts, self.service.agent, self.service.recognizer),
                )
            )
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
        if name in OTHER_PROGRAMS:
            return  # speech to text keeps its model; the other programs have one each
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
        request = _request_of(event, self._connection_model)
        model = self.engine.validate(request.options)
        self._request = request
        self.service.warm_up(model.name)

    async def _on_audio_start(self, event: Event) -> None:
        if self._stream is not None:
            # Both streams are spoiled: the rest is swallowed until the client's audio-stop.
            raise OutOfOrderError("audio-start arrived while another audio stream is open")
        request = self._request or _Request(
            TranscriptionOptions(model=self._connection_model), ENDPOINT_SILENCE_SECONDS["default"]
        )
        self._stream = _AudioStream(request, failed=self._request_refused)
        _format_of(event).validate()
        if not self._stream.failed:
            await self._open_transcript(self._stream, load=False)

    async def _on_audio_chunk(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            self._stream = _AudioStream(_Request(TranscriptionOptions(), 0.0), failed=True)
            raise OutOfOrderError("audio-chunk arrived before audio-start")
        if stream.failed or stream.answer is not None:
            return
        audio = stream.resampler.push(event.payload or b"", _format_of(event))
        if stream.resampler.input_seconds > self.service.max_audio_seconds:
            raise AudioTooLongError(
                f"audio is longer than the limit of {self.service.max_audio_seconds:g} s; stream dropped"
            )
        transcript = await self._open_transcript(stream, load=False)
        if transcript is None:
            stream.backlog.append(audio)
        else:
            transcript.push(audio)

    async def _on_audio_stop(self) -> bool:
        stream, self._stream = self._stream, None
        self._request, self._request_refused = None, False
        if stream is None:
            raise OutOfOrderError("audio-stop arrived without an open audio stream")
        if stream.answer is not None:
            await stream.answer  # answered at the endpoint: nothing more to send
        if stream.failed:
            _LOGGER.debug("Failed request ended: closing the connection")
            await self._drop(stream)
            return False
        if stream.answer is None:
            transcript = await self._open_transcript(stream, load=True)
            assert transcript is not None
            transcript.push(stream.resampler.flush())
            await self._answer(stream, transcript)
        return True

    # --- transcripts -----------------------------------------------------------------------------

    async def _open_transcript(self, stream: _AudioStream, load: bool) -> TranscriptStream | None:
        """The stream's TranscriptStream, once its model is resident (loading it if `load`).

        Until then, audio waits in the backlog: a model that loads in the background (after
        select-program or transcribe) does not hold up the client.
        """
        if stream.transcript is not None:
            return stream.transcript
        options = stream.request.options
        if not load and self.engine.choose_model(options).name not in self.engine.resident:
            return None
        resident, request = await self.engine.prepare(options)
        if stream.transcript is not None:  # opened while the model loaded
            return stream.transcript
        policy = self.service.policy
        if self.service.vad_endpoint:
            policy = replace(policy, endpoint_silence=stream.request.endpoint_silence)
        transcript = TranscriptStream(
            self.engine,
            resident,
            request,
            policy,
            on_commit=partial(self._send_committed, stream),
            on_endpoint=partial(self._on_endpoint, stream),
        )
        stream.transcript = transcript
        for audio in stream.backlog:
            transcript.push(audio)
        stream.backlog.clear()
        return transcript

    async def _send_start(self, stream: _AudioStream) -> None:
        if self.service.stream_transcripts and not stream.started:
            stream.started = True
            language = stream.transcript.request.language if stream.transcript else None
            await self.write_event(TranscriptStart(language=language).event())

    async def _send_committed(self, stream: _AudioStream, text: str) -> None:
        if self.service.stream_transcripts and not stream.failed:
            await self._send_start(stream)
            await self.write_event(TranscriptChunk(text=text).event())

    async def _answer(self, stream: _AudioStream, transcript: TranscriptStream) -> None:
        """Finish the transcript: the tail as a chunk, then transcript and transcript-stop."""
        started = time.perf_counter()
        result = await transcript.finish()
        await self._send_start(stream)
        await self.write_event(Transcript(text=result.text, language=result.language).event())
        if self.service.stream_transcripts:
            await self.write_event(TranscriptStop().event())
        _LOGGER.info(
            "%s: %.2f s of audio, answered %.3f s after its end (%d passes, %s) [%s]: %s",
            result.model,
            result.duration,
            time.perf_counter() - started,
            result.stats.passes,
            "final pass" if result.stats.final_pass else "no final pass",
            result.language,
            result.text,
        )

    def _on_endpoint(self, stream: _AudioStream) -> None:
        """The speaker stopped (server-side endpoint): answer now, swallow the rest."""
        if stream.answer is None and stream.transcript is not None and not stream.failed:
            _LOGGER.debug("Endpoint: speech ended before audio-stop")
            stream.answer = asyncio.create_task(self._answer_at_endpoint(stream, stream.transcript))

    async def _answer_at_endpoint(self, stream: _AudioStream, transcript: TranscriptStream) -> None:
        try:
            await self._answer(stream, transcript)
        except ConnectionError:
            pass
        except WisError as err:
            stream.drop()  # its audio-stop closes the connection, as for any failed request
            await self._send_error(err)
        except Exception as err:
            _LOGGER.exception("Internal error while answering at the endpoint")
            stream.drop()
            await self._send_error(WisError(f"internal error: {err}"), "internal-error")

    async def _drop(self, stream: _AudioStream) -> None:
        if stream.transcript is not None:
            await stream.transcript.cancel()

    async def _drop_stream(self) -> None:
        """The connection ends: stop the open stream's background work."""
        stream, self._stream = self._stream, None
        if stream is not None:
            if stream.answer is not None:
                stream.answer.cancel()
                await asyncio.gather(stream.answer, return_exceptions=True)
            await self._drop(stream)
