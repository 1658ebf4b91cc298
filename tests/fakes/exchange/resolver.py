"""An aiohttp resolver that sends the venues' host names to the fake and refuses every other name."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

VENUE_DOMAINS = ("binance.com", "bybit.com", "okx.com")


class RefusedHost(OSError):
    """A name outside the venues: nothing may reach the internet from a test."""


def is_venue_host(host: str, domains: tuple[str, ...] = VENUE_DOMAINS) -> bool:
    host = host.rstrip(".").lower()
    return any(host == d or host.endswith("." + d) for d in domains)


class VenueResolver(AbstractResolver):
    def __init__(self, port: int, domains: tuple[str, ...] = VENUE_DOMAINS) -> None:
        self._port = port
        self._domains = domains

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not is_venue_host(host, self._domains):
            raise RefusedHost(f"exchange fake resolver refuses {host!r}: not a venue host")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self._port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None
