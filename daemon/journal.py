"""The journal: an append-only SQLite record (WAL) of what the daemon was told and what it did.

Every venue report is written here before the books see it (DESIGN §3: "a fill is journaled before it is
published"), every order before it is sent and its outcome after, every change of the trading state with who
made it, and every reconciliation's findings. A crash can therefore lose nothing the daemon had acted on: the
journal says which fills it had, which orders it had sent (and may have to ask the venue about by client order
id), who halted it and why, and what the last reconciliation found. Recovery — rebuilding the books from it at
start-up — comes with the live adapters; today the journal is the durable audit trail under `runtime.state_dir`.

Writes are synchronous (`synchronous=FULL`: each commit is on disk before the call returns), so a fill is never
reported onwards before it is durable. Values are JSON with exact decimals as strings. A venue report is keyed by
(venue, trade id or report id) within a run: a report the venue sends twice is recorded once. Each process
start is a run (`runs`), so a replay's simulated venues, which number their reports afresh, never collide.

A run that stops cleanly gets an end marker (`runs.ended_ns`, `end_reason`). A run without one ended without
the daemon knowing (SIGKILL, OOM, power loss): the next run says so at start-up (`previous_run_unclean`, and
`runs.previous_unclean` of the new run), since what the dead run did last may not have reached the books.
Every row also carries the wall clock of its write (`wall_ns`: `recorded_ns` is the daemon's clock, market
time in a replay), so "the last record" of a dead run is a time an operator can compare with their own.

Free text (trading-state reasons, errors, a venue's reason) is redacted of every registered secret before it is
written: the file outlives the process and is read with the `sqlite3` shell.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import ConfigError, ConfigProblem
from daemon.redaction import FREE_TEXT_KEYS, redact_text

log = structlog.get_logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ns INTEGER NOT NULL,         -- wall clock
    runtime_mode TEXT NOT NULL,          -- live | paper | replay
    config TEXT NOT NULL,
    ended_ns INTEGER,                    -- wall clock of a clean stop; NULL: running, or ended unseen (killed)
    end_reason TEXT,
    previous_unclean TEXT                -- JSON: the run before this one, had it no end marker
);
CREATE TABLE IF NOT EXISTS venue_reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,        -- our clock when it was journaled
    wall_ns INTEGER,                     -- the wall clock when it was journaled
    venue TEXT NOT NULL,
    report_key TEXT NOT NULL,            -- venue:trade_id (a fill) or venue:report_id (any other balance change)
    kind TEXT NOT NULL,                  -- FillReport | BalancesChanged
    body TEXT NOT NULL,                  -- the report, JSON
    UNIQUE (run, report_key)             -- (a replay's simulated venues number their reports afresh each run)
);
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    client_order_id TEXT NOT NULL,
    instruction_id TEXT NOT NULL,
    event TEXT NOT NULL,                 -- intent (before sending) | accepted | filled | rejected | canceled | error
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_client_id ON orders (client_order_id);
CREATE TABLE IF NOT EXISTS trading_state (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    previous TEXT NOT NULL,
    current TEXT NOT NULL,
    source TEXT NOT NULL,                -- operator | risk | reconciler | positions | strategy | persisted | ...
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reconciliations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    market_ns INTEGER NOT NULL,
    clean INTEGER NOT NULL,
    total_usd TEXT NOT NULL,
    drifts TEXT NOT NULL                 -- JSON list of "account:holding ours … venue …"
);
CREATE TABLE IF NOT EXISTS risk_actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    level INTEGER NOT NULL,              -- the drawdown breaker's level: 1 reduce, 2 close part, 3 flatten and halt
    action TEXT NOT NULL,
    drawdown TEXT NOT NULL,              -- from the peak, as a fraction
    daily_loss TEXT NOT NULL,            -- since the UTC day's first NAV, as a fraction
    reason TEXT NOT NULL,
    sent TEXT NOT NULL                   -- the unwind's instructions, or why none went out
);
"""
RECORD_TABLES = ("venue_reports", "orders", "trading_state", "reconciliations", "risk_actions")
# Columns added since the first schema: a journal written by an older daemon gains them (NULL in its rows).
MIGRATIONS = {"runs": {"ended_ns": "INTEGER", "end_reason": "TEXT", "previous_unclean": "TEXT"},
              **{table: {"wall_ns": "INTEGER"} for table in RECORD_TABLES}}


