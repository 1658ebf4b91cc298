"""The journal: append-only SQLite, exact values, a report recorded once per run, and a failing disk reported
instead of raised."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.messages import FillReport, Side
from daemon.journal import Journal

FILL = FillReport(VenueId("binance"), TradeId("binance-t1"), ClientOrderId("i1-2"), VenueOrderId("binance-1"),
                  InstrumentId("binance:Perp:ETHUSDT"), Side.SELL, Decimal("5.882"), Decimal("3399.26"),
                  Decimal("9.99708268"), "USDT", 1, 2)


def test_a_fill_is_kept_exactly_once_per_run_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite"
    journal = Journal(path, "replay", "configs/replay.yaml", 0)
    assert journal.record_report(10, "binance", "binance:binance-t1", "FillReport", FILL)
    assert not journal.record_report(11, "binance", "binance:binance-t1", "FillReport", FILL)  # sent twice
    journal.record_order(9, "i1-2", "i1", "intent", {"quantity": Decimal("5.882")})
    journal.record_order(12, "i1-2", "i1", "filled", {"status": "filled"})
    journal.close()
    again = Journal(path, "replay", "configs/replay.yaml", 1)  # the next process: a new run
    assert again.run == journal.run + 1 and again.report_keys() == []
    assert again.record_report(20, "binance", "binance:binance-t1", "FillReport", FILL)  # a replay numbers afresh
    assert again.report_keys(run=journal.run) == ["binance:binance-t1"]
    assert again.order_events("i1-2", run=journal.run) == ["intent", "filled"]
    again.close()
    with sqlite3.connect(path) as db:  # what an operator sees with the sqlite3 shell
        (body,) = db.execute("SELECT body FROM venue_reports WHERE run = 1").fetchone()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert json.loads(body)["price"] == "3399.26" and json.loads(body)["side"] == "SELL"  # exact, readable
    assert mode == "wal"


def test_a_write_that_fails_is_reported_once_and_never_raised(tmp_path: Path) -> None:
    problems: list[str] = []
    journal = Journal(tmp_path / "journal.sqlite", "replay", "x", 0, on_failure=problems.append)
    journal.close()  # as good as a vanished disk: every write now fails
    assert not journal.record_report(1, "binance", "binance:t9", "FillReport", FILL)
    journal.record_order(2, "c", "i", "intent", {})
    assert len(problems) == 1 and "cannot be written" in problems[0] and journal.failed
