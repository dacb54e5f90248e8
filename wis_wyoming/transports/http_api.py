"""HTTP API, compatible with the Willow Inference Server (WIS), on aiohttp.

This first part serves `/api/ping`, `/api/status`, `/api/asr` and `/api/willow` (WIS's shapes;
see http_willow), `/api/tts` (WAV, FLAC, Ogg, MP3, ...; with `X-WIS-Cache`) and `/api/llm` (alias
`/api/chatbot`); `/api/voices` (http_voices), `/api/sts` (http_sts), OpenAI's routes
(http_openai), CORS for the origins configured (http_cors), `/api/docs` (OpenAPI; http_docs),
`/api/rtc/asr` and the `/rtc` page (WebRTC; http_rtc).
Every error is a JSON body `{"error": code, "message": ...}` with a 4xx status (502 when the
LLM fails, 503 when overloaded), never a traceback.
With an API key set, every route but `/api/ping`, the docs and the `/rtc` page wants `X-API-Key`
or `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import __version__
from ..engine.asr import TranscriptionOptions
from ..engine.audio import WHISPER_RATE, decode_bytes
from ..engine.audio_formats import audio_encoding, encode_audio
from ..engine.languages import WHISPER_LANGUAGES
from ..engine.llm import LlmError
from ..engine.tts import MAX_TEXT_CHARS, SynthesisOptions
from ..errors import InvalidRequestError, OverloadedError, WisError
from .http_cors import install_cors
from .http_docs import PATHS as DOCS_PATHS
from .http_docs import DocsRoutes
from .http_openai import OpenAiRoutes
from .http_rtc import RtcRoutes
from .http_services import HttpServices, enabled
from .http_sts import StsRoute
from .http_voices import VoiceRoutes
from .http_willow import transcribe_body
from .http_ws import asr_socket

_LOGGER = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20
# `GET /api/tts?text=` takes as much text as TTS does, and percent-encoded UTF-8 is up to 12 bytes
# a character; aiohttp's default (8190 bytes) refused a longer request line with a plain-text 400.
MAX_REQUEST_LINE = 12 * MAX_TEXT_CHARS + 1024
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise InvalidRequestError(f"{name} must be true or false, got {value!r}")


def _int(request: web.Request, name: str, low: int, high: int) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError as err:
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}") from err
    if not low <= number <= high:
        raise InvalidRequestError(f"{name} must be from {low} to {high}, got {number}")
    return number


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return web.json_response({"error": "http", "message": err.reason}, status=err.status)
    except OverloadedError as err:
        return web.json_response({"error": err.code, "message": str(err)}, status=503)
    except LlmError as err:  # the model behind us failed, not the request
        return web.json_response({"error": err.code, "message": str(err)}, status=502)
    except WisError as err:
        return web.json_response({"error": err.code, "message": str(err)}, status=400)
    except Exception as err:  # a bug costs one request
        _LOGGER.exception("Internal error on %s", request.path)
        return web.json_response({"error": "internal-error", "message": str(err)}, status=500)


def _auth(api_key: str | None):
    @web.middleware
    async def check(request: web.Request, handler):
        # The /rtc page holds no secret: it asks for the key and sends it with its requests. The
        # API's description (http_docs) is the same on every server, and a browser opens it.
        public = request.path in ("/api/ping", "/rtc", *DOCS_PATHS) or request.path.startswith("/rtc/")
        if api_key and not public:
            given = request.headers.get("X-API-Key") or ""
            bearer = request.headers.get("Authorization", "")
            if bearer.lower().startswith("bearer "):
                given = given or bearer[7:].strip()
            if request.path.startswith("/api/ws/"):  # a browser cannot set headers on a WebSocket
                given = given or request.query.get("api_key", "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                return web.json_response(
                    {"error": "unauthorized", "message": "a valid X-API-Key or Bearer token is needed"},
                    status=401,
                )
        return await handler(request)

    return check


def _malformed(err: Exception) -> str:
    """What aiohttp's parser found wrong, without its status-code prefix."""
    return getattr(err, "message", "") or str(err) or type(err).__name__


def _text_of(request: web.Request) -> str:
    text = request.query.get("text", "").strip()
    if not text:
        raise InvalidRequestError("the query needs a non-empty 'text'")
    return text


def _asr_options(request: web.Request) -> TranscriptionOptions:
    """WIS's query: model, beam_size, detect_language, force_language."""
    language = request.query.get("force_language") or None
    if language is not None and language not in WHISPER_LANGUAGES:
        raise InvalidRequestError(f"force_language {language!r} is not a Whisper language code")
    detect = _flag(request, "detect_language")
    return TranscriptionOptions(
        model=request.query.get("model") or None,
        language="auto" if detect and language is None else language,
        beam_size=_int(request, "beam_size", 1, 20),
    )


