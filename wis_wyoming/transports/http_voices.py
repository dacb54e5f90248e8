"""`/api/voices`: list, upload and delete Piper voices over HTTP.

- `GET /api/voices` → `{"default", "voices": [{name, languages, speakers, sample_rate, quality,
  bundled}]}`.
- `POST /api/voices` (multipart: `name`, `model` = the `.onnx`, `config` = its `.onnx.json`;
  `?replace=true` overwrites an uploaded voice) → 201 with the voice, usable at once.
- `DELETE /api/voices/{name}` → `{"deleted": name}`.

`VoiceCatalogue` does the checking (names of letters, digits, `.`, `_`, `-` only, so no name
reaches outside the voices directory; a config Piper can speak with; an ONNX model) and writes
both files atomically; here the files are read with a size bound and written off the event loop
(a voice is 20-120 MB). The bundled voice cannot be replaced or removed (403); deleting a voice
that does not exist is a 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..engine.tts import SynthesisOptions, TtsEngine
from ..engine.voices import MAX_CONFIG_BYTES, UnknownVoiceError, Voice, check_name
from ..errors import InvalidRequestError
from .http_services import HttpServices, enabled

MAX_MODEL_BYTES = 256 << 20  # Piper's largest voices are about 120 MB
MAX_NAME_CHARS = 200
_READ_CHUNK = 1 << 16


class _TooLarge(Exception):
    pass


def describe_voice(voice: Voice) -> dict[str, Any]:
    return {
        "name": voice.name,
        "languages": voice.languages,
        "speakers": voice.speakers,
        "sample_rate": voice.sample_rate,
        "quality": voice.quality,
        "bundled": voice.bundled,
    }


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _read_bounded(part: BodyPartReader, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK):
        data += chunk
        if len(data) > limit:
            size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} bytes"  # a name: 200 bytes
            raise _TooLarge(f"{what} is larger than {size}")
    return bytes(data)


class VoiceRoutes:
    def __init__(self, services: HttpServices) -> None:
        self.services = services

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/api/voices", self.list_voices)
        app.router.add_post("/api/voices", self.upload)
        app.router.add_delete("/api/voices/{name}", self.delete)

    def _tts(self) -> TtsEngine:
        return enabled(self.services.tts, "text to speech")

    def _bundled(self, name: str) -> bool:
        return any(voice.bundled and voice.name == name for voice in self._tts().catalogue.voices())

    async def list_voices(self, request: web.Request) -> web.Response:
        tts = self._tts()
        voices = [describe_voice(voice) for voice in tts.catalogue.voices()]
        return web.json_response({"default": tts.voice(SynthesisOptions()).name, "voices": voices})

    async def upload(self, request: web.Request) -> web.Response:
        catalogue = self._tts().catalogue
        if not request.content_type.startswith("multipart/"):
            raise InvalidRequestError("send the voice as multipart/form-data: name, model and config")
        replace = request.query.get("replace", "").lower() in ("1", "true", "yes")
        name, model, config = None, None, None
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise InvalidRequestError("nested multipart bodies are not accepted")
                if part.name == "name":
                    name = check_name((await _read_bounded(part, MAX_NAME_CHARS, "name")).decode().strip())
                    if self._bundled(name):  # refused before a large model is read
                        return _error(403, "protected-voice", f"{name!r} is a bundled voice")
                elif part.name == "model":
                    model = await _read_bounded(part, MAX_MODEL_BYTES, "the voice model")
                elif part.name == "config":
                    config = await _read_bounded(part, MAX_CONFIG_BYTES, "the voice config")
        except _TooLarge as err:
            return _error(413, "too-large", str(err))
        except UnicodeDecodeError as err:
            raise InvalidRequestError("name must be UTF-8 text") from err
        except (HttpProcessingError, ValueError, LookupError) as err:  # aiohttp's parser: a malformed form
            message = getattr(err, "message", "") or str(err)
            raise InvalidRequestError(f"the multipart form cannot be read: {message}") from err
        fields = (("name", name), ("model", model), ("config", config))
        missing = [field for field, value in fields if not value]
        if missing:
            raise InvalidRequestError(f"the form lacks {', '.join(missing)}: it needs name, model and config")
        assert name is not None and model is not None and config is not None
        voice = await asyncio.to_thread(catalogue.add, name, model, config, replace)
        return web.json_response(describe_voice(voice), status=201)

    async def delete(self, request: web.Request) -> web.Response:
        catalogue = self._tts().catalogue
        name = check_name(request.match_info["name"])
        if self._bundled(name):
            return _error(403, "protected-voice", f"{name!r} is a bundled voice and cannot be removed")
        try:
            await asyncio.to_thread(catalogue.remove, name)
        except UnknownVoiceError as err:
            return _error(404, err.code, str(err))
        return web.json_response({"deleted": name})
