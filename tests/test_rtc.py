"""WebRTC speech to text (/api/rtc/asr and the /rtc page): real speech over real peer connections,
media and signalling on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import wave
from pathlib import Path

import aiohttp
import ifaddr
import jiwer
import numpy as np
import pytest
import pytest_asyncio
from whisper_normalizer.english import EnglishTextNormalizer

from wis_wyoming.app import WisServer
from wis_wyoming.cli import build_parser
from wis_wyoming.config import resolve_settings
from wis_wyoming.engine.audio import WHISPER_RATE, decode_file
from wis_wyoming.errors import ConfigError
from wis_wyoming.transports.rtc_ice import IceServer, host_addresses

from .conftest import http_settings, reference_text, speech
from .rtc_client import RtcClient

normalise = EnglishTextNormalizer()
LIBRI = speech("librispeech/1089-134686-0000.wav")
# Commands tiny.en gets right from the file itself (it hears others wrong either way).
GARAGE = speech("commands/is_the_Garage_Door_open.wav")
LAMP = speech("commands/turn_on_the_living_room_lamp.wav")
OFFICE = speech("commands/turn_off_lights_in_the_Office.wav")
HUMIDITY = speech("commands/what_is_the_Outdoor_Humidity.wav")
NEW_YORK = speech("commands/whats_the_weather_like_in_New_York.wav")
KEY = "rtc-secret"
HEADERS = {"X-API-Key": KEY}
PORTS = (47100, 47199)
CHROMIUM = "/usr/bin/chromium"


def wer(reference: Path, text: str) -> float:
    return jiwer.wer(normalise(reference_text(reference)), normalise(text))


def candidates(sdp: str) -> list[tuple[str, int]]:
    """(address, port) of each ICE candidate in an SDP."""
    found = re.findall(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ", sdp)
    return [(address, int(port)) for address, port in found]


def rtc_settings(base_settings, **changes):
    """tiny.en behind the HTTP API with a key; WebRTC media on loopback, in a port range."""
    settings, _ = http_settings(
        base_settings,
        api_key=KEY,
        tts=False,
        llm="none",
        rtc_interfaces=["127.0.0.1"],
        rtc_ports=PORTS,
        **changes,
    )
    return settings


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rtc_url(base_settings):
    settings = rtc_settings(base_settings, rtc_max_sessions=4)
    async with WisServer(settings):
        yield f"http://127.0.0.1:{settings.http_port}"


@pytest_asyncio.fixture(loop_scope="session")
async def client(rtc_url):
    connected = RtcClient()
    await connected.connect(rtc_url, HEADERS)
    yield connected
    await connected.close()


async def sessions(url: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/rtc/config", headers=HEADERS) as response,
    ):
        return (await response.json())["sessions"]


async def test_an_utterance_streams_partial_text_then_the_transcript(client):
    # Media on loopback only, in the configured port range.
    assert candidates(client.answer["sdp"])
    assert all(
        address == "127.0.0.1" and PORTS[0] <= port <= PORTS[1]
        for address, port in candidates(client.answer["sdp"])
    )
    client.send("ping", "12345")
    assert await client.receive() == {"type": "pong", "message": "12345", "obj": None}

    messages = await client.utterance(LIBRI, start={"partial": True})
    partial = [m["obj"]["text"] for m in messages if m["type"] == "partial"]
    infer = messages[-1]["obj"]
    assert len(partial) >= 2, "committed text arrives while the user speaks"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(partial))
    assert infer["text"].startswith(partial[-1][:30])
    assert wer(LIBRI, infer["text"]) < 0.15, infer["text"]
    assert infer["language"] == "en" and infer["model"] == "tiny.en"
    # 10.4 s of speech and 0.6 s of silence, as WIS reports them (ms).
    assert 10_400 < infer["audio_duration"] < 11_600 and 0 < infer["infer_time"] < 5_000
    assert infer["infer_speedup"] > 1


async def test_one_session_carries_utterances_through_pauses_and_rtcp_bye(client):
    first = await client.utterance(GARAGE)
    assert not [m for m in first if m["type"] == "partial"], "partial results only when asked for"
    assert wer(GARAGE, first[-1]["obj"]["text"]) <= 0.2, first[-1]

    # The client pauses its track the way a browser does, BYE included; the session stays up.
    await client.pause(bye=True)
    await asyncio.sleep(1.0)
    client.send("ping", "still there?")
    assert (await client.receive())["type"] == "pong"

    # Audio outside start..stop is dropped: this command is never transcribed.
    client.unmute()
    client.microphone.say(HUMIDITY)
    await client.microphone.drained.wait()

    # WIS's stop names the options; other ones than the stream's have the utterance decoded again.
    second = await client.utterance(LAMP, stop={"model": "tiny.en", "beam_size": 2, "detect_language": False})
    assert wer(LAMP, second[-1]["obj"]["text"]) <= 0.2, second[-1]
    assert not {"outdoor", "humidity"} & set(normalise(second[-1]["obj"]["text"]).split())
    third = await client.utterance(OFFICE, start={"beam_size": 1})
    assert wer(OFFICE, third[-1]["obj"]["text"]) <= 0.2, third[-1]


async def test_speech_while_a_start_loads_its_model_is_kept(client):
    # base is not resident: the start loads it (seconds) while the user already speaks.
    client.send("start", obj={"model": "base", "language": "en"})
    client.unmute()
    client.microphone.say(OFFICE)
    await client.microphone.drained.wait()
    await asyncio.sleep(0.6)
    client.send("stop")
    await client.pause(bye=False)
    messages = await client.until("infer", timeout=120)
    assert messages[-1]["obj"]["model"] == "base"
    assert wer(OFFICE, messages[-1]["obj"]["text"]) <= 0.2, messages
    await client.until("log")


async def test_bad_messages_get_errors_and_the_session_goes_on(client):
    bad = [
        ("not json", "invalid-request", "could not parse"),
        ("[1, 2]", "invalid-request", "type"),
        ('{"type": "dance"}', "invalid-request", "unknown message type 'dance'"),
        ('{"type": "start", "obj": {"beam_size": 99}}', "invalid-request", "beam size"),
        ('{"type": "start", "obj": {"beam_size": "wide"}}', "invalid-request", "beam_size"),
        ('{"type": "start", "obj": {"model": "huge"}}', "unknown-model", "huge"),
        ('{"type": "start", "obj": {"detect_language": "yes"}}', "invalid-request", "detect_language"),
        ('{"type": "start", "obj": [1]}', "invalid-request", "obj"),
        ('{"type": "stop"}', "invalid-request", "stop without start"),
        (b"\x00\x01", "invalid-request", "JSON text"),
    ]
    for data, code, words in bad:
        client.send_raw(data)
        error = await client.receive()
        assert error["type"] == "error" and error["obj"]["error"] == code, (data, error)
        assert words in error["message"], (data, error)
    # A stop with options that are no good drops its utterance with an error.
    client.send("start")
    await client.until("log")
    client.send("stop", obj={"beam_size": 0})
    assert (await client.receive())["obj"]["error"] == "invalid-request"
    # The session still works.
    messages = await client.utterance(GARAGE)
    assert wer(GARAGE, messages[-1]["obj"]["text"]) <= 0.2, messages[-1]


async def test_bad_offers_get_json_400s_and_the_page_needs_no_key(rtc_url):
    audio_and_data = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    )
    cases = [
        (b"not json", 400, "invalid-request", "JSON"),
        (b'{"sdp": 5, "type": "offer"}', 400, "invalid-request", "sdp"),
        (b'{"sdp": "v=0", "type": "answer"}', 400, "invalid-request", "offer"),
        (
            b'{"sdp": "v=0\\r\\nm=application 9 UDP/DTLS/SCTP x\\r\\n", "type": "offer"}',
            400,
            "invalid-request",
            "audio",
        ),
        (
            b'{"sdp": "v=0\\r\\nm=audio 9 RTP/AVP 0\\r\\n", "type": "offer"}',
            400,
            "invalid-request",
            "data channel",
        ),
        (
            json.dumps({"sdp": audio_and_data, "type": "offer"}).encode(),
            400,
            "invalid-request",
            "SDP",
        ),
    ]
    async with aiohttp.ClientSession(rtc_url, headers=HEADERS) as http:
        for body, status, code, words in cases:
            async with http.post("/api/rtc/asr", data=body) as response:
                answer = await response.json()
                assert response.status == status and answer["error"] == code, (body, answer)
                assert words in answer["message"], (body, answer)
        async with http.post(
            "/api/rtc/asr", params={"model": "huge"}, json={"sdp": audio_and_data, "type": "offer"}
        ) as response:
            assert response.status == 400 and (await response.json())["error"] == "unknown-model"
        async with http.post("/api/rtc/asr", params={"beam_size": "wide"}, json={}) as response:
            assert response.status == 400
    async with aiohttp.ClientSession(rtc_url) as anonymous:
        async with anonymous.post("/api/rtc/asr", json={"sdp": audio_and_data, "type": "offer"}) as response:
            assert response.status == 401 and (await response.json())["error"] == "unauthorized"
        async with anonymous.get("/api/rtc/config") as response:
            assert response.status == 401
        for page in ("/rtc", "/rtc/"):
            async with anonymous.get(page) as response:
                assert response.status == 200 and response.content_type == "text/html"
                assert 'id="talk"' in await response.text()
        async with anonymous.get("/rtc/rtc.js") as response:
            assert response.status == 200 and "api/rtc/asr" in await response.text()
        async with anonymous.get("/rtc/nothing.js") as response:
            assert response.status == 404
    assert await sessions(rtc_url) == 0, "a refused offer leaves no session behind"


async def test_offer_query_sets_the_session_defaults(rtc_url):
    client = RtcClient()
    try:
        await client.connect(rtc_url, HEADERS, params={"beam_size": "1", "detect_language": "true"})
        messages = await client.utterance(OFFICE)
        assert wer(OFFICE, messages[-1]["obj"]["text"]) <= 0.2, messages[-1]
        assert messages[-1]["obj"]["language"] == "en"
    finally:
        await client.close()


async def test_sessions_are_bounded_and_closed_when_the_peer_leaves_or_the_server_stops(base_settings):
    settings = rtc_settings(base_settings, rtc_max_sessions=1)
    url = f"http://127.0.0.1:{settings.http_port}"
    first, second, third = RtcClient(), RtcClient(), RtcClient()
    try:
        async with WisServer(settings):
            await first.connect(url, HEADERS)
            refused = await second.offer(url, HEADERS)
            assert refused["_status"] == 503 and refused["error"] == "overloaded"
            await first.close()  # the peer goes away: its session ends and frees its place
            async with asyncio.timeout(10):
                while await sessions(url):
                    await asyncio.sleep(0.1)
            await third.connect(url, HEADERS)
            assert await sessions(url) == 1
        # The server stopped: it closed the peer connection it had.
        await asyncio.wait_for(third.closed.wait(), 10)
    finally:
        for client in (first, second, third):
            await client.close()


def test_rtc_settings_are_validated():
    args = build_parser().parse_args(
        [
            "serve",
            "--rtc-ice-servers",
            "stun:stun.example.org:3478,turn:me:p%40ss@turn.example.org?transport=tcp",
            "--rtc-interfaces",
            "lo,192.0.2.7",
            "--rtc-ports",
            "40000-40100",
            "--rtc-max-sessions",
            "3",
        ]
    )
    resolved = resolve_settings({k: v for k, v in vars(args).items() if k.startswith("rtc_")}, environ={})
    resolved = resolved.settings
    assert resolved.rtc_ports == (40000, 40100) and resolved.rtc_interfaces == ["lo", "192.0.2.7"]
    assert resolved.rtc_max_sessions == 3
    turn = IceServer.parse(resolved.rtc_ice_servers[1])
    assert turn == IceServer("turn:turn.example.org?transport=tcp", "me", "p@ss")
    assert turn.for_browser() == {"urls": turn.url, "username": "me", "credential": "p@ss"}
    assert IceServer.parse("stun:stun.example.org").for_browser() == {"urls": "stun:stun.example.org"}
    with pytest.raises(ConfigError, match="USER:PASSWORD"):
        IceServer.parse("turn:turn.example.org")
    for name, value in [("rtc_ports", "80-90"), ("rtc_ports", "5000-4000"), ("rtc_ice_servers", "http://x")]:
        with pytest.raises(ConfigError, match=name):
            resolve_settings({name: value}, environ={})
    assert "127.0.0.1" in host_addresses(["lo"]) and host_addresses(["192.0.2.7"]) == ["192.0.2.7"]
    defaults = resolve_settings({}, environ={}).settings
    assert defaults.rtc_ice_servers == [] and defaults.rtc_interfaces is None and defaults.rtc_ports is None


# --- a real browser ---------------------------------------------------------------------------

LEAD_IN, GAP, TAIL = 3.0, 6.0, 3.0  # seconds of silence around the two utterances
# The addresses of the candidate pair the page's connection uses (local, remote).
SELECTED_PAIR = """(async () => {
  const stats = await wisRtc.pc.getStats();
  for (const report of stats.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) {
      const pair = stats.get(report.selectedCandidatePairId);
      return [stats.get(pair.localCandidateId).address, stats.get(pair.remoteCandidateId).address];
    }
  }
  return null;
})()"""


def machine_addresses() -> set[str]:
    return {ip.ip if isinstance(ip.ip, str) else ip.ip[0] for a in ifaddr.get_adapters() for ip in a.ips}


def browser_audio(path: Path, first: Path, second: Path) -> tuple[float, float, float, float]:
    """A WAV for Chromium's fake microphone: silence, `first`, silence, `second`, silence.
    Returns where each utterance starts and ends (seconds)."""
    one, two = decode_file(first), decode_file(second)

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * WHISPER_RATE), np.float32)

    audio = np.concatenate([silence(LEAD_IN), one, silence(GAP), two, silence(TAIL)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WHISPER_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    first_end = LEAD_IN + len(one) / WHISPER_RATE
    second_start = first_end + GAP
    return LEAD_IN, first_end, second_start, second_start + len(two) / WHISPER_RATE


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is installed by scripts/install.sh (as root)"
)
async def test_the_rtc_page_in_chromium_transcribes_two_utterances(rtc_url, tmp_path):
    from .chromium import Chromium

    wav = tmp_path / "microphone.wav"
    _, first_end, second_start, second_end = browser_audio(wav, LIBRI, NEW_YORK)
    async with Chromium.launch(CHROMIUM, wav, tmp_path / "profile") as browser:
        await browser.open(f"{rtc_url}/rtc?api_key={KEY}")
        await browser.wait_for("!document.getElementById('talk').disabled")
        assert await browser.evaluate("location.search") == "", "the key leaves the address bar"
        assert await browser.evaluate("document.getElementById('model').value") == "tiny.en"

        async def microphone_at() -> float:
            """Seconds into the WAV (the fake microphone starts with getUserMedia)."""
            return await browser.evaluate("(performance.now() - wisRtc.micStartedAt) / 1000")

        async def click_when(seconds: float) -> None:
            while await microphone_at() < seconds:
                await asyncio.sleep(0.1)
            await browser.evaluate("document.getElementById('talk').click()")

        await browser.evaluate("document.getElementById('talk').click()")  # connect and talk
        await browser.wait_for("wisRtc.talking", timeout=20)
        assert await microphone_at() < LEAD_IN - 0.5, "connected before the speech starts"
        partials = set()
        while await microphone_at() < first_end + 1.0:
            partials.add(await browser.evaluate("document.getElementById('partial').textContent"))
            await asyncio.sleep(0.2)
        await browser.evaluate("document.getElementById('talk').click()")  # stop
        await browser.wait_for("wisRtc.finals.length === 1", timeout=30)
        await click_when(first_end + 2.0)  # talk again, through the same session
        assert await microphone_at() < second_start - 0.5
        await click_when(second_end + 1.0)
        await browser.wait_for("wisRtc.finals.length === 2", timeout=30)
        texts = await browser.evaluate(
            "[...document.querySelectorAll('#finals li .text')].map((e) => e.textContent).reverse()"
        )
        timing = await browser.evaluate("document.querySelector('#finals li .timing').textContent")
        candidates_seen = await browser.evaluate("wisRtc.pc.remoteDescription.sdp")
        media_path = await browser.evaluate(SELECTED_PAIR)
    assert len([p for p in partials if p]) >= 2, partials
    assert wer(LIBRI, texts[0]) < 0.2, texts[0]
    assert wer(NEW_YORK, texts[1]) <= 0.3, texts[1]
    assert "tiny.en" in timing and "ms after stop" in timing
    assert {address for address, _ in candidates(candidates_seen)} == {"127.0.0.1"}
    # The media went to the server's 127.0.0.1, from one of this machine's own addresses (Chromium
    # picks its socket; none of them is reachable from elsewhere through 127.0.0.1).
    assert media_path[1] == "127.0.0.1" and media_path[0] in machine_addresses(), media_path
