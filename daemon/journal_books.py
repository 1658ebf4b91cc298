"""The books the journal says we hold: the live runs' venue reports, replayed in the order they were journaled.

Every venue report is journaled before the books see it (`daemon.journal`), and a live run journals its opening
too (`OPENING_VENUE`: the first run's capital as the venues held it, a later run's adoptions), so the books of a
run that died — by kill -9 or otherwise — are the journal's reports from the last first run on, each once. A
restart opens on them (`daemon.live_opening`): the P&L, the fees, the funding and every earlier correction carry
over instead of starting again from whatever the venues hold, and what the venues hold beyond them is explained (a
fill or a transaction the dead run never journaled, funding paid while down, a transfer that landed) or else found
by the start-up reconciliation, which books it as `reconciliation` and halts above its limit.

A report's key is unique within a run (`venue:trade id`, `venue:report id`); a later run may journal one again (a
backstop re-reading an old trade), and it counts once, where it first appeared. Reads only: the file is opened
read-only beside the running daemon's own connection (WAL).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from daemon.domain.booking import fill_change_set
from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import ChangeSet, PerpChange, Reason, TokenChange
from daemon.domain.messages import FillReport, Side

OPENING_VENUE = "opening"  # the venue name of a run's journaled opening (report key "opening:run-<n>")


class JournalBooksError(ValueError):
    """A journaled report that cannot be read back as a change of the books (the file is damaged)."""


@dataclass(frozen=True, slots=True)
class JournalBooks:
    """The live runs' reports from the last first run (`base_run`) on, in order, each once."""

    base_run: int | None  # None: no live run journaled an opening (a first start, or a journal from before this)
    changes: tuple[tuple[str, ChangeSet], ...]  # (report key, its change), oldest first
    runs: tuple[int, ...]  # the runs replayed
    since_ns: int = 0  # the wall time of the base run's opening: what happened before it is in that opening

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(key for key, _ in self.changes)


def opening_key(run: int) -> str:
    return f"{OPENING_VENUE}:run-{run}"


def read_journal_books(path: Path) -> JournalBooks:
    """Every report of the live runs from the last one whose opening was its capital (`Reason.INITIAL_CAPITAL`)."""
    if not path.exists():
        return JournalBooks(None, (), ())
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        live = [int(r) for (r,) in db.execute("SELECT run FROM runs WHERE runtime_mode = 'live' ORDER BY run")]
        base, since_ns = None, 0
        for run in reversed(live):
            row = db.execute("SELECT body FROM venue_reports WHERE run = ? AND report_key = ?",
                             (run, opening_key(run))).fetchone()
            if row is not None and json.loads(row[0])["change"]["reason"] == Reason.INITIAL_CAPITAL.value:
                base, since_ns = run, int(json.loads(row[0])["change"]["ts_ns"])
                break
        if base is None:
            return JournalBooks(None, (), ())
        runs = tuple(r for r in live if r >= base)
        marks = ", ".join("?" for _ in runs)
        rows = db.execute(f"SELECT report_key, kind, body FROM venue_reports WHERE run IN ({marks}) ORDER BY seq",
                          runs).fetchall()
    finally:
        db.close()
    seen: set[str] = set()
    changes: list[tuple[str, ChangeSet]] = []
    for key, kind, body in rows:
        if key in seen:
            continue
        seen.add(key)
        try:
            changes.append((key, _change(kind, json.loads(body))))
        except (KeyError, TypeError, ValueError, ArithmeticError) as e:
            raise JournalBooksError(f"the journaled report {key} ({kind}) cannot be read back: "
                                    f"{type(e).__name__}: {e}") from None
    return JournalBooks(base, tuple(changes), runs, since_ns)


def _change(kind: str, body: dict[str, Any]) -> ChangeSet:
    if kind == "FillReport":
        return fill_change_set(FillReport(
            VenueId(body["venue"]), TradeId(body["trade_id"]), ClientOrderId(body["client_order_id"]),
            VenueOrderId(body.get("venue_order_id") or ""), InstrumentId(body["instrument_id"]), Side(body["side"]),
            Decimal(body["quantity"]), Decimal(body["price"]), Decimal(body["fee"]), body["fee_currency"],
            int(body["ts_event"]), int(body["ts_recv"])))
    change = body["change"]  # BalancesChanged and its subclasses (a funding payment): the change set itself
    return ChangeSet(Reason(change["reason"]), int(change["ts_ns"]),
                     tuple(TokenChange(t["account"], t["token"], Decimal(t["delta"])) for t in change["tokens"]),
                     tuple(PerpChange(p["venue"], p["instrument"], Decimal(p["delta_qty"]), Decimal(p["price"]))
                           for p in change["perps"]),
                     change.get("ref") or "")
