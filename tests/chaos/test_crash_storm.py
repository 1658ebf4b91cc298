"""Actor crash storms (issue 14 §3): every actor of a running replay daemon crashed 100 times, restarted by the
supervisor every time, and no message on a lossless channel lost — proved by counting what the journal holds
against what the books booked and what the simulated venues say.

Two shapes. `chaos.storm` with `chaos.crash_count: 100` breaks every actor of one daemon at once, a hundred
times each, then lets them run so the books can be checked at rest (it needs `daemon.app` to build its actors
through `daemon.chaos.with_chaos`; until it does, that test skips). `chaos.fail_actor` breaks one actor per
daemon: nine daemons at once, one per actor, each stopped after its actor's 100th restart. Both with a budget
wide enough to survive the storm; then the storm against a budget of 100: the 101st crash in the window halts
trading, durably, and the process exits 70 (`tests/integration/test_process.py` has the short-budget case).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from pydantic import ValidationError

from daemon.bus import LosslessChannel
from daemon.chaos import FailingActor, with_chaos
from daemon.clock import WallClock
from daemon.lifecycle import ActorContext, serve
from daemon.settings import ChaosSettings
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from tests.integration.daemon_process import ROOT, DaemonProcess

pytestmark = [pytest.mark.chaos, pytest.mark.subprocess]

ACTORS = ("positions", "fills", "execution", "risk", "strategy", "market_data", "status", "api", "reconciler")
CRASHES = 100


def storm_config(catalog: Path, state: Path, actor: str | None, budget: int = 1000) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    # Ten market hours a second: the entry, funding and hourly reconciliations all happen during the storm.
    data["runtime"].update(status_interval_s=0.5, state_dir=str(state), run_for_s=60)
    data["replay"]["speed"] = 36_000
    data["chaos"] = ({"fail_actor": actor} if actor else {"storm": True, "crash_count": CRASHES}) | {
        "fail_after_s": 0.02}
    # A budget no storm of this rate can breach (about 30 crashes a second against 1000 a second), and restarts
    # at once, so a hundred crashes take seconds.
    data["supervisor"] = {"restart_backoff_initial_s": 0.01, "restart_backoff_max_s": 0.01,
                          "restart_budget_count": budget, "restart_budget_window_s": 1 if budget == 1000 else 600}
    path = catalog / f"storm-{actor or 'all'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def restarts_of(proc: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in proc.events() if e.get("event") == "actor_restarting"]


def test_a_storm_of_every_actor_of_one_daemon_a_hundred_times_each_loses_no_lossless_message(
        catalog: Path, tmp_path: Path) -> None:
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    config = storm_config(catalog, state, None)
    data = yaml.safe_load(config.read_text())
    data["control"] = {"socket": str(sock)}
    config.write_text(yaml.safe_dump(data))
    proc = DaemonProcess(config, tmp_path)
    try:
        proc.wait_ready()  # the actors, chaos's wrappers included, are built before it
        enabled = next((e for e in proc.events() if e.get("event") == "chaos_enabled"), {})
        assert "actors" in enabled, enabled  # daemon.app builds its actors through daemon.chaos.with_chaos
        assert enabled["actors"] == sorted(ACTORS) and enabled["crash_count"] == CRASHES
        proc.wait_for(lambda: len(storms_over(proc)) == len(ACTORS), 45, "every actor's storm over")
        calm = max(e["timestamp"] for e in storms_over(proc))
        # At rest: the books checked against the venues after the last crash of the last actor.
        proc.wait_for(lambda: reconciliations_after(state / "journal.sqlite", calm) >= 3, 20, "reconciliations at rest")
        shown = subprocess.run([sys.executable, "-m", "daemon", "status", "--json", "--socket", str(sock)], cwd=ROOT,
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)["status"]
        assert report["trading"]["state"] == "ACTIVE", report["trading"]
        assert {name: (a["state"], a["restarts"]) for name, a in report["actors"].items()} == dict.fromkeys(
            ACTORS, ("running", CRASHES))
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=15) == 0, proc.output()[-3000:]
    finally:
        proc.close()
    events = proc.events()
    restarts = restarts_of(proc)
    assert {a: sum(e["actor"] == a for e in restarts) for a in ACTORS} == dict.fromkeys(ACTORS, CRASHES)
    assert not [e for e in events if e.get("event") in ("restart_budget_exceeded", "trading_state_changed")]
    entries = [e for e in events if e.get("event") == "instruction_finished" and e.get("type") == "ENTRY"]
    assert [e["completed"] for e in entries] == [True], entries
    forwarded = [e["client_order_id"] for e in events if e.get("event") == "order_filled"]
    assert_nothing_lost("every actor", state / "journal.sqlite", forwarded)


def storms_over(proc: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in proc.events() if e.get("event") == "chaos_storm_over"]


def reconciliations_after(journal: Path, timestamp: str) -> int:
    """Journaled reconciliations after an ISO log timestamp (the journal's wall clock is in ns)."""
    after_ns = int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1e9)
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM reconciliations WHERE wall_ns > ?", (after_ns,)).fetchone()
    return int(count)