def _migrate(db: sqlite3.Connection) -> bool:
    """Add what an older daemon's journal lacks; True if its runs had no end markers until now."""
    added: set[str] = set()
    for table, columns in MIGRATIONS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, kind in columns.items():
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                added.add(f"{table}.{column}")
    return "runs.ended_ns" in added


def _iso(ns: int | None) -> str | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _unclean(db: sqlite3.Connection, before: int) -> dict[str, Any] | None:
    """The run before `before`, if it has no end marker: its id, start and the wall time of its last record."""
    row = db.execute("SELECT run, started_ns, ended_ns FROM runs WHERE run < ? ORDER BY run DESC LIMIT 1",
                     (before,)).fetchone()
    if row is None or row[2] is not None:
        return None
    run, started_ns = int(row[0]), int(row[1])
    # Rows of an older daemon have no wall_ns: their recorded_ns is the best there is.
    last = max((value for table in RECORD_TABLES for (value,) in db.execute(
        f"SELECT MAX(COALESCE(wall_ns, recorded_ns)) FROM {table} WHERE run = ?", (run,)) if value is not None),
        default=None)
    return {"run": run, "started": _iso(started_ns), "last_record": _iso(last),
            "records": sum(int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0])
                           for table in RECORD_TABLES)}



def _plain(value: Any) -> Any:
    """Plain JSON-able values of `value`, exact decimals as strings and free-text fields (errors, reasons)
    redacted, in one walk: a redaction pass of its own over every body cost 40 % of `encode` for a fill."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _field(f.name, getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _field(key: str, value: Any) -> Any:
    return redact_text(value) if key in FREE_TEXT_KEYS and isinstance(value, str) else _plain(value)


def encode(value: Any) -> str:
    """JSON of `value`, exact decimals as strings, its free-text fields (errors, reasons) redacted."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


