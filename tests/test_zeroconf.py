"""Zeroconf: a python-zeroconf browser on this host finds the server at a real address."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from wis_wyoming.app import WisServer
from wis_wyoming.transports.zeroconf import SERVICE_TYPE, advertised_addresses

# mDNS stays on loopback in tests: nothing is multicast onto a real network.
LOOPBACK = ["127.0.0.1"]


async def test_server_is_discovered_with_a_real_address_and_withdrawn_on_stop(base_settings):
    settings = replace(
        base_settings,
        uri="tcp://0.0.0.0:0",
        models=["tiny.en"],
        zeroconf="wis-test-kitchen",
        zeroconf_interfaces=LOOPBACK,
    )
    browser_zc = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    events: asyncio.Queue[tuple[str, ServiceStateChange]] = asyncio.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        events.put_nowait((name, state_change))

    browser = AsyncServiceBrowser(browser_zc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    server = WisServer(settings)
    try:
        await server.start()
        name, change = await asyncio.wait_for(events.get(), 15)
        assert name == f"wis-test-kitchen.{SERVICE_TYPE}" and change is ServiceStateChange.Added
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(browser_zc.zeroconf, 5000)
        addresses = info.parsed_addresses()
        assert info.port == server.port
        assert addresses and "0.0.0.0" not in addresses
        assert addresses == advertised_addresses("0.0.0.0")
        await server.stop()
        name, change = await asyncio.wait_for(events.get(), 15)
        assert change is ServiceStateChange.Removed
    finally:
        await server.stop()
        await browser.async_cancel()
        await browser_zc.async_close()


def test_specific_bind_address_is_advertised_as_is():
    assert advertised_addresses("127.0.0.1") == ["127.0.0.1"]
    assert advertised_addresses("localhost") == ["127.0.0.1"]


def test_wildcard_bind_never_advertises_a_wildcard_or_loopback_when_a_real_interface_exists():
    addresses = advertised_addresses("0.0.0.0")
    assert addresses and "0.0.0.0" not in addresses
    assert all(":" not in a for a in addresses)  # 0.0.0.0 accepts IPv4 only
