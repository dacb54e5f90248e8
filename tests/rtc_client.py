"""A WebRTC client in process (aiortc), speaking real recordings to /api/rtc/asr at real-time pace.

It gathers ICE candidates on 127.0.0.1 only and knows no STUN server, so no packet leaves the
machine: the same restriction the server applies with `rtc_interfaces`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpByePacket

from wis_wyoming.engine.audio import WHISPER_RATE, decode_file
from wis_wyoming.transports.rtc_ice import restrict_gathering

FRAME_SAMPLES = WHISPER_RATE // 50  # 20 ms, as a browser sends
LOOPBACK = ["127.0.0.1"]


class SpeechTrack(MediaStreamTrack):
    """A microphone that says the clips it is given, in real time, and is silent otherwise.

    After a pause (the sender stopped asking for frames) it goes on from the present, as a
    microphone would, instead of catching up."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, np.int16)
        self._pts = 0
        self._due: float | None = None
        self.drained = asyncio.Event()
        self.drained.set()

    def say(self, clip: Path) -> None:
        audio = decode_file(clip)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        self._pending = np.concatenate([self._pending, pcm])
        self.drained.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = asyncio.get_running_loop().time()
        if self._due is None or now - self._due > 0.1:  # the first frame, or the end of a pause
            if self._due is not None:
                self._pts += int((now - self._due) * WHISPER_RATE)
            self._due = now
        else:
            await asyncio.sleep(self._due - now)
        chunk, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
        if not len(self._pending):
            self.drained.set()
        chunk = np.pad(chunk, (0, FRAME_SAMPLES - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WHISPER_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, WHISPER_RATE)
        self._pts += FRAME_SAMPLES
        self._due += FRAME_SAMPLES / WHISPER_RATE
        return frame


class RtcClient:
    """One session: `connect`, then `send` messages and `receive` the server's."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = SpeechTrack()
        self.sender = self.pc.addTransceiver("audio", direction="sendonly").sender
        self.channel = self.pc.createDataChannel("wis", ordered=True)
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.channel.on("message", lambda data: self.messages.put_nowait(json.loads(data)))
        self.channel.on("close", self.closed.set)
        self.answer: dict[str, Any] = {}

    async def offer(self, url: str, headers: dict[str, str], params: dict[str, str] | None = None) -> dict:
        """POSTs the offer; returns the JSON answer (or error) with its status as `_status`."""
        restrict_gathering(self.pc, LOOPBACK, None)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/api/rtc/asr", json=body, headers=headers, params=params) as response,
        ):
            return {**await response.json(), "_status": response.status}

    async def connect(self, url: str, headers: dict[str, str], params: dict[str, str] | None = None) -> None:
        opened = asyncio.Event()
        self.channel.on("open", opened.set)
        answer = await self.offer(url, headers, params)
        assert answer.pop("_status") == 200, answer
        self.answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(opened.wait(), 20)

    def send(self, kind: str, message: str | None = None, obj: dict | None = None) -> None:
        self.channel.send(json.dumps({"type": kind, "message": message, "obj": obj}))

    def send_raw(self, data: str | bytes) -> None:
        self.channel.send(data)

    async def receive(self, timeout: float = 30) -> dict:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def until(self, kind: str, timeout: float = 60) -> list[dict]:
        """Every message up to and including the next one of `kind`."""
        seen: list[dict] = []
        async with asyncio.timeout(timeout):
            while not seen or seen[-1]["type"] != kind:
                seen.append(await self.messages.get())
        return seen

    def unmute(self) -> None:
        self.sender.replaceTrack(self.microphone)

    async def pause(self, bye: bool = True) -> None:
        """Stop sending audio, as a browser's `replaceTrack(null)` does, with the RTCP BYE that
        can come with it."""
        self.sender.replaceTrack(None)
        if bye:
            await self.sender._send_rtcp([RtcpByePacket(sources=[self.sender._ssrc])])

    async def utterance(self, clip: Path, start: dict | None = None, stop: dict | None = None) -> list[dict]:
        """start, the clip and 0.6 s of silence in real time, stop: the messages up to `infer`
        (the `log` after it is read too)."""
        self.send("start", obj=start)
        seen = await self.until("log")
        self.unmute()
        self.microphone.say(clip)
        await self.microphone.drained.wait()
        await asyncio.sleep(0.6)
        self.send("stop", obj=stop)
        await self.pause(bye=False)
        seen += await self.until("infer")
        await self.until("log")  # the timings, WIS's way
        return seen

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()
