"""The backtest report's risk readings taken where the venues act (summary `worst_before_action`,
`liquidation_events`).

The recorder's `min_health_factor` and `min_margin_ratio` are read at each hour's close, after the venues have
liquidated and the strategy has topped up or deleveraged: they show the book as it was left, never the breach
that caused the action (on `configs/stress.yaml` they read 1.005 and 0.935 where all four venues liquidated).
These readings are the simulated venues' own, at each new market before anything acts on it
(`daemon.venues.book.Reading`), and every liquidation with its time and trigger.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from daemon.data.series import iso
from daemon.venues.book import LiquidationEvent, Reading


class _Exchange(Protocol):
    worst_margin_ratio: Reading | None
    liquidation_events: list[LiquidationEvent]


class _Chain(Protocol):
    worst_health_factor: Reading | None
    liquidation_events: list[LiquidationEvent]


def _reading(r: Reading | None) -> dict[str, str] | None:
    return None if r is None else {"value": f"{r.value:.6f}", "at": iso(r.ts_ns)}


def worst_before_action(chain: _Chain, exchanges: dict[str, Any]) -> dict[str, Any]:
    """{"health_factor": {"value", "at"} | None, "margin_ratio": {venue: {"value", "at"}}} (None: no debt)."""
    return {
        "health_factor": _reading(chain.worst_health_factor),
        "margin_ratio": {name: _reading(e.worst_margin_ratio) for name, e in sorted(exchanges.items())
                         if e.worst_margin_ratio is not None},
    }


def liquidation_events(chain: _Chain, exchanges: dict[str, Any]) -> list[dict[str, str]]:
    """Every liquidation on every venue, in time order (AAVE first within an hour is not implied: venue order)."""
    events: list[LiquidationEvent] = [*chain.liquidation_events]
    for exchange in exchanges.values():
        events.extend(exchange.liquidation_events)
    return [{"venue": e.venue, "at": iso(e.ts_ns), "trigger": e.trigger, "value_before": _s(e.value_before),
             "closed": _s(e.closed), "loss": _s(e.loss), "unit": e.unit}
            for e in sorted(events, key=lambda e: (e.ts_ns, e.venue))]


def _s(value: Decimal) -> str:
    return f"{value:.6f}"
