"""The OpenAPI document (`/api/docs`): valid OpenAPI, the same routes as the app, and true of the
live server. schemathesis fuzzes every plain HTTP operation of a real server on 127.0.0.1 (tiny.en,
Piper, the bundled LLM, an API key) with requests the document allows and requests it does not,
and checks every answer: no 5xx, a documented status, content type, JSON body and headers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import aiohttp
import hypothesis
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import GenerationMode, checks

from wis_wyoming.app import WisServer
from wis_wyoming.transports.http_api import HttpApi, HttpServices
from wis_wyoming.transports.openapi import openapi_document

from .conftest import http_settings, speech

KEY = "docs-secret"
# schemathesis speaks plain HTTP: a WebSocket and a WebRTC session are described, not fuzzed.
NOT_FUZZED = {("GET", "/api/ws/asr"), ("POST", "/api/rtc/asr")}
EXAMPLES = 15  # per operation and kind of case: the whole run stays within about two minutes
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
METHODS = ("get", "post", "put", "patch", "delete")
CLIP = speech("commands/lock_the_Front_Door.wav").read_bytes()
BUNDLED_VOICE = "en_US-joe-medium"


def documented_operations() -> list[tuple[str, str]]:
    paths = openapi_document()["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in METHODS if method in item]


@dataclass
class Live:
    server: WisServer
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(base_settings, tmp_path_factory):
    """tiny.en, Piper and the LLM behind the HTTP API with a key; voices and the TTS cache in a
    directory of their own (the fuzzer uploads and deletes voices); short LLM answers."""
    home = tmp_path_factory.mktemp("openapi-home")
    settings, url = http_settings(
        base_settings, api_key=KEY, voices_dir=home / "voices", tts_cache_dir=home / "tts", llm_max_tokens=16
    )
    async with WisServer(settings) as running:
        yield Live(running, url)


def test_the_document_is_valid_openapi_3_1():
    document = openapi_document()
    validate(document)
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    loaded = [result.ok() for result in schema.get_all_operations()]  # raises on an unusable one
    assert len(loaded) == len(documented_operations())


async def test_the_document_and_the_app_have_the_same_routes(live):
    app = HttpApi(HttpServices(asr=live.server.engine)).app()
    registered = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp answers HEAD for every GET by itself
            continue
        resource = route.resource
        assert resource is not None
        registered.add((route.method, resource.canonical))
    documented = set(documented_operations())
    assert registered - documented == set(), "routes the document does not describe"
    assert documented - registered == set(), "documented routes the app does not have"


async def test_docs_are_served_without_the_key_as_json_or_a_page(live):
    document = openapi_document()
    async with aiohttp.ClientSession(live.url) as anonymous:
        async with anonymous.get("/api/openapi.json") as response:
            assert response.status == 200 and response.content_type == "application/json"
            assert await response.json() == document
        async with anonymous.get("/api/docs", headers={"Accept": "application/json"}) as response:
            assert json.loads(await response.text()) == document
        browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        async with anonymous.get("/api/docs", headers=browser) as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
        async with anonymous.get("/api/status") as response:
            assert response.status == 401  # the rest still wants the key
    assert "<script" not in page and "://" not in page  # nothing loaded from elsewhere
    for method, path in documented_operations():
        assert f"{method}</span> {path}</h2>" in page


FORM = {"Content-Type": "multipart/form-data; boundary=b"}
DISPOSITION = b'Content-Disposition: form-data; name="model"'


def form_part(part_headers: bytes, content: bytes = b"x", end: bytes = b"\r\n--b--\r\n") -> bytes:
    return b"--b\r\n" + part_headers + b"\r\n\r\n" + content + end


MALFORMED_FORMS = [  # found by schemathesis and a look behind it: each was a 500
    ({"Content-Type": "multipart/form-data"}, form_part(DISPOSITION)),  # no boundary
    ({"Content-Type": "multipart/form-data; boundary=abc"}, form_part(DISPOSITION)),  # another one
    (FORM, form_part(b'Content-Disposition: form-data; name="a\x03"')),  # a control character
    (FORM, form_part(DISPOSITION, end=b"")),  # cut short
    (FORM, form_part(DISPOSITION + b"\r\nContent-Type: text/plain; charset=nope")),
    (FORM, form_part(DISPOSITION, b"\xff")),  # not UTF-8
]
CHAT = [{"role": "user", "content": "Say hi."}]
BAD_JSON_BODIES = [
    ("/v1/chat/completions", {"messages": CHAT, "seed": "abc"}),  # was a 502 from llama.cpp
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": -1}),  # was "until the context is full"
    ("/v1/chat/completions", {"messages": CHAT, "temperature": "hot"}),
    ("/v1/chat/completions", {"messages": CHAT, "top_p": 7}),
    ("/v1/audio/speech", {"input": "Hello.", "voice": ["alloy"]}),  # was a 500
]


async def test_malformed_requests_get_json_400s_not_500s(live):
    headers = {"X-API-Key": KEY}
    async with aiohttp.ClientSession(live.url, headers=headers) as session:
        for route in ("/api/asr", "/api/voices", "/v1/audio/transcriptions", "/api/sts"):
            for form_headers, body in MALFORMED_FORMS:
                async with session.post(route, data=body, headers=form_headers) as response:
                    assert response.status == 400, (route, body)
                    assert (await response.json())["error"] == "invalid-request"
        for route, json_body in BAD_JSON_BODIES:
            async with session.post(route, json=json_body) as response:
                assert response.status == 400, json_body
                assert (await response.json())["error"] == "invalid-request"


def realistic(case: schemathesis.Case) -> schemathesis.Case:
    """A valid case with inputs the server can act on, so the answers of a success are checked
    too (random bytes are never audio, a random voice is never installed): real speech in every
    audio field and body, the resident model, English, the bundled voice."""
    for name, value in (("model", "tiny.en"), ("force_language", "en"), ("voice", BUNDLED_VOICE)):
        if name in case.query:
            case.query[name] = value
    case.query.pop("translate", None)  # tiny.en cannot
    case.query.pop("speaker", None)  # the bundled voice has one speaker
    if isinstance(case.body, dict):
        for name, value in (("audio_file", CLIP), ("file", CLIP), ("model", "tiny.en"), ("language", "en")):
            if name in case.body:
                case.body[name] = value
    if case.path == "/api/willow":
        case.headers["x-audio-codec"] = "wav"  # the file's header gives the format
        case.body = CLIP
    elif case.media_type == "application/octet-stream":
        case.body = CLIP
    return case


def fuzz(url: str, method: str, path: str) -> None:
    """schemathesis's cases for one operation, sent to the live server (a blocking client: run
    in a thread, so the server's event loop goes on): valid ones, invalid ones, and valid ones
    made of real speech and names."""
    operation = schemathesis.openapi.from_dict(openapi_document())[path][method]
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    cases = valid | operation.as_strategy(GenerationMode.NEGATIVE) | valid.map(realistic)

    @hypothesis.settings(
        max_examples=3 * EXAMPLES,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=cases)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, headers={"X-API-Key": KEY}, checks=CHECKS, timeout=120)

    run()


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for method, path in documented_operations() if (method, path) not in NOT_FUZZED],
    ids=lambda value: value,
)
async def test_the_live_server_answers_as_documented(live, method, path):
    await asyncio.to_thread(fuzz, live.url, method, path)
