"""A simulated venue's own records: the ground truth it answers from, kept apart from the daemon's books.

A real exchange or chain refuses what its account cannot pay for and liquidates what its margin cannot carry,
whatever the client believes it holds. The simulated venues therefore keep their own book of the accounts they
hold — with the domain ledger's arithmetic, so that the venue's records and the daemon's can be compared to the
last digit — and check every operation against it before reporting it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from daemon.domain.ledger import ChangeSet, Ledger, LedgerError
from daemon.errors import NonRetryableVenueError


@dataclass(frozen=True, slots=True)
class Reading:
    """The worst value of a risk measure a venue saw, and when: read at each new market *before* the venue acts
    on it (liquidates) and before the strategy can (tops up, deleverages), so a breach the action then repairs is
    still on record. Readings taken after the hour's actions (the recorder's hourly rows) never show it."""

    value: Decimal
    ts_ns: int


@dataclass(frozen=True, slots=True)
class LiquidationEvent:
    """One liquidation a venue carried out: when, the measure that triggered it (margin ratio or health factor,
    as read before acting), and what it took (USDT for an exchange's clearance fee, ETH for AAVE's bonus)."""

    venue: str
    ts_ns: int
    trigger: str  # "margin_ratio" | "health_factor"
    value_before: Decimal
    closed: Decimal  # perp notional closed (USDT), or debt repaid (ETH)
    loss: Decimal  # the fee taken (USDT), or the collateral seized beyond the debt repaid (ETH)
    unit: str


def worse(seen: Reading | None, value: Decimal, ts_ns: int) -> Reading:
    """The lower of a previous worst reading and a new one (the first seen wins a tie: the earliest time)."""
    return seen if seen is not None and seen.value <= value else Reading(value, ts_ns)


def leg(change: ChangeSet, account: str) -> ChangeSet | None:
    """The part of `change` that touches `account` (a venue's own side of a transfer), or None."""
    tokens = tuple(t for t in change.tokens if t.account == account)
    perps = tuple(p for p in change.perps if p.venue == account)
    if not tokens and not perps:
        return None
    return replace(change, tokens=tokens, perps=perps)


def record(book: Ledger, change: ChangeSet, account: str) -> None:
    """Record `account`'s side of `change` in the venue's book, or refuse the whole operation as the venue would
    (the book is unchanged: the ledger applies atomically)."""
    part = leg(change, account)
    if part is None:
        return
    try:
        book.apply(part)
    except LedgerError as exc:
        raise NonRetryableVenueError(f"{account} refused {change.reason}: {exc}") from None
