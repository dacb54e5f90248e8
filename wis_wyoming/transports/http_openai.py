"""OpenAI-compatible routes, so tools written for OpenAI's API work against this server.

- `POST /v1/audio/transcriptions` and `/v1/audio/translations`: multipart `file`, `model` (one of
  ours; OpenAI's `whisper-1` means the default), `language`, `prompt`, `response_format` (json,
  text, verbose_json, srt, vtt) and `stream=true` (server-sent `transcript.text.delta` events,
  one per segment, then `transcript.text.done`).
- `POST /v1/audio/speech`: `{"input", "voice", "response_format", "speed"}`; formats mp3 (the
  default, as OpenAI's), opus, aac, flac, wav, pcm (16-bit mono at `X-Sample-Rate`), ogg.
- `POST /v1/chat/completions`: the LLM backend, streamed as `chat.completion.chunk` events with
  `stream: true`; a failure mid-stream is an OpenAI-style `{"error": {...}}` event, then the end.
- `GET /v1/models`: the speech models, the voices and the LLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from ..engine.asr import AsrEngine, Transcription, TranscriptionOptions
from ..engine.audio_formats import audio_encoding, encode_audio, encoded_rate
from ..engine.llm import GenerationOptions, stream_within
from ..engine.tts import SynthesisOptions
from ..errors import InvalidRequestError, WisError
from .http_services import HttpServices, enabled

_LOGGER = logging.getLogger(__name__)

OPENAI_ASR_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm", "ogg")  # OpenAI's, and Ogg Vorbis


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def subtitles(result: Transcription, vtt: bool) -> str:
    separator = "." if vtt else ","
    blocks = ["WEBVTT\n"] if vtt else []
    for index, segment in enumerate(result.segments, 1):
        times = f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        blocks.append(
            f"{times}\n{segment.text.strip()}\n" if vtt else f"{index}\n{times}\n{segment.text.strip()}\n"
        )
    return "\n".join(blocks)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as err:
        raise InvalidRequestError("the body must be JSON") from err
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _number(
    body: dict[str, Any], key: str, low: float | None, high: float | None, integer: bool = False
) -> Any:
    """The body's `key`, a number from `low` to `high` (None: no bound); None when absent or null.
    Checked here: llama.cpp would take a string seed as its own failure (a 502), and a
    negative max_tokens as "until the context is full"."""
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else int | float)
        or not (value if low is None else low) <= value <= (value if high is None else high)  # not NaN
    ):
        kind = "an integer" if integer else "a number"
        bounds = (f" from {low:g}" if low is not None else "") + (f" to {high:g}" if high is not None else "")
        raise InvalidRequestError(f"{key} must be {kind}{bounds}, got {value!r}")
    return value


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


class OpenAiRoutes:
    def __init__(self, services: HttpServices, read_audio: Any) -> None:
        self.services = services
        self._read_audio = read_audio  # (request, field) -> (audio, form fields)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/translations", self.translations)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/chat/completions", self.chat)

    async def models(self, request: web.Request) -> web.Response:
        names = [model.name for model in self.services.asr.catalogue()]
        if self.services.tts is not None:
            names += [voice.name for voice in self.services.tts.catalogue.voices()]
        if self.services.agent is not None:
            names.append(self.services.agent.backend.name)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "wis_wyoming"} for name in names]
        return web.json_response({"object": "list", "data": data})

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "transcribe")

    async def translations(self, request: web.Request) -> web.StreamResponse:
        return await self._audio(request, "translate")

    async def _audio(self, request: web.Request, task: str) -> web.StreamResponse:
        audio, fields = await self._read_audio(request, "file")
        response_format = fields.get("response_format", "json")
        if response_format not in RESPONSE_FORMATS:
            raise InvalidRequestError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        model = fields.get("model") or None
        asr: AsrEngine = self.services.asr
        options = TranscriptionOptions(
            model=None if model in OPENAI_ASR_MODELS else model,
            language=fields.get("language") or None,
            task=task,
            initial_prompt=fields.get("prompt") or None,
        )
        result = await asr.transcribe(audio, options)
        if fields.get("stream", "").lower() == "true":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for segment in result.segments:
                await response.write(_sse({"type": "transcript.text.delta", "delta": segment.text}))
            await response.write(_sse({"type": "transcript.text.done", "text": result.text}))
            await response.write_eof()
            return response
        if response_format == "text":
            return web.Response(text=result.text)
        if response_format in ("srt", "vtt"):
            return web.Response(text=subtitles(result, response_format == "vtt"))
        if response_format == "verbose_json":
            segments = [
                {"id": i, "start": s.start, "end": s.end, "text": s.text, "avg_logprob": s.avg_logprob,
                 "no_speech_prob": s.no_speech_prob, "compression_ratio": s.compression_ratio}
                for i, s in enumerate(result.segments)
            ]  # fmt: skip
            return web.json_response(
                {"task": task, "language": result.language, "duration": result.duration,
                 "text": result.text, "segments": segments}
            )  # fmt: skip
        return web.json_response({"text": result.text})

    async def speech(self, request: web.Request) -> web.Response:
        tts = enabled(self.services.tts, "text to speech")
        body = await _json_body(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError("'input' must be a non-empty string")
        audio_format = body.get("response_format", "mp3")  # OpenAI's default
        if not isinstance(audio_format, str):
            raise InvalidRequestError("response_format must be a string")
        encoding = audio_encoding(audio_format, SPEECH_FORMATS)
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise InvalidRequestError("speed must be a number from 0.25 to 4")
        voice = body.get("voice")
        if voice is not None and not isinstance(voice, str):
            raise InvalidRequestError("voice must be a string")
        known = {v.name for v in tts.catalogue.voices()}
        options = SynthesisOptions(voice=voice if voice in known else None, length_scale=1.0 / speed)
        parts = [part async for part in tts.speak(text, options)]
        pcm = b"".join(part.pcm for part in parts)
        rate = parts[0].rate if parts else tts.voice(options).sample_rate
        audio = await asyncio.to_thread(encode_audio, pcm, rate, encoding)
        headers = {"Content-Type": encoding.content_type, "X-Sample-Rate": str(encoded_rate(encoding, rate))}
        return web.Response(body=audio, headers=headers)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        agent = enabled(self.services.agent, "the LLM")
        body = await _json_body(request)
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            raise InvalidRequestError("'messages' must be a list of {role, content} with text content")
        defaults = agent.settings.generation
        temperature, top_p = _number(body, "temperature", 0, 2), _number(body, "top_p", 0, 1)
        max_tokens = _number(body, "max_tokens", 1, None, integer=True)
        max_tokens = max_tokens or _number(body, "max_completion_tokens", 1, None, integer=True)
        options = GenerationOptions(
            temperature=defaults.temperature if temperature is None else float(temperature),
            top_p=defaults.top_p if top_p is None else float(top_p),
            max_tokens=max_tokens or defaults.max_tokens,
            timeout=defaults.timeout,
            seed=_number(body, "seed", None, None, integer=True),
        )
        model = agent.backend.name
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        pieces = stream_within(agent.backend, conversation, options)
        if not body.get("stream"):
            text = "".join([piece async for piece in pieces])
            return web.json_response(
                {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop"}]}
            )  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return _sse(
                {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            )  # fmt: skip

        await response.write(chunk({"role": "assistant", "content": ""}))
        try:
            async for piece in pieces:
                await response.write(chunk({"content": piece}))
        except ConnectionError:  # the client went away: nobody to tell
            raise
        except Exception as err:
            # The status line went out with the first byte, so a failure from here on is an
            # event in the stream (as OpenAI sends one), and the stream still ends cleanly.
            if not isinstance(err, WisError):
                _LOGGER.exception("Chat completion %s failed mid-stream", completion_id)
            code = getattr(err, "code", "internal-error")
            await response.write(_sse({"error": {"message": str(err), "type": "server_error", "code": code}}))
        else:
            await response.write(chunk({}, "stop"))
            await response.write(_sse("[DONE]"))
        await response.write_eof()
        return response
