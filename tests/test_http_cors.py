"""CORS on the HTTP API: real preflights and requests with an Origin, from a browser's point of view."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from wis_wyoming.app import WisServer
from wis_wyoming.cli import _resolve, build_parser
from wis_wyoming.config import resolve_settings
from wis_wyoming.errors import ConfigError

from .conftest import http_settings, speech

KEY = "cors-secret"
ALLOWED = "http://kitchen-panel.local:8123"
STRANGER = "https://evil.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key, content-type, x-audio-codec",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cors_url(base_settings):
    """tiny.en only behind the HTTP API, with an API key and one allowed origin."""
    settings, url = http_settings(base_settings, api_key=KEY, cors_origins=[ALLOWED], tts=False, llm="none")
    async with WisServer(settings):
        yield url


async def test_a_preflight_from_an_allowed_origin_is_answered_without_the_key(cors_url):
    async with (
        aiohttp.ClientSession(cors_url) as browser,
        browser.options("/api/willow", headers={**PREFLIGHT, "Origin": ALLOWED}) as response,
    ):
        assert response.status == 204
        headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == ALLOWED and "Origin" in headers["Vary"]
    allowed_headers = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {
        "x-api-key",
        "authorization",
        "content-type",
        "x-audio-codec",
        "x-audio-sample-rate",
    } <= allowed_headers
    assert {"GET", "POST", "DELETE"} <= {
        m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")
    }
    assert int(headers["Access-Control-Max-Age"]) > 0


async def test_a_preflight_from_another_origin_is_refused(cors_url):
    async with (
        aiohttp.ClientSession(cors_url) as browser,
        browser.options("/api/asr", headers={**PREFLIGHT, "Origin": STRANGER}) as response,
    ):
        assert response.status == 403 and (await response.json())["error"] == "cors"
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_responses_to_an_allowed_origin_say_so_errors_and_streams_included(cors_url):
    async with aiohttp.ClientSession(cors_url) as browser:
        headers = {"Origin": ALLOWED, "X-API-Key": KEY}
        async with browser.get("/api/status", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert "X-WIS-Transcript" in response.headers["Access-Control-Expose-Headers"]
        async with browser.get("/api/status", headers={"Origin": ALLOWED}) as response:
            assert response.status == 401, "the key is still wanted on the request itself"
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED  # the page can read why
        clip = speech("commands/lock_the_Front_Door.wav")
        form = aiohttp.FormData()
        form.add_field("file", clip.read_bytes(), filename=clip.name, content_type="audio/wav")
        form.add_field("stream", "true")
        async with browser.post("/v1/audio/transcriptions", data=form, headers=headers) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED  # sent before the body
            assert "front door" in (await response.text()).lower()
        for origin_headers in ({"Origin": STRANGER, "X-API-Key": KEY}, {"X-API-Key": KEY}):
            async with browser.get("/api/status", headers=origin_headers) as response:
                assert response.status == 200  # not a browser's business: served, but not marked
                assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_origins_come_from_settings_and_the_command_line():
    environ = {"WIS_CORS_ORIGINS": "https://a.example, http://b.example:8123/"}
    assert resolve_settings(environ=environ).settings.cors_origins == [
        "https://a.example",
        "http://b.example:8123",
    ]
    assert resolve_settings(environ={}).settings.cors_origins == []
    args = build_parser().parse_args(["serve", "--cors-origins", "*"])
    assert _resolve(args).settings.cors_origins == ["*"]
    for bad in ("kitchen", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(ConfigError, match="cors_origins"):
            resolve_settings({"cors_origins": bad}, environ={})


async def test_any_origin_with_a_star(base_settings):
    settings, url = http_settings(base_settings, cors_origins=["*"], tts=False, llm="none")
    async with WisServer(settings), aiohttp.ClientSession(url) as browser:
        async with browser.options("/api/asr", headers={**PREFLIGHT, "Origin": STRANGER}) as response:
            assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
        async with browser.get("/api/ping", headers={"Origin": STRANGER}) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "*"
