"""A simulated venue's own records: the ground truth it answers from, kept apart from the daemon's books.

A real exchange or chain refuses what its account cannot pay for and liquidates what its margin cannot carry,
whatever the client believes it holds. The simulated venues therefore keep their own book of the accounts they
hold — with the domain ledger's arithmetic, so that the venue's records and the daemon's can be compared to the
last digit — and check every operation against it before reporting it.
"""

from __future__ import annotations

from dataclasses import replace

from daemon.domain.ledger import ChangeSet, Ledger, LedgerError
from daemon.errors import NonRetryableVenueError


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
