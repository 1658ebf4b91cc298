"""The journal: an append-only SQLite record (WAL) of what the daemon was told and what it did.

Every venue report is written here before the books see it (DESIGN §3: "a fill is journaled before it is
published"), every order before it is sent and its outcome after, every change of the trading state with who
made it, and every reconciliation's findings. A crash can therefore lose nothing the daemon had acted on: the
journal says which fills it had, which orders it had sent (and may have to ask the venue about by client order
id), who halted it and why, and what the last reconciliation found. At a live start-up
`daemon.recovery` reads it back (`PastRuns`): every order a previous run sent without a final outcome is resolved
on its venue by client id, the instruction in progress is abandoned explicitly, and each resolution is a
`recoveries` row of the new run, so the next restart does not resolve it again. Each instruction's start (its plan)
and end (`instructions`) tell an instruction a kill cut short from one that had finished just before it.

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
from collections.abc import Callable, Iterable
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
CREATE TABLE IF NOT EXISTS instructions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    instruction_id TEXT NOT NULL,
    event TEXT NOT NULL,                 -- started (before its first step) | finished (after its last, or its stop)
    body TEXT NOT NULL                   -- started: type and steps; finished: completed, steps_done, reason
);
CREATE INDEX IF NOT EXISTS instructions_by_id ON instructions (instruction_id);
CREATE TABLE IF NOT EXISTS recoveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL REFERENCES runs (run),  -- the run that recovered (at its start-up)
    recorded_ns INTEGER NOT NULL,
    wall_ns INTEGER,
    kind TEXT NOT NULL,                  -- order | instruction | position
    ref TEXT NOT NULL,                   -- the client order id | the instruction id | venue:instrument
    outcome TEXT NOT NULL,               -- order: filled | cancelled | never_sent | ...; instruction: abandoned; ...
    body TEXT NOT NULL
);
"""
RECORD_TABLES = ("venue_reports", "orders", "instructions", "trading_state", "reconciliations", "risk_actions",
                 "recoveries")
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

    def record_instruction(self, recorded_ns: int, instruction_id: str, event: str, body: Any) -> None:
        """An instruction's start (its plan) or its end (completed or not, how many steps): what a restart needs to
        tell the instruction a killed run was in the middle of from one that had finished (`PastRuns`)."""
        self._append("INSERT INTO instructions (run, recorded_ns, wall_ns, instruction_id, event, body) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (self.run, recorded_ns, time.time_ns(), instruction_id, event, encode(body)))

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


# --- read-back of the runs before this one (daemon.recovery, at a live start-up) ------------------------------------

# An order's last row that settles it: nothing is left to ask its venue. (An "error" of any kind but an unknown
# outcome is an answer too: the venue did nothing; a "timeout" or an unknown-outcome error is not.)
FINAL_EVENTS = ("filled", "rejected", "canceled")  # (as `PastRuns.unresolved_orders` lists them in its SQL)
UNKNOWN_ERRORS = frozenset({"UnknownOrderOutcome", "DuplicateClientOrderId"})


class PastRuns:
    """The journal as the previous runs left it, for recovery at start-up, through a connection of its own (the
    daemon's `Journal` has already opened this process's run: the newest in `runs`, or `run`). What it writes —
    one `recoveries` row per resolution, and the recovered fills in `venue_reports` — belongs to that run."""

    def __init__(self, path: Path, run: int | None = None) -> None:
        self.path = path
        self._db = Journal._open(path)
        self.run = run if run is not None else int(self._db.execute("SELECT MAX(run) FROM runs").fetchone()[0] or 0)

    def close(self) -> None:
        self._db.close()

    def previous_unclean(self) -> dict[str, Any] | None:
        """What this run's start said of the run before it (None: it stopped cleanly, or there was none)."""
        row = self._db.execute("SELECT previous_unclean FROM runs WHERE run = ?", (self.run,)).fetchone()
        return json.loads(row[0]) if row is not None and row[0] else None

    def unresolved_orders(self) -> list[dict[str, Any]]:
        """Every order a live run before this one sent (an `intent` row) whose last row is not a final outcome — an
        intent, an acknowledgement of an order left resting, a timeout, an unknown-outcome error — or is `filled`
        in a run that ended unseen without its trade journaled, and that no later start-up has resolved:
        {client_order_id, instruction_id, run, last_event, last_body, order}, oldest first (`order`: the intent's
        body, the order as it was sent)."""
        # One pass in SQLite (a journal of months holds many thousands of orders, nearly all settled): each client
        # id's first intent and its last row, unless a start-up resolved it already.
        rows = self._db.execute(
            "WITH ids AS (SELECT client_order_id AS cid, MIN(seq) AS first, MAX(seq) AS last FROM orders "
            "WHERE run < ? AND run IN (SELECT run FROM runs WHERE runtime_mode = 'live') GROUP BY client_order_id) "
            "SELECT i.client_order_id, i.instruction_id, i.run, i.body, l.event, l.body FROM ids "
            "JOIN orders i ON i.seq = (SELECT MIN(seq) FROM orders WHERE client_order_id = ids.cid "
            "AND event = 'intent' AND seq >= ids.first) JOIN orders l ON l.seq = ids.last "
            "WHERE (l.event NOT IN ('filled', 'rejected', 'canceled') "
            # A fill the venue confirmed (the order's answer said filled) whose trade report the dead run never
            # journaled: killed between the two. Its trades are read back like an open order's, never adopted as
            # an unexplained position. Only for runs that ended unseen: a clean stop journals every fill first.
            "OR (l.event = 'filled' AND l.run IN (SELECT run FROM runs WHERE ended_ns IS NULL) AND NOT EXISTS ("
            "SELECT 1 FROM venue_reports v WHERE v.run = l.run AND v.kind = 'FillReport' "
            "AND json_extract(v.body, '$.client_order_id') = ids.cid))) "
            "AND NOT EXISTS (SELECT 1 FROM recoveries r "
            "WHERE r.kind = 'order' AND r.ref = ids.cid) ORDER BY i.seq", (self.run,)).fetchall()
        out = []
        for cid, instruction_id, run, body, event, last in rows:
            last_body = json.loads(last)
            if event == "error" and last_body.get("kind") not in UNKNOWN_ERRORS:
                continue  # an answer: the venue did nothing
            out.append({"client_order_id": cid, "instruction_id": instruction_id, "run": int(run),
                        "last_event": event, "last_body": last_body, "order": json.loads(body)})
        return out

    def instruction_rows(self, instruction_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(client order id or step ref, event, body) of every order row of an instruction, in order."""
        return [(cid, event, json.loads(body)) for cid, event, body in self._db.execute(
            "SELECT client_order_id, event, body FROM orders WHERE instruction_id = ? AND run < ? ORDER BY seq",
            (instruction_id, self.run))]

    def unfinished_instructions(self) -> list[str]:
        """Instructions of earlier runs that did not finish, not abandoned by a start-up yet, oldest first: every one
        with a step timed out (`timeout`: a step's outcome unknown, a chain step's too); every one a live run started
        (an `instructions` row) and never finished — killed, or stopped mid-way; and, for a run killed before
        instructions were journaled (an older daemon's), the last instruction whose orders it journaled (it may
        have been mid-way)."""
        ids = self.timed_out_instructions()
        ids += [row[0] for row in self._db.execute(
            "SELECT s.instruction_id FROM instructions s WHERE s.event = 'started' AND s.run < ? "
            "AND s.run IN (SELECT run FROM runs WHERE runtime_mode = 'live') AND NOT EXISTS (SELECT 1 FROM "
            "instructions f WHERE f.instruction_id = s.instruction_id AND f.event = 'finished') ORDER BY s.seq",
            (self.run,))]
        if self.previous_unclean() is not None and not self._journals_instructions(self.run - 1):
            last = self._db.execute("SELECT instruction_id FROM orders WHERE run = ? ORDER BY seq DESC LIMIT 1",
                                    (self.run - 1,)).fetchone()
            if last is not None:
                ids.append(last[0])
        done = {row[0] for row in self._db.execute("SELECT ref FROM recoveries WHERE kind = 'instruction'")}
        return [i for i in dict.fromkeys(ids) if i not in done]

    def timed_out_instructions(self) -> list[str]:
        """Instructions of earlier runs with a step whose outcome was left unknown (a `timeout` row), oldest first:
        finished or not, each is abandoned explicitly at a restart."""
        return [row[0] for row in self._db.execute(
            "SELECT instruction_id FROM orders WHERE event = 'timeout' AND run < ? GROUP BY instruction_id "
            "ORDER BY MIN(seq)", (self.run,))]

    def _journals_instructions(self, run: int) -> bool:
        return self._db.execute("SELECT 1 FROM instructions WHERE run = ? LIMIT 1", (run,)).fetchone() is not None

    def instruction_plan(self, instruction_id: str) -> dict[str, Any] | None:
        """The instruction as its run started it ({type, steps: [{step, action, venue}]}), or None (not journaled)."""
        row = self._db.execute("SELECT body FROM instructions WHERE instruction_id = ? AND event = 'started' "
                               "AND run < ? ORDER BY seq LIMIT 1", (instruction_id, self.run)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def instruction_ends(self, instruction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """instruction id → how it finished ({completed, steps_done, steps, reports, reason}), for those that did."""
        ids = list(dict.fromkeys(instruction_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {i: json.loads(body) for i, body in self._db.execute(
            f"SELECT instruction_id, body FROM instructions WHERE event = 'finished' AND run < ? AND instruction_id "
            f"IN ({marks}) ORDER BY seq", (self.run, *ids))}

    def last_instruction(self) -> str | None:
        """The last instruction the previous run started, had that run ended unclean (None: it stopped cleanly, or
        started none): the one a kill may have cut short, whichever way it turns out."""
        if self.previous_unclean() is None:
            return None
        row = self._db.execute("SELECT instruction_id FROM instructions WHERE run = ? AND event = 'started' "
                               "ORDER BY seq DESC LIMIT 1", (self.run - 1,)).fetchone()
        return None if row is None else str(row[0])

    def report_seen(self, report_key: str) -> bool:
        """Whether any run journaled this venue report (a fill: "venue:trade id")."""
        return self._db.execute("SELECT 1 FROM venue_reports WHERE report_key = ? LIMIT 1",
                                (report_key,)).fetchone() is not None

    def funding_since_ms(self, venue: str) -> int | None:
        """Where the funding `venue` paid while the daemon was down begins (ms), or None (no live run before this one:
        its balances are all capital). The later of the last payment a live run journaled for it and the start of
        the newest live run that opened its books (it reconciled them): what that run opened on holds every payment
        before it; from there on, a payment is in the journal (skipped by its id) or was never booked (a kill
        before its poll, or made while down)."""
        live = "SELECT run FROM runs WHERE runtime_mode = 'live' AND run < ?"
        row = self._db.execute(
            f"SELECT COALESCE((SELECT MAX(started_ns) FROM runs WHERE run IN ({live}) AND run IN "
            f"(SELECT run FROM reconciliations)), (SELECT MAX(started_ns) FROM runs WHERE run IN ({live})))",
            (self.run, self.run)).fetchone()
        if row is None or row[0] is None:
            return None
        paid = self._db.execute(
            f"SELECT MAX(json_extract(body, '$.ts_event')) FROM venue_reports WHERE venue = ? AND report_key LIKE ? "
            f"AND run IN ({live})", (venue, f"{venue}:funding-%", self.run)).fetchone()[0]
        return max(int(row[0]) // 1_000_000, int(paid) // 1_000_000 if paid is not None else 0)

    def funding_ids(self, venue: str) -> set[str]:
        """The venue's own ids of every funding payment a live run journaled for `venue` (`funding-<id>` report
        ids)."""
        return {key.removeprefix(f"{venue}:funding-") for (key,) in self._db.execute(
            "SELECT report_key FROM venue_reports WHERE venue = ? AND report_key LIKE ? AND run IN "
            "(SELECT run FROM runs WHERE runtime_mode = 'live')", (venue, f"{venue}:funding-%"))}

    def journaled_perps(self) -> dict[tuple[str, str], Decimal]:
        """(venue, instrument as the books name it) → the perp size the journal accounts for: every fill any live run
        journaled (signed by side) plus every position a start-up adopted."""
        held: dict[tuple[str, str], Decimal] = {}
        # Once per fill, should two runs have journaled the same trade.
        for (body,) in self._db.execute("SELECT MIN(body) FROM venue_reports WHERE kind = 'FillReport' AND run IN "
                                        "(SELECT run FROM runs WHERE runtime_mode = 'live') GROUP BY report_key"):
            fill = json.loads(body)
            parts = str(fill.get("instrument_id", "")).split(":")
            if len(parts) != 3 or parts[1] != "Perp":
                continue
            venue, instrument = parts[0], parts[2]
            signed = Decimal(fill["quantity"]) * (1 if fill.get("side") == "BUY" else -1)
            held[(venue, instrument)] = held.get((venue, instrument), Decimal(0)) + signed
        for ref, body in self._db.execute("SELECT ref, body FROM recoveries WHERE kind = 'position'"):
            venue, instrument = ref.split(":", 1)
            held[(venue, instrument)] = held.get((venue, instrument), Decimal(0)) + Decimal(json.loads(body)["delta"])
        return held

    def record_recovery(self, kind: str, ref: str, outcome: str, body: Any) -> None:
        """One resolution, durable when this returns (a write error raises: a start-up that cannot journal what it
        resolved must not go on to trade)."""
        self._db.execute("INSERT INTO recoveries (run, recorded_ns, wall_ns, kind, ref, outcome, body) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (self.run, time.time_ns(), time.time_ns(), kind, ref, outcome, encode(body)))

    def record_report(self, venue: str, report_key: str, kind: str, report: Any) -> bool:
        """A venue report recovery found (a fill made while the daemon was down), journaled in this run as the fills
        actor journals one; False if this run has it already."""
        return self._db.execute(
            "INSERT OR IGNORE INTO venue_reports (run, recorded_ns, wall_ns, venue, report_key, kind, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.run, time.time_ns(), time.time_ns(), venue, report_key, kind, encode(report))).rowcount == 1

    def recoveries(self, run: int | None = None) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(kind, ref, outcome, body) of a run's resolutions (this one's by default)."""
        return [(k, r, o, json.loads(b)) for k, r, o, b in self._db.execute(
            "SELECT kind, ref, outcome, body FROM recoveries WHERE run = ? ORDER BY seq", (run or self.run,))]
