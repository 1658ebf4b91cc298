"""The journal: append-only SQLite, exact values, a report recorded once per run, and a failing disk reported
instead of raised."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.messages import FillReport, OrderRejected, Side
from daemon.errors import ConfigError
from daemon.journal import Journal
from daemon.log import register_secrets

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


def test_a_clean_stop_marks_the_run_s_end_and_the_next_run_finds_nothing_amiss(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = Journal(path, "replay", "x", 1)
    first.close("signal SIGTERM")
    first.close("again")  # the composition root's finally may close twice: the first end stands
    second = Journal(path, "replay", "x", 2)
    assert second.previous_unclean is None
    second.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT run, ended_ns IS NOT NULL, end_reason, previous_unclean FROM runs").fetchall()
    assert rows == [(1, 1, "signal SIGTERM", None), (2, 1, "stopped", None)]


def test_a_run_that_ended_without_a_marker_is_named_by_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    killed = Journal(path, "replay", "x", 1_700_000_000_000_000_000)
    killed.record_trading_state(5, "ACTIVE", "HALTED", "operator", "audit")
    # No close(): as after SIGKILL, an OOM kill or a power cut (the process never ran its `finally`).
    nxt = Journal(path, "replay", "x", 1_700_000_100_000_000_000)
    unclean = nxt.previous_unclean
    assert unclean is not None and unclean["run"] == killed.run and unclean["records"] == 1
    assert unclean["started"] == "2023-11-14T22:13:20.000+00:00"
    assert unclean["last_record"] is not None and unclean["last_record"] > "2024"  # the wall clock of the write
    nxt.close()
    with sqlite3.connect(path) as db:
        (recorded,) = db.execute("SELECT previous_unclean FROM runs WHERE run = ?", (nxt.run,)).fetchone()
    assert json.loads(recorded)["run"] == killed.run  # `basisd status` and the sqlite3 shell can show it
    assert Journal(path, "replay", "x", 3).previous_unclean is None  # said once: the run after a clean one is clean


def test_a_journal_written_by_an_older_daemon_is_migrated_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:  # the schema before end markers and wall clocks
        db.executescript("""
            CREATE TABLE runs (run INTEGER PRIMARY KEY AUTOINCREMENT, started_ns INTEGER NOT NULL,
                               runtime_mode TEXT NOT NULL, config TEXT NOT NULL);
            CREATE TABLE trading_state (seq INTEGER PRIMARY KEY AUTOINCREMENT, run INTEGER NOT NULL,
                recorded_ns INTEGER NOT NULL, previous TEXT NOT NULL, current TEXT NOT NULL, source TEXT NOT NULL,
                reason TEXT NOT NULL);
            INSERT INTO runs (started_ns, runtime_mode, config) VALUES (1, 'replay', 'x');
            INSERT INTO trading_state (run, recorded_ns, previous, current, source, reason)
                VALUES (1, 2, 'ACTIVE', 'HALTED', 'operator', 'old');
        """)
    journal = Journal(path, "replay", "x", 3)
    assert journal.run == 2
    assert journal.previous_unclean is None  # an older daemon wrote no end markers: its runs cannot be judged
    journal.record_trading_state(4, "HALTED", "ACTIVE", "operator", "resumed")
    journal.record_order(5, "c1", "i1", "intent", {})
    journal.close()
    with sqlite3.connect(path) as db:
        states = db.execute("SELECT run, reason, wall_ns IS NULL FROM trading_state ORDER BY seq").fetchall()
        ended = db.execute("SELECT run, end_reason FROM runs ORDER BY run").fetchall()
    assert states == [(1, "old", 1), (2, "resumed", 0)]
    assert ended == [(1, None), (2, "stopped")]


def test_free_text_with_a_registered_secret_is_redacted_before_it_reaches_the_file(tmp_path: Path) -> None:
    secret = "journal-secret-Kd93v"
    register_secrets([secret])
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, "replay", "x", 1)
    journal.record_trading_state(2, "ACTIVE", "HALTED", "operator", f"operator: key {secret} leaked")
    journal.record_order(3, "c1", "i1", "error", {"error": f"401 for https://x/?apiKey={secret}", "kind": "VenueError"})
    journal.record_order(4, "c1", "i1", "rejected", {"status": "rejected", "reason": f"bad key {secret}"})
    # A message itself (a dataclass), nested as a venue report carries it, is redacted the same way.
    journal.record_order(5, "c1", "i1", "rejected", [OrderRejected(ClientOrderId("c1"), InstrumentId("x"),
                                                                    f"venue says {secret}", 1, 1)])
    journal.close(f"stopped, secret {secret}")
    on_disk = b"".join(f.read_bytes() for f in tmp_path.iterdir())  # the database, and its WAL if one is left
    assert secret.encode() not in on_disk
    with sqlite3.connect(path) as db:
        (reason,) = db.execute("SELECT reason FROM trading_state").fetchone()
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM orders ORDER BY seq")]
    assert reason == "operator: key ********** leaked"
    assert bodies[0] == {"error": "401 for https://x/?apiKey=**********", "kind": "VenueError"}
    assert bodies[1]["reason"] == "bad key **********"
    assert bodies[2][0]["reason"] == "venue says **********"


def test_a_file_that_is_not_a_journal_is_refused_naming_it_and_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"not a database, just some bytes that happen to be here" * 100)
    with pytest.raises(ConfigError) as refused:
        Journal(path, "replay", "configs/paper.yaml", 1)
    assert refused.value.exit_code == 78
    (problem,) = refused.value.problems
    assert problem.source == "configs/paper.yaml" and problem.key == "runtime.state_dir"
    assert str(path) in problem.message and "not a database" in problem.message
