"""What a venue's market data source answers (`daemon.replay.live_feed.MarketSource`): kept apart from the ccxt
sources so that the feed, and every world that does not trade live, never imports ccxt (half a second a process)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class PerpQuote:
    asset: str
    mark: Decimal
    funding_rate: Decimal
    settles_at_ns: int | None  # the next funding settlement, which `funding_rate` is for
    ts_ns: int  # the venue's time of the data (else when we received it)


@dataclass(frozen=True, slots=True)
class SpotQuote:
    asset: str
    price: Decimal
    ts_ns: int
