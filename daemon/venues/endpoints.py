"""Where the venue clients connect: the real venues, or — for tests and demos only — a local exchange fake.

`venue_redirect` (settings) sends the venues' own host names (binance.com, bybit.com, okx.com and their
subdomains) to one loopback address and refuses every other name, so nothing reaches the internet; TLS stays on
and is verified, host name included, against the one certificate named (the system's trust store is not loaded).
ccxt keeps its real URLs, so it behaves exactly as against the venues (its error mapping depends on the host).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

VENUE_DOMAINS = ("binance.com", "bybit.com", "okx.com")


class RefusedHost(OSError):
    """A name outside the venues while redirected: refused, never resolved."""


def is_venue_host(host: str) -> bool:
    host = host.rstrip(".").lower()
    return any(host == d or host.endswith("." + d) for d in VENUE_DOMAINS)


class RedirectResolver(AbstractResolver):
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if not is_venue_host(host):
            raise RefusedHost(f"venue_redirect refuses {host!r}: not a venue host")
        return [ResolveResult(hostname=host, host=self._host, port=self._port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def redirected_session(address: str, ca_file: Path) -> aiohttp.ClientSession:
    """A session for ccxt whose venue hosts go to `address` (host:port), trusting `ca_file` alone."""
    host, _, port = address.rpartition(":")
    host = "127.0.0.1" if host.lower() == "localhost" else host.strip("[]")
    context = ssl.create_default_context(cafile=str(ca_file))  # verifies the chain and the host name
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=RedirectResolver(host, int(port)),
                                                                ssl=context))
