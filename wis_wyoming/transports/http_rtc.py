"""`POST /api/rtc/asr` and the `/rtc` page: speech to text over WebRTC, in WIS's protocol.

Signalling is one request: the client POSTs its offer `{sdp, type}` with its ICE candidates
gathered (WIS's query, `model`, `beam_size`, `detect_language`, `force_language`, sets the
session's defaults) and gets the answer `{sdp, type}`. The offer brings an audio track (Opus,
48 kHz, from the microphone), resampled to 16 kHz and decoded while the user speaks, and a data
channel for WIS's JSON messages, `{"type", "message", "obj"}`:
- `ping` → `pong` with the same `message`;
- `start` (`obj`, all optional: `model`, `language`, `beam_size`, `detect_language`, `partial`)
  → `log`; the audio from here to `stop` is one utterance, the rest is dropped;
- `stop` (`obj`, optional: WIS's `model`, `beam_size`, `detect_language`) → `infer` with `obj`
  `{text, language, model, infer_time, audio_duration, infer_speedup}` (times in ms, as WIS
  reports them; `infer_time` from the `stop`). Options the stream was not decoded with (WIS
  sends the model only here) have the utterance decoded again with them;
- with `partial: true`, `partial` messages carry `obj.text`, the text committed so far, while
  the user speaks (off by default: WIS's own client takes an unknown type for an error);
- anything else gets `error` (`message`, and the code in `obj.error`); the session goes on.
A session carries any number of utterances. Between them a client pauses its track
(`replaceTrack(null)`), which can send an RTCP BYE; aiortc would end the track on it, so the
session's receivers ignore BYE (WIS patches aiortc's class for the same reason). A session ends
when the peer closes it or goes away (ICE consent fails), when the server stops, or if its answer
has not connected within 30 s; at most `max_sessions` are open at once (503 beyond).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpByePacket

from ..engine.asr import AsrEngine, TranscriptionOptions
from ..engine.audio import PcmByteStream, PcmFormat
from ..engine.streaming import StreamingPolicy, TranscriptStream
from ..errors import InvalidAudioError, InvalidRequestError, OverloadedError, WisError
from .http_services import HttpServices
from .rtc_ice import IceServer, host_addresses, restrict_gathering

_LOGGER = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static" / "rtc"
PAGE_FILES = frozenset(path.name for path in STATIC.iterdir() if path.is_file())
MAX_QUEUED_MESSAGES = 64  # data channel messages waiting for the one before them
CONNECT_TIMEOUT = 30.0  # seconds an answered offer may take to connect
MAX_EARLY_FRAMES = 1500  # 30 s of 20 ms frames kept while a start waits for its model to load
_OPUS_FORMAT = PcmFormat(48_000, 2, 2)  # what aiortc's Opus decoder gives; each frame says


@dataclass(frozen=True)
class RtcOptions:
    ice_servers: tuple[str, ...] = ()  # stun:/turn: URLs; none on a LAN
    interfaces: tuple[str, ...] | None = None  # addresses or interface names; None: all but loopback
    ports: tuple[int, int] | None = None  # UDP ports for host candidates; None: ephemeral
    max_sessions: int = 16


@dataclass
class _Utterance:
    stream: TranscriptStream
    pcm: PcmByteStream
    options: TranscriptionOptions
    partial: bool
    audio: list[np.ndarray] = field(default_factory=list)  # kept for a decode with other options
    stopped: bool = False

    def push(self, frame: Any) -> None:
        """One decoded frame of the track (aiortc gives packed signed 16-bit PCM)."""
        if frame.format.name != "s16" or frame.format.is_planar:
            raise InvalidAudioError(f"audio frames must be packed s16, got {frame.format.name}")
        self.pcm.format = PcmFormat(frame.sample_rate, 2, len(frame.layout.channels))
        self.add(self.pcm.push(frame.to_ndarray().tobytes()))

    def add(self, audio: np.ndarray) -> None:
        if len(audio):
            self.audio.append(audio)
            self.stream.push(audio)


def _options(obj: dict, base: TranscriptionOptions) -> tuple[TranscriptionOptions, bool | None]:
    """`base` changed by a start's or stop's `obj`, and whether it asks for partial results."""
    changes: dict[str, Any] = {}
    for key in ("model", "language"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidRequestError(f"'{key}' must be a non-empty string, got {value!r}")
        if value is not None:
            changes[key] = value.strip()
    beam = obj.get("beam_size")
    if beam is not None:
        if not isinstance(beam, int) or isinstance(beam, bool):
            raise InvalidRequestError(f"'beam_size' must be an integer, got {beam!r}")
        changes["beam_size"] = beam
    for key in ("detect_language", "partial"):
        if obj.get(key) is not None and not isinstance(obj[key], bool):
            raise InvalidRequestError(f"'{key}' must be true or false, got {obj[key]!r}")
    detect = obj.get("detect_language")
    if "language" not in changes and detect is not None:
        # WIS: detect, or the server's default language (a detection asked for by the offer's
        # query is turned off too).
        changes["language"] = "auto" if detect else (None if base.language == "auto" else base.language)
    return replace(base, **changes), obj.get("partial")


class RtcSession:
    """One peer connection: its data channel's messages, its audio, its utterances."""

    def __init__(self, routes: RtcRoutes, pc: RTCPeerConnection, defaults: TranscriptionOptions) -> None:
        self.routes = routes
        self.engine = routes.engine
        self.pc = pc
        self.defaults = defaults
        self.channel: Any = None
        self._inbox: asyncio.Queue[Any] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self._utterance: _Utterance | None = None
        self._early: list[Any] | None = None  # frames that arrive while a start loads its model
        self._finishing: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        self._spawn(self._serve_messages())

    # --- events from aiortc -------------------------------------------------------------------

    def _on_datachannel(self, channel: Any) -> None:
        if self.channel is not None:
            channel.close()  # one channel carries the protocol
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._spawn(self.close()))

    def _on_message(self, data: Any) -> None:
        try:
            self._inbox.put_nowait(data)
        except asyncio.QueueFull:
            self._send_error(InvalidRequestError("too many messages at once; wait for the answers"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_audio(track))

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    def ignore_bye(self) -> None:
        """Keep the receivers going through a client's pause (see the module's docstring)."""
        for receiver in self.pc.getReceivers():
            handle = receiver._handle_rtcp_packet

            async def without_bye(packet: Any, _handle: Any = handle) -> None:
                if not isinstance(packet, RtcpByePacket):
                    await _handle(packet)

            receiver._handle_rtcp_packet = without_bye  # type: ignore[method-assign]

    # --- the protocol -------------------------------------------------------------------------

    def send(self, kind: str, message: str | None = None, obj: dict | None = None) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": kind, "message": message, "obj": obj}))

    def _send_error(self, err: WisError) -> None:
        self.send("error", str(err), {"error": err.code})

    async def _serve_messages(self) -> None:
        """One message at a time, in order: a `stop` is answered after its `start`."""
        while True:
            data = await self._inbox.get()
            try:
                await self._handle(data)
            except WisError as err:
                self._send_error(err)
            except Exception as err:  # a bug costs one message, not the session
                _LOGGER.exception("WebRTC message failed")
                self.send("error", str(err), {"error": "internal-error"})

    async def _handle(self, data: Any) -> None:
        if not isinstance(data, str):
            raise InvalidRequestError("data channel messages must be JSON text")
        try:
            message = json.loads(data)
        except ValueError as err:
            raise InvalidRequestError(f"could not parse message: {err}") from err
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise InvalidRequestError('a message is a JSON object with a string "type"')
        obj = message.get("obj") or {}
        if not isinstance(obj, dict):
            raise InvalidRequestError('"obj" must be a JSON object')
        kind = message["type"]
        if kind == "ping":
            self.send("pong", message.get("message"))
        elif kind == "start":
            await self._start(obj)
        elif kind == "stop":
            self._stop(obj)
        else:
            raise InvalidRequestError(f"unknown message type {kind!r}; use ping, start or stop")

    async def _start(self, obj: dict) -> None:
        options, partial = _options(obj, self.defaults)
        self._early = []
        try:
            resident, request = await self.engine.prepare(options)  # a model's first use loads it
        finally:
            early, self._early = self._early, None
        if self._utterance is not None:  # a start without a stop: the old utterance is dropped
            self._drop_utterance()
        utterance: _Utterance

        async def committed(text: str) -> None:
            if utterance.partial and not utterance.stopped:
                self.send("partial", obj={"text": utterance.stream.committed.strip()})

        stream = TranscriptStream(self.engine, resident, request, StreamingPolicy(), on_commit=committed)
        pcm = PcmByteStream(_OPUS_FORMAT, self.routes.max_audio_seconds)
        utterance = _Utterance(stream, pcm, options, bool(partial))
        self._utterance = utterance
        try:
            for frame in early:
                utterance.push(frame)
        except WisError:
            self._drop_utterance()
            raise
        self.send("log", f"ASR recording with model {resident.info.name}: speak, then send stop")

    def _stop(self, obj: dict) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            raise InvalidRequestError("stop without start: send start first")
        utterance.stopped = True
        stopped_at = time.perf_counter()
        try:
            options, _ = _options(obj, utterance.options)
            info = self.engine.choose_model(options)
            request = self.engine.check_options(info, options)
        except WisError:
            self._spawn(utterance.stream.cancel())
            raise
        again = info.name != utterance.stream.resident.info.name or request != utterance.stream.request
        previous = self._finishing
        self._finishing = self._spawn(
            self._finish(utterance, options if again else None, stopped_at, previous)
        )

    async def _finish(
        self,
        utterance: _Utterance,
        again: TranscriptionOptions | None,
        stopped_at: float,
        previous: asyncio.Task | None,
    ) -> None:
        if previous is not None:  # answers in the order of the stops
            await asyncio.gather(previous, return_exceptions=True)
        try:
            utterance.add(utterance.pcm.flush())
            if again is None:
                result = await utterance.stream.finish()
                text, language, model = result.text, result.language, result.model
            else:
                await utterance.stream.cancel()
                audio = np.concatenate(utterance.audio) if utterance.audio else np.zeros(0, np.float32)
                transcription = await self.engine.transcribe(audio, again)
                text, language, model = transcription.text, transcription.language, transcription.model
        except WisError as err:
            await utterance.stream.cancel()
            self._send_error(err)
            return
        infer = time.perf_counter() - stopped_at
        duration = utterance.pcm.input_seconds
        speedup = round(duration / infer, 1) if infer > 0 else None
        self.send(
            "infer",
            obj={
                "text": text,
                "language": language,
                "model": model,
                "infer_time": round(infer * 1000, 1),
                "audio_duration": round(duration * 1000, 1),
                "infer_speedup": speedup,
            },
        )
        self.send("log", f"ASR infer time {infer * 1000:.0f} ms for {duration * 1000:.0f} ms of audio")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            utterance = self._utterance
            if utterance is None:
                if self._early is not None and len(self._early) < MAX_EARLY_FRAMES:
                    self._early.append(frame)
                continue  # outside start..stop: dropped
            try:
                utterance.push(frame)
            except WisError as err:
                self._drop_utterance()
                self._send_error(err)

    def _drop_utterance(self) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is not None:
            utterance.stopped = True
            self._spawn(utterance.stream.cancel())

    # --- life cycle -----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.routes.sessions.discard(self)
        utterance, self._utterance = self._utterance, None
        if utterance is not None:
            await utterance.stream.cancel()
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.pc.close()
        _LOGGER.debug("WebRTC session closed")

    async def close_unless_connected(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if self.pc.connectionState != "connected":
            _LOGGER.info("WebRTC session did not connect within %g s; closed", timeout)
            await self.close()


class RtcRoutes:
    """`/api/rtc/asr`, `/api/rtc/config` and the `/rtc` page."""

    def __init__(
        self, services: HttpServices, asr_options: Callable[[web.Request], TranscriptionOptions]
    ) -> None:
        self.engine: AsrEngine = services.asr
        self.options: RtcOptions = services.rtc or RtcOptions()
        self.max_audio_seconds: float = services.max_audio_seconds
        self.asr_options = asr_options
        self.ice_servers = [IceServer.parse(url) for url in self.options.ice_servers]
        if self.options.interfaces is not None and not host_addresses(self.options.interfaces):
            _LOGGER.warning(
                "rtc_interfaces %s have no address: no WebRTC session can connect", self.options.interfaces
            )
        self.sessions: set[RtcSession] = set()
        self._timers: set[asyncio.Task] = set()

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/api/rtc/asr", self.offer)
        app.router.add_get("/api/rtc/config", self.config)
        app.router.add_get("/rtc", self.page)
        app.router.add_get("/rtc/", self.page)
        app.router.add_get("/rtc/{filename}", self.asset)
        app.on_shutdown.append(self.close_all)

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def asset(self, request: web.Request) -> web.FileResponse:
        """One of the page's own files; anything else is the API's JSON 404."""
        name = request.match_info["filename"]
        if name not in PAGE_FILES:
            raise web.HTTPNotFound(reason="not a file of the /rtc page")  # the name may hold anything
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    async def config(self, request: web.Request) -> web.Response:
        """What the page needs before its offer: the ICE servers (TURN credentials included)."""
        return web.json_response(
            {
                "ice_servers": [server.for_browser() for server in self.ice_servers],
                "max_sessions": self.options.max_sessions,
                "sessions": len(self.sessions),
            }
        )

    async def offer(self, request: web.Request) -> web.Response:
        defaults = self.asr_options(request)
        self.engine.check_options(self.engine.choose_model(defaults), defaults)
        sdp = await _offer_sdp(request)
        if len(self.sessions) >= self.options.max_sessions:
            raise OverloadedError(
                f"{len(self.sessions)} WebRTC sessions are open (limit {self.options.max_sessions}); "
                "try again when one ends"
            )
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[s.for_aiortc() for s in self.ice_servers]))
        session = RtcSession(self, pc, defaults)
        self.sessions.add(session)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as err:  # aiortc's parser raises whatever the text trips it on
                raise InvalidRequestError(
                    f"the offer's SDP cannot be used: {str(err) or type(err).__name__}"
                ) from err
            session.ignore_bye()
            interfaces = self.options.interfaces
            addresses = None if interfaces is None else host_addresses(interfaces)
            restrict_gathering(pc, addresses, self.options.ports)
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription
            if "a=candidate:" not in answer.sdp:
                raise OverloadedError("no ICE candidate could be gathered (no free UDP port or address)")
        except BaseException:
            await session.close()
            raise
        timer = asyncio.create_task(session.close_unless_connected(CONNECT_TIMEOUT))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    async def close_all(self, app: web.Application | None = None) -> None:
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*(session.close() for session in list(self.sessions)), return_exceptions=True)


async def _offer_sdp(request: web.Request) -> str:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidRequestError('the body must be JSON: {"sdp": ..., "type": "offer"}') from err
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        raise InvalidRequestError('the body must be {"sdp": "<the offer>", "type": "offer"}')
    sdp = body["sdp"]
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not any(line.startswith("m=audio ") for line in lines):
        raise InvalidRequestError("the offer has no audio track (m=audio)")
    if not any(line.startswith("m=application ") for line in lines):
        raise InvalidRequestError("the offer has no data channel (m=application) for start/stop")
    return sdp