class Journal:
    """Appends never raise: a write that fails (a full disk, a removed directory) is reported once through
    `on_failure` — the composition root halts trading, since what the daemon does would no longer be durable —
    and the daemon goes on telling its books (losing durability, never the fill itself). Opening one that
    cannot be opened is a ConfigError naming the file (exit 78: a restart would not fix it)."""

    def __init__(self, path: Path, runtime_mode: str, config: str, started_ns: int,
                 on_failure: Callable[[str], None] = lambda _: None) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = self._open(path)
            self.run, self.previous_unclean = self._start_run(started_ns, runtime_mode, config)
        except (OSError, sqlite3.Error) as exc:
            # A restart cannot fix a journal that is not one (a stray file, another program's database, no
            # permission): refuse to run, as for a bad setting, since trading without a journal loses durability.
            problem = (f"the journal {path} cannot be opened ({type(exc).__name__}: {exc}): move it aside, or set "
                       "runtime.state_dir to a directory the daemon owns")
            raise ConfigError([ConfigProblem(config, "runtime.state_dir", problem)]) from None
        self.appended = 0
        self.failed = ""  # the first write error, once one happened
        self.closed = False
        self._on_failure = on_failure

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        # isolation_level=None: autocommit; each append is its own transaction, durable when it returns.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return db

    def _start_run(self, started_ns: int, runtime_mode: str, config: str) -> tuple[int, dict[str, Any] | None]:
        """This process's run; and the run before it, when that one ended without an end marker (killed): said
        here and recorded in this run. (Runs of a daemon that wrote no end markers cannot be judged: the first
        run after the upgrade says nothing.)"""
        markers_new = _migrate(self._db)
        cursor = self._db.execute("INSERT INTO runs (started_ns, runtime_mode, config) VALUES (?, ?, ?)",
                                  (started_ns, runtime_mode, config))
        run = int(cursor.lastrowid or 0)
        unclean = None if markers_new else _unclean(self._db, run)
        if unclean is not None:
            log.warning("previous_run_unclean", **unclean,
                        detail="the previous run ended without a clean stop (killed?): check its last records "
                               "against the venues")
            self._db.execute("UPDATE runs SET previous_unclean = ? WHERE run = ?", (encode(unclean), run))
        return run, unclean

    def _append(self, sql: str, values: tuple[Any, ...]) -> bool:
        """Run one INSERT; True if it added a row."""
        try:
            added = self._db.execute(sql, values).rowcount == 1
        except sqlite3.Error as exc:
            if not self.failed:
                self.failed = f"{type(exc).__name__}: {exc}"
                self._on_failure(f"the journal {self.path} cannot be written: {self.failed}")
            return False
        self.appended += int(added)
        return added

    def close(self, reason: str = "stopped") -> None:
        """The run's end marker (wall clock, why), then close. A stop that cannot write it is reported like any
        failed write, and the next run will call this one unclean — which, durably, it was."""
        if self.closed:
            return
        self.closed = True
        try:
            self._db.execute("UPDATE runs SET ended_ns = ?, end_reason = ? WHERE run = ?",
                             (time.time_ns(), redact_text(reason), self.run))
        except sqlite3.Error as exc:
            if not self.failed:
                self.failed = f"{type(exc).__name__}: {exc}"
                self._on_failure(f"the journal {self.path} cannot record the end of run {self.run}: {self.failed}")
        finally:
            self._db.close()

    def record_report(self, recorded_ns: int, venue: str, report_key: str, kind: str, report: Any) -> bool:
        """Journal a venue report; False if it was journaled before in this run (the venue sent it twice)."""
        return self._append(
            "INSERT OR IGNORE INTO venue_reports (run, recorded_ns, wall_ns, venue, report_key, kind, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.run, recorded_ns, time.time_ns(), venue, report_key, kind, encode(report)))

    def record_order(self, recorded_ns: int, client_order_id: str, instruction_id: str, event: str,
                     body: Any) -> None:
        self._append("INSERT INTO orders (run, recorded_ns, wall_ns, client_order_id, instruction_id, event, body) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, time.time_ns(), client_order_id, instruction_id, event, encode(body)))

    def record_trading_state(self, recorded_ns: int, previous: str, current: str, source: str, reason: str) -> None:
        self._append("INSERT INTO trading_state (run, recorded_ns, wall_ns, previous, current, source, reason) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, time.time_ns(), previous, current, source, redact_text(reason)))

    def record_reconciliation(self, recorded_ns: int, market_ns: int, clean: bool, total_usd: Decimal,
                              drifts: list[str]) -> None:
        self._append("INSERT INTO reconciliations (run, recorded_ns, wall_ns, market_ns, clean, total_usd, drifts) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, time.time_ns(), market_ns, int(clean), str(total_usd), json.dumps(drifts)))

    def record_risk_action(self, recorded_ns: int, level: int, action: str, drawdown: Decimal, daily_loss: Decimal,
                           reason: str, sent: str) -> None:
        """A drawdown breaker level acting (actors.risk): once per level per trip."""
        self._append("INSERT INTO risk_actions (run, recorded_ns, wall_ns, level, action, drawdown, daily_loss, "
                     "reason, sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, time.time_ns(), level, action, str(drawdown), str(daily_loss),
                      redact_text(reason), redact_text(sent)))

    # --- reading (tests, `sqlite3` at the shell, and the recovery to come) ---------------------------------

    def report_keys(self, run: int | None = None) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT report_key FROM venue_reports WHERE run = ? ORDER BY seq", (run or self.run,))]

    def order_events(self, client_order_id: str, run: int | None = None) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT event FROM orders WHERE client_order_id = ? AND run = ? ORDER BY seq",
            (client_order_id, run or self.run))]
