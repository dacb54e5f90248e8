"""`POST /api/sts`: speech to speech. What was said is transcribed, answered by the LLM and the
answer spoken back, through `engine/voice_chain` (its first phrase is spoken while the LLM is
still writing the rest).

Audio in: a multipart `audio_file` (as `/api/asr`) or the file itself as the body, in any format
PyAV reads. Query: `/api/asr`'s `model`, `beam_size`, `force_language`, `detect_language`, plus
`voice`, `speaker`, `conversation_id` (the LLM remembers the exchange), `nocache`, `format`.

- `format=wav` (the default): a 16-bit mono WAV streamed as it is spoken, part by part, so
  playback starts with the first phrase. Its length is not known when the header goes out, so
  the header's sizes are 0xFFFFFFFF (what browsers, FFmpeg and players take as "read to the
  end"). The transcript exists before the first byte: `X-WIS-Transcript` (percent-encoded
  UTF-8; `decodeURIComponent` in a browser) and `X-WIS-Language`. The answer's text is written
  after the headers have gone, so it is not among them; a client that wants it uses
- `format=json`: `{"transcript", "language", "reply", "sample_rate", "audio"}` once the whole
  answer is spoken, `audio` being the WAV in base64.

Nothing heard (silence, noise) is a 422 `no-speech`. An LLM that fails before the first audio is
a 502 JSON error; once audio has been sent the status cannot change, so the stream just ends
where the answer stopped (and the failure is logged).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import numpy as np
from aiohttp import web

from ..engine.asr import TranscriptionOptions
from ..engine.audio import decode_bytes, wav_bytes
from ..engine.audio_formats import streaming_wav_header
from ..engine.tts import SynthesisOptions
from ..engine.voice_chain import VoiceChain
from ..errors import InvalidRequestError
from .http_services import HttpServices

_LOGGER = logging.getLogger(__name__)

FORMATS = ("wav", "json")
_HEADER_SAFE = " !'(),.:;?-"  # left readable in X-WIS-Transcript; decodeURIComponent keeps them

ReadForm = Callable[[web.Request, str], Awaitable[tuple[np.ndarray, dict[str, str]]]]


class StsRoute:
    def __init__(
        self,
        services: HttpServices,
        read_form: ReadForm,
        asr_options: Callable[[web.Request], TranscriptionOptions],
    ) -> None:
        self.services = services
        self._read_form = read_form
        self._asr_options = asr_options

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/api/sts", self.sts)

    async def _audio(self, request: web.Request) -> np.ndarray:
        if request.content_type.startswith("multipart/"):
            return (await self._read_form(request, "audio_file"))[0]
        body = await request.read()  # bounded by the application's client_max_size
        return await asyncio.to_thread(decode_bytes, body, "the body", self.services.max_audio_seconds)

    async def sts(self, request: web.Request) -> web.StreamResponse:
        services = self.services
        if services.tts is None or services.agent is None:
            raise InvalidRequestError("speech to speech needs text to speech and an LLM on this server")
        out_format = (request.query.get("format") or "wav").lower()
        if out_format not in FORMATS:
            raise InvalidRequestError(f"format must be one of {', '.join(FORMATS)}, got {out_format!r}")
        transcription = self._asr_options(request)
        synthesis = SynthesisOptions(
            voice=request.query.get("voice") or None,
            speaker=request.query.get("speaker") or None,
            use_cache=request.query.get("nocache", "").lower() not in ("1", "true", "yes"),
        )
        rate = services.tts.voice(synthesis).sample_rate  # an unknown voice is refused before any work
        audio = await self._audio(request)
        chain = VoiceChain(services.asr, services.agent, services.tts)
        conversation = request.query.get("conversation_id") or None

        transcript, language, reply, pcm = "", None, "", []
        response: web.StreamResponse | None = None
        async with contextlib.aclosing(chain.run(audio, conversation, transcription, synthesis)) as steps:
            try:
                async for step in steps:
                    if step.kind == "heard":
                        transcript, language = step.text.strip(), step.language
                    elif step.kind == "done":
                        reply = step.text
                    elif step.kind == "spoken" and step.audio is not None:
                        if out_format == "json":
                            pcm.append(step.audio.pcm)
                            continue
                        if response is None:
                            response = await self._start(request, transcript, language, rate)
                        await response.write(step.audio.pcm)
            except ConnectionError:
                raise  # the client went away
            except Exception:
                if response is None:
                    raise  # nothing sent yet: a JSON error (502 for the LLM)
                _LOGGER.exception("Speech to speech failed after its audio began; the answer is cut short")
        if not transcript:
            return web.json_response({"error": "no-speech", "message": "no speech was heard"}, status=422)
        if out_format == "json":
            body = wav_bytes(b"".join(pcm), rate)
            return web.json_response(
                {"transcript": transcript, "language": language, "reply": reply, "sample_rate": rate,
                 "audio": base64.b64encode(body).decode()}
            )  # fmt: skip
        if response is None:  # an empty answer: a WAV without samples
            response = await self._start(request, transcript, language, rate)
        await response.write_eof()
        return response

    async def _start(
        self, request: web.Request, transcript: str, language: str | None, rate: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "audio/wav",
                "X-WIS-Transcript": quote(transcript, safe=_HEADER_SAFE),
                "X-WIS-Language": language or "",
                "X-Sample-Rate": str(rate),
            }
        )
        await response.prepare(request)
        await response.write(streaming_wav_header(rate))
        return response
