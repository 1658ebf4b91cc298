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
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ns INTEGER NOT NULL,         -- wall clock
    runtime_mode TEXT NOT NULL,          -- live | paper | replay
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS venue_reports (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,        -- our clock when it was journaled
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
    previous TEXT NOT NULL,
    current TEXT NOT NULL,
    source TEXT NOT NULL,                -- operator | risk | reconciler | positions | strategy | persisted | ...
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reconciliations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    market_ns INTEGER NOT NULL,
    clean INTEGER NOT NULL,
    total_usd TEXT NOT NULL,
    drifts TEXT NOT NULL                 -- JSON list of "account:holding ours … venue …"
);
"""


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def encode(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


class Journal:
    """Appends never raise: a write that fails (a full disk, a removed directory) is reported once through
    `on_failure` — the composition root halts trading, since what the daemon does would no longer be durable —
    and the daemon goes on telling its books (losing durability, never the fill itself)."""

    def __init__(self, path: Path, runtime_mode: str, config: str, started_ns: int,
                 on_failure: Callable[[str], None] = lambda _: None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        # isolation_level=None: autocommit; each append is its own transaction, durable when it returns.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        cursor = self._db.execute("INSERT INTO runs (started_ns, runtime_mode, config) VALUES (?, ?, ?)",
                                  (started_ns, runtime_mode, config))
        self.run = int(cursor.lastrowid or 0)
        self.appended = 0
        self.failed = ""  # the first write error, once one happened
        self._on_failure = on_failure

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

    def close(self) -> None:
        self._db.close()

    def record_report(self, recorded_ns: int, venue: str, report_key: str, kind: str, report: Any) -> bool:
        """Journal a venue report; False if it was journaled before in this run (the venue sent it twice)."""
        return self._append(
            "INSERT OR IGNORE INTO venue_reports (run, recorded_ns, venue, report_key, kind, body) "
            "VALUES (?, ?, ?, ?, ?, ?)", (self.run, recorded_ns, venue, report_key, kind, encode(report)))

    def record_order(self, recorded_ns: int, client_order_id: str, instruction_id: str, event: str,
                     body: Any) -> None:
        self._append("INSERT INTO orders (run, recorded_ns, client_order_id, instruction_id, event, body) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, client_order_id, instruction_id, event, encode(body)))

    def record_trading_state(self, recorded_ns: int, previous: str, current: str, source: str, reason: str) -> None:
        self._append("INSERT INTO trading_state (run, recorded_ns, previous, current, source, reason) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (self.run, recorded_ns, previous, current, source, reason))

    def record_reconciliation(self, recorded_ns: int, market_ns: int, clean: bool, total_usd: Decimal,
                              drifts: list[str]) -> None:
        self._append("INSERT INTO reconciliations (run, recorded_ns, market_ns, clean, total_usd, drifts) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, market_ns, int(clean), str(total_usd), json.dumps(drifts)))

    # --- reading (tests, `sqlite3` at the shell, and the recovery to come) ---------------------------------

    def report_keys(self, run: int | None = None) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT report_key FROM venue_reports WHERE run = ? ORDER BY seq", (run or self.run,))]

    def order_events(self, client_order_id: str, run: int | None = None) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT event FROM orders WHERE client_order_id = ? AND run = ? ORDER BY seq",
            (client_order_id, run or self.run))]
