"""Headless Chromium driven over the DevTools protocol, with a WAV file as its microphone.

Everything stays on 127.0.0.1: the DevTools socket, the page, and the page's WebRTC media
(`--allow-loopback-in-peer-connection`, real host addresses instead of mDNS names, no STUN).
Google's background services are switched off, so the browser calls nobody else either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--no-proxy-server",
    "--dns-prefetch-disable",
    # mDNS: host candidates as addresses, not .local names; no cast discovery on the network.
    "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,DialMediaRouteProvider,OptimizationHints",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Chromium:
    def __init__(self, process: asyncio.subprocess.Process, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.process = process
        self.socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, executable: str, microphone: Path, profile: Path) -> AsyncIterator[Chromium]:
        """Chromium whose microphone plays `microphone` once (from getUserMedia on), then silence."""
        process = await asyncio.create_subprocess_exec(
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--use-file-for-fake-audio-capture={microphone}%noloop",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        session = aiohttp.ClientSession()
        drain = None
        try:
            endpoint = await asyncio.wait_for(_devtools_endpoint(process), 30)
            drain = asyncio.create_task(_drain(process))  # a full pipe would stall the browser
            port = endpoint.split(":")[2].split("/")[0]
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [target for target in await response.json() if target["type"] == "page"]
            socket = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
            browser = cls(process, socket)
            try:
                yield browser
            finally:
                await browser.close()
        finally:
            await session.close()
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            if drain is not None:
                drain.cancel()

    async def send(self, method: str, **params: Any) -> dict:
        key = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[key] = answer
        await self.socket.send_json({"id": key, "method": method, "params": params})
        reply = await asyncio.wait_for(answer, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(RuntimeError):  # a page still loading has no such name
                    if await self.evaluate(f"!!({condition})"):
                        return
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self.socket.close()

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            answer = self._waiting.pop(data.get("id", -1), None)
            if answer is not None and not answer.done():
                answer.set_result(data)


async def _devtools_endpoint(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    seen = []
    while line := await process.stderr.readline():
        text = line.decode(errors="replace")
        seen.append(text)
        if match := _LISTENING.search(text):
            return match.group(1)
    raise RuntimeError("Chromium exited before its DevTools socket opened:\n" + "".join(seen[-20:]))


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stderr is not None
    while await process.stderr.readline():
        pass