class HttpApi:
    def __init__(self, services: HttpServices) -> None:
        self.services = services

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[_errors, _auth(self.services.api_key)]
        )
        app.router.add_get("/api/ping", self.ping)
        app.router.add_get("/api/status", self.status)
        app.router.add_post("/api/asr", self.asr)
        app.router.add_post("/api/willow", self.willow)
        app.router.add_get("/api/ws/asr", self.ws_asr)
        app.router.add_get("/api/tts", self.tts)
        app.router.add_get("/api/llm", self.llm)
        app.router.add_get("/api/chatbot", self.llm)  # WIS's name for it
        OpenAiRoutes(self.services, self.form_audio).add_to(app)
        VoiceRoutes(self.services).add_to(app)
        StsRoute(self.services, self.form_audio, _asr_options).add_to(app)
        RtcRoutes(self.services, _asr_options).add_to(app)
        DocsRoutes().add_to(app)
        install_cors(app, self.services.cors_origins)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def status(self, request: web.Request) -> web.Response:
        services = self.services
        asr = services.asr
        body = {
            "version": __version__,
            "uptime_s": round(time.monotonic() - services.started, 1),
            "device": asr.plan.describe(),
            "asr": {"default_model": asr.defaults.model, "resident": sorted(asr.resident)},
            "tts": None,
            "llm": services.agent.backend.name if services.agent else None,
        }
        if services.tts is not None:
            cache = services.tts.cache
            body["tts"] = {
                "voices": [voice.name for voice in services.tts.catalogue.voices()],
                "cache_entries": len(cache) if cache else 0,
                "cache_bytes": cache.size_bytes if cache else 0,
            }
        return web.json_response(body)

    async def asr(self, request: web.Request) -> web.Response:
        options = _asr_options(request)
        audio, _ = await self.form_audio(request, "audio_file")
        started = time.perf_counter()
        result = await self.services.asr.transcribe(audio, options)
        body: dict = {"text": result.text, "language": result.language}
        if _flag(request, "translate"):
            translated = await self.services.asr.transcribe(
                audio, TranscriptionOptions(model=options.model, language=result.language, task="translate")
            )
            body["translation"] = translated.text
        infer = time.perf_counter() - started
        duration = len(audio) / WHISPER_RATE
        body |= {
            "infer_time": round(infer * 1000, 1),  # ms, as WIS reports it
            "infer_speedup": round(duration / infer, 1) if infer > 0 else None,
            "audio_duration": round(duration * 1000, 1),
        }
        return web.json_response(body)

    async def ws_asr(self, request: web.Request) -> web.WebSocketResponse:
        return await asr_socket(request, self.services.asr, self.services.max_audio_seconds)

    async def willow(self, request: web.Request) -> web.Response:
        options = _asr_options(request)
        stats = _flag(request, "stats")
        translate = _flag(request, "translate")
        if translate:
            options = replace(options, task="translate")
        text, language, duration, after_body = await transcribe_body(
            request, self.services.asr, options, self.services.max_audio_seconds
        )
        body: dict = {"text": text, "language": language}
        if stats:
            body |= {
                "infer_time": round(after_body * 1000, 1),  # ms from the last byte of the body
                "audio_duration": round(duration * 1000, 1),
                "infer_speedup": round(duration / after_body, 1) if after_body > 0 else None,
            }
        return web.json_response(body)

    async def form_audio(self, request: web.Request, field: str) -> tuple[np.ndarray, dict[str, str]]:
        """The multipart form's audio file (any format PyAV decodes) and its text fields."""
        if not request.content_type.startswith("multipart/"):
            raise InvalidRequestError(f"send the audio as multipart/form-data in the field '{field}'")
        data, fields = None, {}
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name = getattr(part, "name", None)
                if name == field:
                    data = await part.read()  # type: ignore[union-attr]
                elif name and getattr(part, "filename", None) is None:
                    fields[name] = (await part.text())[:10_000]  # type: ignore[union-attr]
        except (HttpProcessingError, ValueError, LookupError) as err:
            # aiohttp's parser on a malformed form: no or wrong boundary, a bad part header, a body
            # cut short, text that is not in its charset. The client's fault, not a server error.
            raise InvalidRequestError(f"the multipart form cannot be read: {_malformed(err)}") from err
        if data is None:
            raise InvalidRequestError(f"the form has no '{field}' field")
        audio = await asyncio.to_thread(decode_bytes, data, field, self.services.max_audio_seconds)
        return audio, fields

    async def tts(self, request: web.Request) -> web.Response:
        tts = enabled(self.services.tts, "text to speech")
        text = _text_of(request)
        encoding = audio_encoding(request.query.get("format") or "wav")
        options = SynthesisOptions(
            voice=request.query.get("voice") or None,
            speaker=request.query.get("speaker") or None,
            use_cache=not _flag(request, "nocache"),
        )
        parts = [part async for part in tts.speak(text, options)]
        rate = parts[0].rate if parts else tts.voice(options).sample_rate
        body = await asyncio.to_thread(encode_audio, b"".join(part.pcm for part in parts), rate, encoding)
        cached = "HIT" if parts and all(part.cached for part in parts) else "MISS"
        return web.Response(body=body, headers={"Content-Type": encoding.content_type, "X-WIS-Cache": cached})

    async def llm(self, request: web.Request) -> web.Response:
        agent = enabled(self.services.agent, "the LLM")
        text = _text_of(request)
        conversation = request.query.get("conversation_id") or None
        answer = "".join([piece async for piece in agent.reply(text, conversation)]).strip()
        return web.json_response({"text": answer})


async def start_http(services: HttpServices, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(HttpApi(services).app(), access_log=None, max_line_size=MAX_REQUEST_LINE)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    _LOGGER.info("HTTP API listening on http://%s:%d", host, port)
    return runner
