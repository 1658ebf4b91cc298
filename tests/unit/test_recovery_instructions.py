"""The instruction a killed run was carrying out, resumed-or-abandoned exactly at the restart (`daemon.recovery`): the
real execution actor journals each instruction's plan and end into the real `Journal` while it drives the simulated
exchange and chain; the run is then killed (no end marker) and the next start's recovery reads the journal back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from actors.execution import ExecutionActor
from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.aave import atomic_entry
from daemon.domain.ids import InstructionId
from daemon.domain.ledger import WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.messages import (
    ExecuteInstruction,
    FillReport,
    InstructionFinished,
    OrderEvent,
    SubmitOrder,
    VenueReport,
)
from daemon.domain.strategy import Executor, Instruction, Step
from daemon.journal import Journal, PastRuns
from daemon.recovery import RecoveryReport, recover_orders
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from daemon.venues.simulated_chain import SimulatedChain
from tests.actors.test_execution_actor import simulated_venues

pytestmark = pytest.mark.asyncio

D = Decimal


class StuckWithdrawal(SimulatedChain):
    """A chain whose withdrawal from the venue never returns: the run is killed while it waits."""

    entered: anyio.Event

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal:
        self.entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@dataclass
class Run:
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction]
    events: LosslessChannel[OrderEvent]
    reports: LosslessChannel[VenueReport]
    journal: Journal
    chain: SimulatedChain

    async def finished(self) -> InstructionFinished:
        with anyio.fail_after(5):
            while True:
                event = await self.events.receive()
                if isinstance(event, InstructionFinished):
                    return event

    def journal_fills(self) -> None:
        """What the fills actor does with each trade report: journaled before the books see it."""
        while len(self.reports):
            report = self.reports.receive_nowait()
            if isinstance(report, FillReport):
                self.journal.record_report(0, report.venue, f"{report.venue}:{report.trade_id}", "FillReport", report)


@asynccontextmanager
async def live_run(path: Path, chain_type: type[SimulatedChain] = SimulatedChain) -> AsyncIterator[Run]:
    """A live run of the execution actor journaling into `path`, killed at the end of the block (no end marker,
    whatever was in flight cancelled): what SIGKILL leaves."""
    clock = VirtualClock(0, None)
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 64)
    reports: LosslessChannel[VenueReport] = LosslessChannel("fills.reports", 256)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 64)
    exchanges, _, chain = simulated_venues(clock, reports, ("binance", "bybit"), chain_type)
    if isinstance(chain, StuckWithdrawal):
        chain.entered = anyio.Event()
    chain.receive(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(100_000)),)))
    journal = Journal(path, "live", "live.yaml", 1)
    actor = ExecutionActor(orders, exchanges, events, chain, journal=journal)
    sup = Supervisor([actor], clock=clock, trading=TradingStateCell(), policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Run(orders, events, reports, journal, chain)
        tg.cancel_scope.cancel()
    journal._db.close()  # killed: no end marker, the next run calls this one unclean


async def restart(path: Path) -> tuple[RecoveryReport, list[dict[str, object]], PastRuns]:
    """The next live start: its run opened (daemon.app), then recovery before the books open."""
    Journal(path, "live", "live.yaml", 2)
    past = PastRuns(path)
    with capture_logs() as logs:
        report = await recover_orders(past, {})  # every order settled in the journal: no venue is asked
    return report, [dict(e) for e in logs], past


def entry() -> Instruction:
    lev = atomic_entry(D(2), D("0.9"))
    return Instruction(1, "ENTRY", "test", D(6000), (
        Step(1, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "binance", {"amount_usd": D(16_000)}),
        Step(2, "BUY_SPOT", Executor.CEX, "binance", {"amount": D(2)}),
        Step(3, "OPEN_PERP_SHORT", Executor.CEX, "binance", {"amount": D(2)}),
        Step(4, "WITHDRAW_TO_WALLET", Executor.CEX, "binance", {"amount_eth": D(2)}),
        Step(5, "ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3",
             {"equity_eth": D(2), "supply_eth": lev.supplied, "borrow_eth": lev.borrowed}),
    ), False, "entry")


async def test_a_last_instruction_that_finished_before_the_kill_is_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with live_run(path) as run:
        await run.orders.send(ExecuteInstruction(InstructionId("r1i1"), entry(), 0, 0))
        done = await run.finished()
        assert done.completed and done.steps_done == 5
        run.journal_fills()
    report, logs, past = await restart(path)
    assert report.previous_unclean is not None  # the run was killed ...
    assert report.abandoned == [] and report.orders == []  # ... after its last instruction had finished
    assert [(f["instruction_id"], f["completed"], f["steps_done"], f["steps"]) for f in report.finished] == [
        ("r1i1", True, 5, 5)]
    assert [e["instruction_id"] for e in logs if e["event"] == "instruction_finished_before_restart"] == ["r1i1"]
    assert not [e for e in logs if e["event"] == "instruction_abandoned_at_restart"]
    assert past.recoveries() == []  # nothing resolved, nothing journaled as resolved
    status = report.as_dict()  # what `basisd status` shows
    assert status["instructions_abandoned"] == [] and status["instructions_finished"] == ["r1i1"]
    assert status["previous_run_unclean"] is True and status["halt"] is None
    past.close()


async def test_an_instruction_cut_short_is_abandoned_with_the_steps_it_had_done_and_left(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    async with live_run(path, StuckWithdrawal) as run:
        await run.orders.send(ExecuteInstruction(InstructionId("r1i1"), entry(), 0, 0))
        assert isinstance(run.chain, StuckWithdrawal)
        with anyio.fail_after(5):
            await run.chain.entered.wait()  # steps 1-3 done, the withdrawal in flight: killed here
        run.journal_fills()
    report, logs, past = await restart(path)
    [abandoned] = report.abandoned
    assert abandoned["instruction_id"] == "r1i1" and abandoned["type"] == "ENTRY"
    assert abandoned["steps_done"] == [1, 2, 3]
    assert [(s["step"], s["action"], s["outcome"]) for s in abandoned["steps"]][:3] == [
        (1, "TRANSFER_USDT_TO_CEX", "done"), (2, "BUY_SPOT", "filled"), (3, "OPEN_PERP_SHORT", "filled")]
    assert [line.split(" (")[0] for line in abandoned["left"]] == [
        "step 4 WITHDRAW_TO_WALLET", "step 5 ATOMIC_LEVERAGE_ENTRY"]
    assert report.finished == []
    [line] = [e for e in logs if e["event"] == "instruction_abandoned_at_restart"]
    assert line["steps_done"] == [1, 2, 3]
    assert [(k, r, o) for k, r, o, _ in past.recoveries()] == [("instruction", "r1i1", "abandoned")]
    past.close()
    # The next start has nothing left to abandon: this one's recovery is journaled.
    again, _, later = await restart(path)
    assert again.abandoned == [] and again.finished == []
    later.close()


async def test_only_the_instruction_in_flight_is_abandoned_never_the_finished_one_before_it(tmp_path: Path) -> None:
    """A chain-only instruction leaves no order rows: cut short, it is found by its start alone — and the entry
    before it, whose orders were the run's last, is not taken for the one in progress."""
    path = tmp_path / "journal.sqlite"
    withdraw = Instruction(2, "WITHDRAW", "test", D(3000), (
        Step(1, "WITHDRAW_TO_WALLET", Executor.CEX, "binance", {"amount_eth": D(1)}),
        Step(2, "SUPPLY", Executor.WALLET, "aave_v3", {"asset": "WETH", "amount": D(1)}),
    ), False, "test")
    async with live_run(path, StuckWithdrawal) as run:
        first = entry()
        await run.orders.send(ExecuteInstruction(InstructionId("r1i1"), Instruction(
            first.priority, first.type, first.venue, first.amount_usd, first.steps[:3], False, "entry"), 0, 0))
        assert (await run.finished()).completed
        run.journal_fills()
        await run.orders.send(ExecuteInstruction(InstructionId("r1i2"), withdraw, 0, 0))
        assert isinstance(run.chain, StuckWithdrawal)
        with anyio.fail_after(5):
            await run.chain.entered.wait()
    report, _, past = await restart(path)
    assert [a["instruction_id"] for a in report.abandoned] == ["r1i2"]
    [abandoned] = report.abandoned
    assert abandoned["steps_done"] == [] and len(abandoned["left"]) == 2
    assert all("chain's truth" in line for line in abandoned["left"])
    assert report.finished == []  # r1i1 was not the last instruction started: not named at all
    past.close()


async def test_a_failed_instruction_is_finished_not_abandoned(tmp_path: Path) -> None:
    """Stopped by a failed step, the instruction ended in its own run (reported, its failure handled there): the
    restart has nothing to abandon."""
    path = tmp_path / "journal.sqlite"
    nowhere = Instruction(1, "HEDGE", "test", D(3000), (
        Step(1, "OPEN_PERP_SHORT", Executor.CEX, "okx", {"amount": D(1)}),  # no okx adapter in this run
    ), False, "test")
    async with live_run(path) as run:
        await run.orders.send(ExecuteInstruction(InstructionId("r1i1"), nowhere, 0, 0))
        done = await run.finished()
        assert not done.completed and done.steps_done == 0
    report, _, past = await restart(path)
    assert report.abandoned == []
    assert [(f["instruction_id"], f["completed"]) for f in report.finished] == [("r1i1", False)]
    assert "no venue adapter" in report.finished[0]["reason"]
    past.close()
