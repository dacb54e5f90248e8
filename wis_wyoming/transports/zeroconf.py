"""Zeroconf: advertise `_wyoming._tcp` so Home Assistant discovers the server.

The wyoming library advertises whatever host the server is bound to, so a server bound to
0.0.0.0 tells Home Assistant to connect to 0.0.0.0. Here a wildcard bind advertises the
machine's real interface addresses instead.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket

import ifaddr
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
_WILDCARDS = ("", "0.0.0.0", "::")


def _usable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast
    )


def interface_addresses(ipv6: bool) -> list[str]:
    """Addresses of this machine's interfaces that another host could connect to."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                address = ipaddress.ip_address(raw.split("%")[0])
            except ValueError:
                continue
            if _usable(address) and (address.version == 4 or ipv6) and str(address) not in found:
                found.append(str(address))
    return found


def advertised_addresses(bind_host: str) -> list[str]:
    """What to publish for a server bound to `bind_host`."""
    if bind_host not in _WILDCARDS:
        try:
            address = ipaddress.ip_address(bind_host)
        except ValueError:
            address = ipaddress.ip_address(socket.gethostbyname(bind_host))
        return [str(address)]
    addresses = interface_addresses(ipv6=bind_host == "::")
    if not addresses:
        _LOGGER.warning("No network interface besides loopback; advertising 127.0.0.1")
        addresses = ["127.0.0.1"]
    return addresses


def _host_label() -> str:
    label = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]).strip("-")
    return label or "wis-wyoming"


class ZeroconfAdvertiser:
    def __init__(
        self, name: str, port: int, addresses: list[str], interfaces: list[str] | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.addresses = addresses
        self._zeroconf = AsyncZeroconf(
            interfaces=interfaces or InterfaceChoice.All,
            ip_version=IPVersion.All if any(":" in a for a in addresses) else IPVersion.V4Only,
        )
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            parsed_addresses=addresses,
            port=port,
            server=f"{_host_label()}.local.",
            properties={"version": "1"},
        )

    async def start(self) -> None:
        # allow_name_change: a second server with the same name on the LAN gets "name (2)".
        # The call returns a task that probes and announces; wait for it to finish.
        await (await self._zeroconf.async_register_service(self._info, allow_name_change=True))
        _LOGGER.info(
            "Zeroconf: advertising %s at %s port %d", self._info.name, ", ".join(self.addresses), self.port
        )

    async def stop(self) -> None:
        # As with registering: the returned task sends the goodbye packets.
        await (await self._zeroconf.async_unregister_service(self._info))
        await self._zeroconf.async_close()
        _LOGGER.info("Zeroconf: withdrew %s", self._info.name)
