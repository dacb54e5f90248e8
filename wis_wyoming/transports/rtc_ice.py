"""Where WebRTC media may flow: ICE servers, host addresses and UDP ports for aiortc.

aiortc gathers ICE candidates with aioice, which (0.13) has no setting for either: it offers
every address of the machine but loopback, each on an ephemeral UDP port. Two hooks narrow it
for wis_wyoming's own peer connections, and leave every other user of aioice as it was:
- each ICE connection's `get_component_candidates` is wrapped to gather on the configured
  addresses only (127.0.0.1 among them if asked for: aioice never offers it by itself);
- while it gathers, a context variable names the port range, and the event loop's
  `create_datagram_endpoint` (wrapped once per loop; it changes nothing for other callers)
  binds the first free port of the range where aioice asks for port 0. WIS restricts its ports
  with the same hook.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import ifaddr
from aioice import Candidate
from aiortc import RTCIceServer, RTCPeerConnection

from ..errors import ConfigError

_LOGGER = logging.getLogger(__name__)

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
_GATHER_PORTS: ContextVar[tuple[int, int] | None] = ContextVar("wis_rtc_gather_ports", default=None)
_HOOKED_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, written `turn:USER:PASSWORD@HOST:PORT[?transport=tcp]` when it
    needs credentials."""

    url: str
    username: str | None = None
    credential: str | None = None

    @classmethod
    def parse(cls, text: str) -> IceServer:
        scheme, _, rest = text.strip().partition(":")
        if scheme.lower() not in ICE_SCHEMES or not rest.strip("/"):
            raise ConfigError(
                f"ICE server {text!r} must be stun:HOST[:PORT] or turn:[USER:PASSWORD@]HOST[:PORT]"
            )
        rest = rest.lstrip("/")
        username = credential = None
        if "@" in rest:
            userinfo, rest = rest.rsplit("@", 1)
            username, _, credential = userinfo.partition(":")
            username, credential = unquote(username), unquote(credential)
        if scheme.lower().startswith("turn") and not (username and credential):
            raise ConfigError(f"TURN server {text!r} needs turn:USER:PASSWORD@HOST[:PORT]")
        return cls(f"{scheme.lower()}:{rest}", username, credential)

    def for_aiortc(self) -> RTCIceServer:
        return RTCIceServer(urls=self.url, username=self.username, credential=self.credential)

    def for_browser(self) -> dict[str, Any]:
        """As an `RTCIceServer` dictionary of the browser's `RTCPeerConnection`."""
        server: dict[str, Any] = {"urls": self.url}
        if self.username is not None:
            server |= {"username": self.username, "credential": self.credential}
        return server


def host_addresses(names: Sequence[str]) -> list[str]:
    """The addresses named: IP addresses as they are, interface names (`eth0`, `lo`) as their
    addresses (IPv6 ones only if global: a link-local address needs a scope)."""
    found: list[str] = []
    adapters = None
    for name in names:
        try:
            found.append(str(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        adapters = adapters if adapters is not None else ifaddr.get_adapters()
        for adapter in adapters:
            if name in (adapter.name, adapter.nice_name):
                for ip in adapter.ips:
                    if isinstance(ip.ip, str):
                        found.append(ip.ip)
                    elif ip.ip[2] == 0 and not ipaddress.ip_address(ip.ip[0]).is_link_local:
                        found.append(ip.ip[0])
    return list(dict.fromkeys(found))


def restrict_gathering(
    pc: RTCPeerConnection, addresses: Sequence[str] | None, ports: tuple[int, int] | None
) -> None:
    """Make `pc` gather host candidates on `addresses` only (None: aioice's choice) and on UDP
    ports in `ports` (None: ephemeral). Call it once the transports exist (after
    `setRemoteDescription`, or `addTrack` and `createDataChannel`) and before
    `setLocalDescription`, which gathers."""
    if addresses is None and ports is None:
        return
    if ports is not None:
        _bind_ports_on(asyncio.get_running_loop())
    chosen = None if addresses is None else list(addresses)
    for connection in _ice_connections(pc):
        gather = connection.get_component_candidates

        async def restricted(
            component: int, addresses: list[str], timeout: int = 5, _gather: Any = gather
        ) -> list[Candidate]:
            token = _GATHER_PORTS.set(ports)
            try:
                return await _gather(
                    component=component, addresses=addresses if chosen is None else chosen, timeout=timeout
                )
            finally:
                _GATHER_PORTS.reset(token)

        connection.get_component_candidates = restricted


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    dtls = [transceiver.receiver.transport for transceiver in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls.append(pc.sctp.transport)
    gatherers = {id(t.transport.iceGatherer): t.transport.iceGatherer for t in dtls}
    # aiortc keeps each gatherer's aioice connection private; it is the only way in.
    return [gatherer._connection for gatherer in gatherers.values()]


def _bind_ports_on(loop: asyncio.AbstractEventLoop) -> None:
    if loop in _HOOKED_LOOPS:
        return
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        ports = _GATHER_PORTS.get()
        if ports is None or local_addr is None or local_addr[1] != 0:
            return await original(protocol_factory, local_addr=local_addr, **kwargs)
        host = local_addr[0]
        for port in range(ports[0], ports[1] + 1):
            try:
                return await original(protocol_factory, local_addr=(host, port), **kwargs)
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise
        _LOGGER.warning("No free UDP port from %d to %d on %s for WebRTC", ports[0], ports[1], host)
        raise OSError(errno.EADDRINUSE, f"no free UDP port from {ports[0]} to {ports[1]} on {host}")

    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]
    _HOOKED_LOOPS.add(loop)
