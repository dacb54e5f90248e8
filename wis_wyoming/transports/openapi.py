"""The HTTP API as an OpenAPI 3.1 document: every route `HttpApi.app()` registers, its query,
headers and body as the handlers check them, and what comes back (the JSON error shape included).

The value sets (formats, codecs, languages, voice names, sizes) are taken from the modules that
enforce them, so a change there changes the document too; `tests/test_openapi.py` checks that
the routes here and the routes the app registers are the same, and fuzzes the live server
against this document with schemathesis. The document holds nothing about one installation (no
model or voice names, no key), so it is the same for every server.
"""

from __future__ import annotations

import json
from typing import Any

from .. import __version__
from ..engine.asr import MAX_BEAM_SIZE
from ..engine.audio_formats import ENCODINGS
from ..engine.conversation import MAX_INPUT_CHARS
from ..engine.languages import WHISPER_LANGUAGES
from ..engine.tts import MAX_TEXT_CHARS
from ..engine.voices import VOICE_NAME
from .http_openai import RESPONSE_FORMATS, SPEECH_FORMATS
from .http_sts import FORMATS as STS_FORMATS
from .http_willow import CODECS as WILLOW_CODECS

Schema = dict[str, Any]

PUBLIC: list[dict[str, list[str]]] = []  # an operation's `security` when it wants no key
BINARY: Schema = {"type": "string", "format": "binary"}
TEXT: Schema = {"type": "string"}
NULLABLE_TEXT: Schema = {"type": ["string", "null"]}
FLAG: Schema = {"type": "boolean"}
# Content types of the audio the TTS routes send, by format (Opus is `audio/ogg; codecs=opus`).
AUDIO_TYPES = sorted({encoding.content_type.split(";")[0] for encoding in ENCODINGS.values()})


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """A JSON object with exactly these keys, all required but `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _header(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def _json(schema: Schema, description: str = "") -> Schema:
    return {"description": description or "JSON", "content": {"application/json": {"schema": schema}}}


def _binary(media_types: list[str]) -> dict[str, Schema]:
    return {media_type: {"schema": BINARY} for media_type in media_types}


def _multipart(properties: dict[str, Schema], required: list[str]) -> Schema:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    """The JSON error for each status (every route may also answer 500 for a bug)."""
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in (*statuses, 500)}


# --- parameters shared by several routes ---------------------------------------------------------

ASR_QUERY = [
    _query("model", TEXT, "a model of this server (`GET /v1/models`); unknown names are refused"),
    _query("beam_size", {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE}, "beam width"),
    _query("detect_language", FLAG, "detect the language (also 1/0, yes/no, on/off)"),
    _query("force_language", {"enum": list(WHISPER_LANGUAGES)}, "a Whisper language code"),
]
TRANSLATE = _query("translate", FLAG, "also translate to English (a multilingual model)")
VOICE_QUERY = [
    _query("voice", TEXT, "a voice of `GET /api/voices`; the default voice when absent"),
    _query("speaker", TEXT, "a speaker of a multi-speaker voice, by name or number"),
    _query("nocache", FLAG, "synthesise again even when the sentence is in the cache"),
]
WILLOW_HEADERS = [
    _header("x-audio-codec", {"enum": list(WILLOW_CODECS)}, "the body's format (pcm when absent)"),
    _header(
        "x-audio-sample-rate",
        {"type": "integer", "minimum": 1000, "maximum": 384000},
        "sample rate; required for pcm (16000 for wav and amrwb, whose files say)",
    ),
    _header("x-audio-bits", {"enum": [8, 16, 32]}, "bits per sample (16 when absent)"),
    _header("x-audio-channel", {"type": "integer", "minimum": 1, "maximum": 8}, "channels (1 when absent)"),
]


# --- schemas --------------------------------------------------------------------------------------

SCHEMAS: dict[str, Schema] = {
    "Error": _object({"error": TEXT, "message": TEXT}),
    "Status": _object(
        {
            "version": TEXT,
            "uptime_s": {"type": "number"},
            "device": TEXT,
            "asr": _object({"default_model": TEXT, "resident": {"type": "array", "items": TEXT}}),
            "tts": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "voices": {"type": "array", "items": TEXT},
                            "cache_entries": {"type": "integer", "minimum": 0},
                            "cache_bytes": {"type": "integer", "minimum": 0},
                        }
                    ),
                ]
            },
            "llm": NULLABLE_TEXT,
        }
    ),
    "AsrResult": _object(
        {
            "text": TEXT,
            "language": NULLABLE_TEXT,
            "translation": TEXT,
            "infer_time": {"type": "number", "description": "ms"},
            "infer_speedup": {"type": ["number", "null"]},
            "audio_duration": {"type": "number", "description": "ms"},
        },
        optional=("translation",),
    ),
    "WillowResult": _object(
        {
            "text": TEXT,
            "language": NULLABLE_TEXT,
            "infer_time": {"type": "number", "description": "ms from the body's last byte (stats=true)"},
            "audio_duration": {"type": "number", "description": "ms (stats=true)"},
            "infer_speedup": {"type": ["number", "null"], "description": "stats=true"},
        },
        optional=("infer_time", "audio_duration", "infer_speedup"),
    ),
    "Answer": _object({"text": TEXT}),
    "Voice": _object(
        {
            "name": TEXT,
            "languages": {"type": "array", "items": TEXT},
            "speakers": {"type": "array", "items": TEXT},
            "sample_rate": {"type": "integer"},
            "quality": NULLABLE_TEXT,
            "bundled": {"type": "boolean"},
        }
    ),
    "Voices": _object({"default": TEXT, "voices": {"type": "array", "items": _ref("Voice")}}),
    "Deleted": _object({"deleted": TEXT}),
    "StsResult": _object(
        {
            "transcript": TEXT,
            "language": NULLABLE_TEXT,
            "reply": TEXT,
            "sample_rate": {"type": "integer"},
            "audio": {"type": "string", "contentEncoding": "base64", "description": "a WAV file"},
        }
    ),
    "SessionDescription": _object({"sdp": TEXT, "type": TEXT}),
    "RtcConfig": _object(
        {
            "ice_servers": {"type": "array", "items": {"type": "object"}},
            "max_sessions": {"type": "integer"},
            "sessions": {"type": "integer", "minimum": 0},
        }
    ),
    "Models": _object(
        {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": _object(
                    {
                        "id": TEXT,
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": TEXT,
                    }
                ),
            },
        }
    ),
    # Before OpenAPI 3.2 an event stream's schema describes each of its events.
    "ServerSentEvent": {
        "type": "object",
        "properties": {
            "event": TEXT,
            "data": {
                "type": "string",
                "description": "a JSON object (an OpenAI event; {error} if a chat fails midway) or [DONE]",
            },
        },
        "required": ["data"],
    },
    "Transcription": _object({"text": TEXT}),
    "VerboseTranscription": _object(
        {
            "task": {"enum": ["transcribe", "translate"]},
            "language": NULLABLE_TEXT,
            "duration": {"type": "number"},
            "text": TEXT,
            "segments": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "integer"},
                        "start": {"type": "number"},
                        "end": {"type": "number"},
                        "text": TEXT,
                        "avg_logprob": {"type": "number"},
                        "no_speech_prob": {"type": "number"},
                        "compression_ratio": {"type": "number"},
                    }
                ),
            },
        }
    ),
    "SpeechRequest": {
        "type": "object",
        "properties": {
            "input": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT_CHARS,
                "description": "the text (not only spaces)",
            },
            "model": {"type": "string", "description": "ignored (OpenAI's tts-1 and the like)"},
            "voice": {"type": "string", "description": "one of our voices; any other name: the default"},
            "response_format": {"enum": list(SPEECH_FORMATS), "default": "mp3"},
            "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0, "default": 1.0},
        },
        "required": ["input"],
    },
    "ChatRequest": {
        "type": "object",
        "properties": {
            "model": {"type": "string", "description": "ignored: the server's LLM answers"},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": TEXT},
                    "required": ["role", "content"],
                },
            },
            "stream": {"type": "boolean", "default": False},
            # null: the server's setting
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            "seed": {"type": ["integer", "null"]},
        },
        "required": ["messages"],
    },
    "ChatCompletion": _object(
        {
            "id": TEXT,
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": TEXT,
            "choices": {
                "type": "array",
                "items": _object(
                    {
                        "index": {"type": "integer"},
                        "message": _object({"role": {"const": "assistant"}, "content": TEXT}),
                        "finish_reason": TEXT,
                    }
                ),
            },
        }
    ),
}

ERRORS = {
    400: "a bad request: a parameter, header or body the route cannot use, or a feature not enabled",
    401: "no valid X-API-Key or Bearer token (only when the server has an API key)",
    403: "refused",
    404: "no such thing",
    413: "the body is too large",
    422: "no speech was heard",
    502: "the LLM behind the server failed or timed out",
    503: "overloaded: too many requests in flight; try again",
    500: "a bug on the server (it costs this request only)",
}


# --- paths ------------------------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    llm_get = {
        "summary": "An answer from the LLM",
        "parameters": [
            _query(
                "text",
                {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS},
                "what the user said (not only spaces)",
                required=True,
            ),
            _query("conversation_id", TEXT, "the LLM remembers the conversation's last exchanges"),
        ],
        "responses": {"200": _json(_ref("Answer")), **_errors(400, 401, 502, 503)},
    }
    transcription = {
        "requestBody": _multipart(
            {
                "file": BINARY,
                "model": {"type": "string", "description": "one of ours; whisper-1 means the default"},
                "language": TEXT,
                "prompt": TEXT,
                "response_format": {"enum": list(RESPONSE_FORMATS), "default": "json"},
                "stream": {"type": "boolean", "description": "server-sent transcript.text events"},
            },
            ["file"],
        ),
        "responses": {
            "200": {
                "description": "the transcript in the response_format asked for",
                "content": {
                    "application/json": {
                        "schema": {"anyOf": [_ref("Transcription"), _ref("VerboseTranscription")]}
                    },
                    "text/plain": {"schema": TEXT},
                    "text/event-stream": {"schema": _ref("ServerSentEvent")},
                },
            },
            **_errors(400, 401, 413, 503),
        },
    }
    return {
        "/api/ping": {
            "get": {
                "summary": "Is the server up",
                "security": PUBLIC,
                "responses": {
                    "200": {"description": "pong", "content": {"text/plain": {"schema": {"const": "pong"}}}}
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "Version, uptime, device, resident models, voices, TTS cache, LLM",
                "responses": {"200": _json(_ref("Status")), **_errors(401)},
            }
        },
        "/api/docs": {
            "get": {
                "summary": "This document: HTML for a browser (Accept: text/html), JSON otherwise",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/html": {"schema": TEXT},
                        },
                    }
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document as JSON",
                "security": PUBLIC,
                "responses": {"200": _json({"type": "object", "required": ["openapi", "info", "paths"]})},
            }
        },
        "/api/asr": {
            "post": {
                "summary": "Speech to text (WIS): an uploaded file in any format FFmpeg reads",
                "parameters": [*ASR_QUERY, TRANSLATE],
                "requestBody": _multipart({"audio_file": BINARY}, ["audio_file"]),
                "responses": {"200": _json(_ref("AsrResult")), **_errors(400, 401, 413, 503)},
            }
        },
        "/api/willow": {
            "post": {
                "summary": "Speech to text for Willow: the body decoded while it arrives (chunked)",
                "parameters": [
                    *ASR_QUERY,
                    TRANSLATE,
                    _query("stats", FLAG, "add infer_time, audio_duration, infer_speedup"),
                    *WILLOW_HEADERS,
                ],
                "requestBody": {"required": True, "content": _binary(["application/octet-stream"])},
                "responses": {"200": _json(_ref("WillowResult")), **_errors(400, 401, 413, 503)},
            }
        },
        "/api/ws/asr": {
            "get": {
                "summary": "Streaming speech to text over a WebSocket (an upgrade, not a plain GET)",
                "description": (
                    "Per utterance: a JSON text message with the options (`model`, `language`, "
                    "`beam_size`, `sample_rate` 16000, `bits` 16, `channels` 1), binary messages of "
                    'little-endian PCM, then `{"type": "end"}`. The server sends `{"type": '
                    '"committed", "text"}` as text settles and `{"type": "final", "text", '
                    '"language", "duration"}`; a bad message gets `{"type": "error", "error", '
                    '"message"}` and the socket stays open. A browser passes the key as `api_key`.'
                ),
                "security": [{"ApiKey": []}, {"Bearer": []}, {"ApiKeyQuery": []}],
                "parameters": [
                    {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
                    {"name": "Connection", "in": "header", "required": True, "schema": TEXT},
                ],
                "responses": {
                    "101": {"description": "switched to the WebSocket protocol"},
                    **_errors(400, 401),
                },
            }
        },
        "/api/rtc/asr": {
            "post": {
                "summary": "Speech to text over WebRTC (WIS): the offer in, the answer out",
                "description": (
                    "The offer brings an audio track and a data channel for WIS's JSON messages "
                    "(`ping`, `start`, `stop` → `pong`, `log`, `infer`, `partial`, `error`). The "
                    "query sets the session's defaults."
                ),
                "parameters": ASR_QUERY,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"sdp": TEXT, "type": {"const": "offer"}},
                                "required": ["sdp", "type"],
                            }
                        }
                    },
                },
                "responses": {"200": _json(_ref("SessionDescription")), **_errors(400, 401, 503)},
            }
        },
        "/api/rtc/config": {
            "get": {
                "summary": "What the /rtc page needs before its offer: the ICE servers, the session limit",
                "responses": {"200": _json(_ref("RtcConfig")), **_errors(401)},
            }
        },
        "/rtc": {"get": _rtc_page()},
        "/rtc/": {"get": _rtc_page()},
        "/rtc/{filename}": {
            "get": {
                "summary": "The /rtc page's files",
                "security": PUBLIC,
                "parameters": [{"name": "filename", "in": "path", "required": True, "schema": TEXT}],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            kind: {"schema": TEXT} for kind in ("text/html", "text/css", "text/javascript")
                        },
                    },
                    **_errors(403, 404),
                },
            }
        },
        "/api/tts": {
            "get": {
                "summary": "Text to speech (Piper), from the sentence cache when said before",
                "parameters": [
                    _query(
                        "text",
                        {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                        "what to say (not only spaces)",
                        required=True,
                    ),
                    *VOICE_QUERY,
                    _query("format", {"enum": list(ENCODINGS), "default": "wav"}, "the audio format"),
                ],
                "responses": {
                    "200": _speech(
                        "X-WIS-Cache",
                        {"enum": ["HIT", "MISS"]},
                        "HIT when every sentence came from the cache",
                    ),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/api/voices": {
            "get": {
                "summary": "The voices and the default one",
                "responses": {"200": _json(_ref("Voices")), **_errors(400, 401)},
            },
            "post": {
                "summary": "Install a Piper voice, usable at once",
                "parameters": [_query("replace", FLAG, "overwrite an uploaded voice of that name")],
                "requestBody": _multipart(
                    {
                        "name": {"type": "string", "pattern": f"^{VOICE_NAME.pattern}$"},
                        "model": {**BINARY, "description": "the .onnx (256 MB at most)"},
                        "config": {**BINARY, "description": "the .onnx.json"},
                    },
                    ["name", "model", "config"],
                ),
                "responses": {
                    "201": _json(_ref("Voice"), "the voice installed"),
                    **_errors(400, 401, 403, 413),
                },
            },
        },
        "/api/voices/{name}": {
            "delete": {
                "summary": "Remove an uploaded voice (the bundled one is protected)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": TEXT}],
                "responses": {"200": _json(_ref("Deleted")), **_errors(400, 401, 403, 404)},
            }
        },
        "/api/sts": {
            "post": {
                "summary": "Speech to speech: transcribed, answered by the LLM, spoken back",
                "description": (
                    "format=wav streams the answer while the LLM still writes: the WAV header's "
                    "sizes are 0xFFFFFFFF (read to the end). format=json answers once all is spoken."
                ),
                "parameters": [
                    *ASR_QUERY,
                    *VOICE_QUERY,
                    _query("conversation_id", TEXT, "the LLM remembers the conversation"),
                    _query("format", {"enum": list(STS_FORMATS), "default": "wav"}, "wav (streamed) or json"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"audio_file": BINARY},
                                "required": ["audio_file"],
                            }
                        },
                        **_binary(["application/octet-stream"]),
                    },
                },
                "responses": {
                    "200": {
                        "description": "the answer, spoken",
                        "headers": {
                            "X-WIS-Transcript": {
                                "description": "what was heard, percent-encoded UTF-8 (format=wav)",
                                "schema": TEXT,
                            },
                            "X-WIS-Language": {"description": "its language (format=wav)", "schema": TEXT},
                            "X-Sample-Rate": {"description": "format=wav", "schema": {"type": "integer"}},
                        },
                        "content": {
                            "audio/wav": {"schema": BINARY},
                            "application/json": {"schema": _ref("StsResult")},
                        },
                    },
                    **_errors(400, 401, 413, 422, 502, 503),
                },
            }
        },
        "/api/llm": {"get": llm_get},
        "/api/chatbot": {"get": {**llm_get, "summary": "WIS's name for /api/llm"}},
        "/v1/models": {
            "get": {
                "summary": "The speech models, the voices and the LLM (OpenAI)",
                "responses": {"200": _json(_ref("Models")), **_errors(401)},
            }
        },
        "/v1/audio/transcriptions": {"post": {"summary": "Speech to text (OpenAI)", **transcription}},
        "/v1/audio/translations": {"post": {"summary": "Speech to English text (OpenAI)", **transcription}},
        "/v1/audio/speech": {
            "post": {
                "summary": "Text to speech (OpenAI)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SpeechRequest")}},
                },
                "responses": {
                    "200": _speech(
                        "X-Sample-Rate",
                        {"type": "integer"},
                        "the audio's sample rate (pcm is 16-bit mono at it)",
                    ),
                    **_errors(400, 401, 503),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "A chat completion from the LLM (OpenAI); server-sent chunks with stream",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ChatRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "the completion, or chat.completion.chunk events (stream: true)",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            "text/event-stream": {"schema": _ref("ServerSentEvent")},
                        },
                    },
                    **_errors(400, 401, 502, 503),
                },
            }
        },
    }


def _speech(header: str, schema: Schema, description: str) -> Schema:
    """A 200 of audio in one of the TTS formats, with a header that always comes with it."""
    return {
        "description": "the speech",
        "headers": {header: {"required": True, "description": description, "schema": schema}},
        "content": _binary(AUDIO_TYPES),
    }


def _rtc_page() -> Schema:
    return {
        "summary": "The /rtc page: speak in the browser, see the text (it asks for the key itself)",
        "security": PUBLIC,
        "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": TEXT}}}},
    }


def openapi_document() -> dict[str, Any]:
    """The whole document, a new tree each call (its parts share no objects)."""
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "wis_wyoming HTTP API",
            "version": __version__,
            "description": (
                "Speech to text, text to speech and an LLM, WIS-compatible and OpenAI-compatible. "
                'Every error is JSON, `{"error": code, "message"}`. With `--api-key`, every route '
                "but /api/ping, this document and the /rtc page wants `X-API-Key` or `Authorization: "
                "Bearer`. With `--cors-origins`, preflight OPTIONS requests are answered without the key."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{status}": _json(_ref("Error"), description) for status, description in ERRORS.items()
            },
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
                "ApiKeyQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "api_key",
                    "description": "only on /api/ws/asr: a browser cannot set headers on a WebSocket",
                },
            },
        },
    }
    return json.loads(json.dumps(document))