def stormed(proc: DaemonProcess) -> Callable[[], bool]:
    return lambda: len(restarts_of(proc)) >= CRASHES


def test_every_actor_crashed_a_hundred_times_is_restarted_and_no_lossless_message_is_lost(
        catalog: Path, tmp_path: Path) -> None:
    procs: dict[str, DaemonProcess] = {}
    try:
        for actor in ACTORS:
            (tmp_path / actor).mkdir()
            procs[actor] = DaemonProcess(storm_config(catalog, tmp_path / actor / "state", actor), tmp_path / actor)
        for actor, proc in procs.items():
            proc.wait_for(stormed(proc), 45, f"{CRASHES} restarts of {actor}")
            proc.signal(signal.SIGTERM)
        codes = {actor: proc.wait_exit(timeout_s=15) for actor, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.close()
    assert codes == dict.fromkeys(ACTORS, 0), {a: procs[a].output()[-2000:] for a, c in codes.items() if c}
    for actor, proc in procs.items():
        events = proc.events()
        restarts = restarts_of(proc)
        assert len(restarts) >= CRASHES and {e["actor"] for e in restarts} == {actor}
        assert all("InjectedFault" in e["error"] for e in restarts), restarts[0]
        # Survived, never escalated: trading stayed ACTIVE throughout, and the entry ran to its end.
        assert not [e for e in events if e.get("event") in ("restart_budget_exceeded", "trading_state_changed")]
        assert [e["trading"] for e in events if e.get("event") == "daemon_stopped"] == ["ACTIVE"], actor
        entries = [e for e in events if e.get("event") == "instruction_finished" and e.get("type") == "ENTRY"]
        assert [e["completed"] for e in entries] == [True], (actor, entries)
        forwarded = [e["client_order_id"] for e in events if e.get("event") == "order_filled"]
        assert_nothing_lost(actor, tmp_path / actor / "state" / "journal.sqlite", forwarded)


def assert_nothing_lost(actor: str, journal: Path, forwarded: list[str]) -> None:
    """The counts that would differ had a lossless message been dropped on the way."""
    with closing(sqlite3.connect(journal)) as db:
        reports = db.execute("SELECT report_key, kind, body, wall_ns FROM venue_reports ORDER BY seq").fetchall()
        orders = db.execute("SELECT client_order_id, event FROM orders ORDER BY seq").fetchall()
        runs = db.execute("SELECT clean, drifts, wall_ns FROM reconciliations ORDER BY seq").fetchall()
    fills = [json.loads(body)["client_order_id"] for _, kind, body, _ in reports if kind == "FillReport"]
    # Commands: every order the strategy's instruction sent (risk.commands → execution.orders) was sent once and
    # filled once; venue reports: every fill the venues published reached the fills actor, was journaled once and
    # forwarded once to the books.
    assert len(fills) >= 4, (actor, fills)  # the entry's spot buy and three perp shorts
    assert len({key for key, *_ in reports}) == len(reports), actor
    intents = [c for c, event in orders if event == "intent"]
    assert sorted(intents) == sorted(set(intents)) == sorted(fills) == sorted(forwarded), (actor, orders, forwarded)
    assert [c for c, event in orders if event == "filled"] == intents, (actor, orders)
    # The books: every reconciliation (each market hour, against the simulated venues' own accounts, exactly)
    # found nothing, and some came after the last fill — a fill or transfer the books had missed would differ
    # there forever. (Not "after the last report": a funding payment may land just before the stop.)
    assert runs and all(clean for clean, _, _ in runs), (actor, [d for c, d, _ in runs if not c])
    last_fill = max(wall for _, kind, _, wall in reports if kind == "FillReport")
    assert sum(wall > last_fill for *_, wall in runs) >= 3, actor


def test_a_storm_past_the_budget_halts_trading_durably_and_exits_70(catalog: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = DaemonProcess(storm_config(catalog, state, "fills", budget=CRASHES), tmp_path)
    try:
        code = proc.wait_exit(timeout_s=45)
    finally:
        proc.close()
    assert code == 70, proc.output()[-3000:]
    events = proc.events()
    assert len(restarts_of(proc)) == CRASHES  # the hundredth crash is the last the budget tolerates
    (escalation,) = [e for e in events if e.get("event") == "restart_budget_exceeded"]
    assert (escalation["actor"], escalation["failures"]) == ("fills", CRASHES + 1)
    assert [e["exit_code"] for e in events if e.get("event") == "daemon_failed"] == [70]
    with closing(sqlite3.connect(state / "journal.sqlite")) as db:
        halts = db.execute("SELECT source, reason FROM trading_state WHERE current = 'HALTED'").fetchall()
        (ended,) = db.execute("SELECT end_reason FROM runs").fetchone()
    assert [source for source, _ in halts] == ["supervisor"] and "fills" in halts[0][1], halts
    assert ended == "failure"


class TwoInboxActor:
    """Shaped like the positions actor: two receive loops in one task group, the reports' on a lossless inbox with
    an idempotent handler (`redeliver_if_cancelled`, as `actors/positions.py` serves its reports). The report handler
    is caught mid-message (at an await: a send to a full channel, a venue call) when the mark handler fails once."""

    name = "positions"

    def __init__(self) -> None:
        self.reports = LosslessChannel[int]("positions.reports", 8)
        self.marks = LosslessChannel[str]("positions.marks", 8)
        self.booked = LosslessChannel[int]("booked", 8)
        self.in_flight = anyio.Event()
        self.release = anyio.Event()
        self.bad_marks = 1

    async def run(self, ctx: ActorContext) -> None:
        async def on_report(report: int) -> None:
            self.in_flight.set()
            await self.release.wait()
            await self.booked.send(report)

        async def on_mark(mark: str) -> None:
            if self.bad_marks:
                self.bad_marks -= 1
                raise RuntimeError(f"a mark it could not handle: {mark}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(serve, ctx, self.reports, on_report, redeliver_if_cancelled=True))
            tg.start_soon(serve, ctx, self.marks, on_mark)


def test_a_lossless_message_in_flight_when_a_sibling_loop_crashes_is_redelivered_after_the_restart() -> None:
    async def main() -> list[int]:
        actor = TwoInboxActor()
        supervisor = Supervisor([actor], clock=WallClock(), trading=TradingStateCell(),
                                policy=RestartPolicy(0.01, 0.01, 1, 0, 10, 60), heartbeat_interval_s=0.05,
                                heartbeat_timeout_s=1, rng=random.Random(0))
        booked: list[int] = []
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await actor.reports.send(1)
            await actor.in_flight.wait()  # report 1 is off the inbox, being handled
            await actor.marks.send("bad")  # the other loop fails: the actor crashes and is restarted
            with anyio.move_on_after(5):
                while supervisor.records["positions"].restarts == 0:
                    await anyio.sleep(0.01)
            actor.release.set()
            with anyio.move_on_after(1):
                booked.append(await actor.booked.receive())
            tg.cancel_scope.cancel()
        assert supervisor.records["positions"].restarts == 1
        return booked

    assert anyio.run(main) == [1]


class Counter:
    """An inbox actor that counts what it handles (the storm's wrappers go around it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox = LosslessChannel[int](f"{name}.inbox", 8)
        self.handled: list[int] = []

    async def run(self, ctx: ActorContext) -> None:
        async def handle(n: int) -> None:
            self.handled.append(n)

        await serve(ctx, self.inbox, handle)


def test_a_storm_with_a_crash_count_crashes_every_actor_that_many_times_then_leaves_it_alone() -> None:
    with pytest.raises(ValidationError, match="not both"):
        ChaosSettings(storm=True, fail_actor="fills")
    with pytest.raises(ValidationError, match="crash_count needs fail_actor or storm"):
        ChaosSettings(crash_count=3)
    inner = [Counter("fills"), Counter("risk")]
    actors = with_chaos(inner, ChaosSettings(storm=True, crash_count=CRASHES, fail_after_s=0.01))
    assert all(isinstance(a, FailingActor) for a in actors)

    async def main() -> Supervisor:
        supervisor = Supervisor(actors, clock=WallClock(), trading=TradingStateCell(),
                                policy=RestartPolicy(0.01, 0.01, 1, 0, 1000, 60), heartbeat_interval_s=0.05,
                                heartbeat_timeout_s=10, rng=random.Random(0))
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            with anyio.move_on_after(20):
                while not all(r.restarts == CRASHES for r in supervisor.records.values()):
                    await anyio.sleep(0.05)
            for counter in inner:
                for n in range(3):
                    await counter.inbox.send(n)
            await anyio.sleep(0.1)  # ten times fail_after_s: a crash still due would have come
            tg.cancel_scope.cancel()
        return supervisor

    supervisor = anyio.run(main)
    assert {r.name: (r.failures, r.restarts) for r in supervisor.records.values()} == {
        "fills": (CRASHES, CRASHES), "risk": (CRASHES, CRASHES)}
    assert [c.handled for c in inner] == [[0, 1, 2], [0, 1, 2]]
    assert with_chaos(inner, ChaosSettings()) == inner  # no chaos: the actors themselves
