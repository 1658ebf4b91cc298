"""The risk actor with real channels under the real supervisor: snapshots in, trading state and gating out."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from actors.risk import RiskActor, Unwind
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.messages import (
    Command,
    ExecuteInstruction,
    InstructionFinished,
    OrderEvent,
    OrderRejected,
    PortfolioSnapshotted,
    PositionView,
    Side,
    SubmitOrder,
    TradingState,
)
from daemon.domain.risk import BreakerAction, DrawdownAction, DrawdownBreaker, RiskLimits
from daemon.domain.strategy import Executor, Instruction, Step
from daemon.gate import LISTENERS, StartGate
from daemon.state_store import StateStore
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell

D = Decimal


@dataclass
class Rig:
    commands: LosslessChannel[Command]
    approved: LosslessChannel[SubmitOrder | ExecuteInstruction]
    events: LosslessChannel[OrderEvent]
    snapshots: ConflatingChannel[PortfolioSnapshotted]
    trading: TradingStateCell
    actor: RiskActor
    limits: list[RiskLimits]


@asynccontextmanager
async def running_rig(store: StateStore | None = None, currency: str = "USDT",
                      gate: StartGate | None = None) -> AsyncIterator[Rig]:
    commands: LosslessChannel[Command] = LosslessChannel("risk.commands", 16)
    approved: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 16)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 16)
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("risk.snapshots", 4, lambda s: s.key)
    limits = [RiskLimits()]
    actor = RiskActor(commands, approved, events, snapshots, lambda: limits[0], DrawdownBreaker(), store,
                      currency=currency, gate=gate)
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=trading, policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(commands, approved, events, snapshots, trading, actor, limits)
        tg.cancel_scope.cancel()


def snapshot(nav: str, binance_usdt: str = "30000", mark: str = "3000",
             ages: tuple[tuple[str, Decimal], ...] = ()) -> PortfolioSnapshotted:
    short = PositionView(InstrumentId("binance:Perp:ETHUSDT"), D(-10), D(3000), D(mark), D(0),
                         D(-10) * (D(mark) - 3000))
    return PortfolioSnapshotted((short,), (("binance:USDT", D(binance_usdt)),), D(mark), D(0), D(nav), 1, 0, 0,
                                series_ages_s=ages)


def order(reduce_only: bool) -> SubmitOrder:
    return SubmitOrder(ClientOrderId("c1"), InstructionId("i1"), InstrumentId("binance:Perp:ETHUSDT"), Side.SELL,
                       D(1), reduce_only, "test", 0, 0)


async def settle(rig: Rig) -> None:
    with anyio.fail_after(2):
        while len(rig.snapshots) or len(rig.commands):
            await anyio.sleep(0.005)
        await anyio.sleep(0.02)


@pytest.mark.asyncio
async def test_low_margin_moves_to_reducing_and_only_reduce_only_orders_pass() -> None:
    async with running_rig() as rig:
        rig.snapshots.publish(snapshot("100000", mark="5220"))  # MR ≈ 0.149: urgent
        await settle(rig)
        assert rig.trading.state is TradingState.REDUCING
        assert "margin URGENT on binance" in rig.trading.reason
        await rig.commands.send(order(reduce_only=False))
        await rig.commands.send(order(reduce_only=True))
        await settle(rig)
        refused = rig.events.receive_nowait()
        assert isinstance(refused, OrderRejected) and "reducing" in refused.reason
        passed = rig.approved.receive_nowait()
        assert isinstance(passed, SubmitOrder) and passed.reduce_only
        rig.snapshots.publish(snapshot("100000", mark="5000"))  # out of urgent, still in the warning band
        await settle(rig)
        assert rig.trading.state is TradingState.REDUCING  # hysteresis: no flapping at the line
        rig.snapshots.publish(snapshot("100000", mark="3000"))  # margin restored
        await settle(rig)
        assert rig.trading.state.value == "ACTIVE"


@pytest.mark.asyncio
async def test_drawdown_breaker_levels_drive_reducing_then_halted() -> None:
    async with running_rig() as rig:
        for nav, state in (("100000", TradingState.ACTIVE), ("96900", TradingState.REDUCING),
                           ("99000", TradingState.REDUCING), ("94900", TradingState.HALTED)):
            rig.snapshots.publish(snapshot(nav))
            await settle(rig)
            assert rig.trading.state is state, nav
        assert rig.actor.breaker.peak_nav == D(100_000)


@pytest.mark.asyncio
async def test_risk_never_lifts_an_operator_halt() -> None:
    async with running_rig() as rig:
        rig.trading.halt("operator signal SIGUSR1", source="operator")
        rig.snapshots.publish(snapshot("100000"))
        await settle(rig)
        assert rig.trading.state is TradingState.HALTED and rig.trading.reason == "operator signal SIGUSR1"


@pytest.mark.asyncio
async def test_reloaded_limits_apply_to_the_next_snapshot() -> None:
    async with running_rig() as rig:
        rig.snapshots.publish(snapshot("100000", mark="4900"))  # MR ≈ 0.212: fine under the default 0.20 warning
        await settle(rig)
        assert rig.actor.assessment is not None and rig.actor.assessment.margins[0].level.name == "OK"
        rig.limits[0] = RiskLimits(margin_warning_ratio=D("0.30"), margin_urgent_ratio=D("0.25"))  # as SIGHUP does
        rig.snapshots.publish(snapshot("100000", mark="4901"))
        await settle(rig)
        assert rig.trading.state is TradingState.REDUCING


@pytest.mark.asyncio
async def test_a_tripped_breaker_survives_a_restart_of_the_process(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    async with running_rig(store) as rig:
        for nav in ("100000", "95900"):
            rig.snapshots.publish(snapshot(nav))
            await settle(rig)
        assert rig.actor.breaker.tripped is DrawdownAction.CLOSE_PART
    # A new process: a fresh actor, the same state directory. NAV has recovered, the breaker stays tripped.
    async with running_rig(StateStore(tmp_path / "state")) as rig:
        assert rig.actor.breaker.tripped is DrawdownAction.CLOSE_PART
        assert rig.actor.breaker.peak_nav == D(100_000)
        rig.snapshots.publish(snapshot("99500"))
        await settle(rig)
        assert rig.trading.state is TradingState.REDUCING


def test_state_is_replaced_atomically(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save("k", {"a": "1"})
    store.save("k", {"a": "2"})
    assert store.load("k") == {"a": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json"]  # no temporary file left behind
    assert store.load("missing") is None


@pytest.mark.asyncio
async def test_stale_market_data_stops_new_exposure_until_it_is_fresh_again() -> None:
    async with running_rig() as rig:
        rig.snapshots.publish(snapshot("100000", ages=(("okx:Perp:ETHUSDT", D(3 * 3600)),)))
        await settle(rig)
        assert rig.trading.state is TradingState.REDUCING
        assert rig.trading.reason == "stale market data: okx:Perp:ETHUSDT"
        rig.snapshots.publish(snapshot("100000", ages=(("okx:Perp:ETHUSDT", D(0)),)))
        await settle(rig)
        assert rig.trading.state.value == "ACTIVE"


@pytest.mark.asyncio
async def test_an_eth_share_class_measures_drawdown_in_eth_not_in_dollars() -> None:
    """Found on the synthetic replay: eth_leveraged was halted by the breaker when ETH fell 5 % in dollars,
    though its NAV in ETH — what its investors hold — had not fallen at all."""
    def eth_book(nav_eth: str, eth_usd: str) -> PortfolioSnapshotted:
        return PortfolioSnapshotted((), (), D(eth_usd), D(nav_eth), D(nav_eth) * D(eth_usd), 1, 0, 0)

    async with running_rig(currency="ETH") as rig:
        rig.snapshots.publish(eth_book("30", "3000"))
        await settle(rig)
        rig.snapshots.publish(eth_book("30.001", "2400"))  # ETH −20 % in dollars, the NAV in ETH up
        await settle(rig)
        assert rig.trading.state is TradingState.ACTIVE and rig.actor.breaker.peak_nav == D("30.001")
        rig.snapshots.publish(eth_book("28.2", "2400"))  # −6 % in ETH: that is a drawdown
        await settle(rig)
        assert rig.trading.state.value == "HALTED"  # (not `is`: mypy keeps the ACTIVE it narrowed to above)


@pytest.mark.asyncio
async def test_an_operator_resume_re_arms_the_breaker_so_the_resume_holds() -> None:
    async with running_rig() as rig:
        rig.snapshots.publish(snapshot("100000"))
        await settle(rig)
        rig.snapshots.publish(snapshot("94000"))  # −6 %: close all and halt
        await settle(rig)
        assert rig.trading.state is TradingState.HALTED
        # Resumed without re-arming, the latched breaker puts trading straight back to HALTED.
        rig.trading.set(TradingState.ACTIVE, "operator", source="operator")
        rig.snapshots.publish(snapshot("94001"))
        await settle(rig)
        assert rig.trading.state.value == "HALTED"
        # `basisd resume` re-arms it: the loss taken is accepted, the breaker measures from here.
        rig.actor.rearm_breaker()
        rig.trading.set(TradingState.ACTIVE, "operator", source="operator")
        rig.snapshots.publish(snapshot("94002"))
        await settle(rig)
        assert rig.trading.state.value == "ACTIVE"
        assert rig.actor.breaker.tripped is DrawdownAction.NONE and rig.actor.breaker.peak_nav == D(94002)


@pytest.mark.asyncio
async def test_reloaded_drawdown_levels_reach_the_breaker_and_its_peak_is_kept() -> None:
    """Found in review: SIGHUP logged risk.drawdown_* as reloaded while the breaker kept its old levels."""
    commands: LosslessChannel[Command] = LosslessChannel("risk.commands", 16)
    approved: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 16)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 16)
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("risk.snapshots", 4, lambda s: s.key)
    levels: list[tuple[Decimal, ...]] = [(D("0.03"), D("0.04"), D("0.05"))]
    actor = RiskActor(commands, approved, events, snapshots, RiskLimits, DrawdownBreaker(),
                      breaker_levels=lambda: levels[0])
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=trading, policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    rig = Rig(commands, approved, events, snapshots, trading, actor, [RiskLimits()])
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        snapshots.publish(snapshot("100000"))
        await settle(rig)
        # An operator widened them (SIGHUP): levels, unwind fractions and the daily loss limit.
        levels[0] = (D("0.06"), D("0.08"), D("0.10"), D("0.5"), D("0.5"), D("0.06"))
        snapshots.publish(snapshot("96000"))  # −4 %: would have closed everything under the old levels
        await settle(rig)
        assert actor.breaker.halt_fraction == D("0.10") and actor.breaker.peak_nav == D(100_000)
        assert actor.breaker.tripped is DrawdownAction.NONE and trading.state is TradingState.ACTIVE
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_risk_approves_nothing_until_the_start_gate_opens_and_says_why() -> None:
    gate = StartGate((LISTENERS,))
    async with running_rig(gate=gate) as rig:
        await rig.commands.send(order(reduce_only=True))  # even a reduce-only order waits for start-up
        with anyio.fail_after(2):
            refused = await rig.events.receive()
        gate.passed(LISTENERS)
        await rig.commands.send(order(reduce_only=False))
        with anyio.fail_after(2):
            approved = await rig.approved.receive()
    assert isinstance(refused, OrderRejected) and refused.reason == "start-up: waiting for the control socket, " \
        "metrics and API listeners to be bound"
    assert isinstance(approved, SubmitOrder) and not approved.reduce_only


# --- the breaker's levels act ----------------------------------------------------------------------------

HOUR_NS = 3_600 * 1_000_000_000


def at(nav: str, hour: int) -> PortfolioSnapshotted:
    return replace(snapshot(nav), ts_event=hour * HOUR_NS)


def unwind_instruction(fraction: Decimal) -> Instruction:
    return Instruction(0, "WITHDRAWAL" if fraction < 1 else "UNWIND", "test", D(0), (
        Step(1, "REDUCE_PERP_SHORT", Executor.CEX, "binance", {"amount": D(10) * fraction}),), True, "breaker")


@asynccontextmanager
async def acting_rig(store: StateStore | None = None) -> AsyncIterator[
        tuple[Rig, list[BreakerAction], list[tuple[BreakerAction, str]]]]:
    """A risk actor that follows execution and plans each unwind as one reduce-only instruction."""
    commands: LosslessChannel[Command] = LosslessChannel("risk.commands", 16)
    approved: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 16)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 16)
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("risk.snapshots", 4, lambda s: s.key)
    planned: list[BreakerAction] = []
    recorded: list[tuple[BreakerAction, str]] = []

    def plan(action: BreakerAction) -> Unwind:
        planned.append(action)
        return Unwind([ExecuteInstruction(InstructionId(f"breaker{int(action.level)}"),
                                          unwind_instruction(action.unwind_fraction), 0, 0, operator_flatten=True)])

    actor = RiskActor(commands, approved, events, snapshots, RiskLimits, DrawdownBreaker(), store, plan=plan,
                      record=lambda a, sent: recorded.append((a, sent)), follows_execution=True)
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=trading, policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(commands, approved, events, snapshots, trading, actor, [RiskLimits()]), planned, recorded
        tg.cancel_scope.cancel()


def strategy_instruction(reduces: bool = True) -> ExecuteInstruction:
    return ExecuteInstruction(InstructionId("i9"), unwind_instruction(D("0.1")) if reduces else
                              replace(unwind_instruction(D("0.1")), reduces_exposure=False), 0, 0)


def done(rig: Rig, instruction_id: str) -> None:
    """Execution's word that the unwind finished (reports 0: nothing for the books to catch up on)."""
    rig.actor.instruction_finished(InstructionFinished(InstructionId(instruction_id), True, 1, 0, "", 0, 0))


@pytest.mark.asyncio
async def test_each_breaker_level_sends_its_unwind_once_in_order_and_the_last_halts() -> None:
    async with acting_rig() as (rig, planned, recorded):
        rig.snapshots.publish(at("100000", 1))
        await settle(rig)
        rig.snapshots.publish(at("96900", 2))  # −3.1 %: level 1
        await settle(rig)
        first = rig.approved.receive_nowait()
        assert isinstance(first, ExecuteInstruction) and first.instruction_id == "breaker1"
        assert first.operator_flatten and first.instruction.reduces_exposure  # an emergency unwind, any state
        assert rig.trading.state is TradingState.REDUCING
        assert rig.trading.reason.startswith("drawdown breaker level 1 (reduce): drawdown 3.10%")
        # While it runs, the strategy's instructions wait (no step done: decided again next cycle) and the next
        # level is not judged on books the unwind is still changing.
        await rig.commands.send(strategy_instruction())
        rig.snapshots.publish(at("95000", 2))
        await settle(rig)
        refused = rig.events.receive_nowait()
        assert isinstance(refused, InstructionFinished) and not refused.completed and refused.steps_done == 0
        assert refused.reason == "the drawdown breaker's level 1 unwind is in progress: decided again next cycle"
        assert len(rig.approved) == 0 and [a.level for a in planned] == [DrawdownAction.REDUCE]
        done(rig, "breaker1")
        rig.snapshots.publish(at("96900", 3))  # settled; the unwind cost nothing (NAV unchanged)
        await settle(rig)
        await rig.commands.send(strategy_instruction())  # reduce-only: passes in REDUCING again
        await settle(rig)
        assert isinstance(rig.approved.receive_nowait(), ExecuteInstruction)
        rig.actor.instruction_finished(InstructionFinished(InstructionId("i9"), True, 1, 0, "", 0, 0))
        rig.snapshots.publish(at("95900", 4))  # −4.1 %: level 2, half of what is left
        await settle(rig)
        assert rig.approved.receive_nowait().instruction_id == "breaker2"
        done(rig, "breaker2")
        rig.snapshots.publish(at("95900", 5))
        await settle(rig)
        rig.snapshots.publish(at("94900", 6))  # −5.1 %: flatten and halt
        await settle(rig)
        last = rig.approved.receive_nowait()
        assert isinstance(last, ExecuteInstruction) and last.instruction.type == "UNWIND"
        assert rig.trading.state.value == "HALTED" and "level 3 (flatten_and_halt)" in rig.trading.reason
        done(rig, "breaker3")
        for hour, nav in ((7, "94900"), (8, "90000"), (9, "80000")):  # latched: nothing acts twice
            rig.snapshots.publish(at(nav, hour))
            await settle(rig)
    assert [(a.level, a.unwind_fraction) for a in planned] == [
        (DrawdownAction.REDUCE, D("0.5")), (DrawdownAction.CLOSE_PART, D("0.5")),
        (DrawdownAction.FLATTEN_AND_HALT, D(1))]
    assert [a.level for a, _ in recorded] == [a.level for a in planned]  # each in the journal
    assert recorded[2][1] == "breaker3 (UNWIND: REDUCE_PERP_SHORT)"
    assert [a["level"] for a in rig.actor.actions] == [1, 2, 3]
    assert [a["time"] for a in rig.actor.actions] == ["1970-01-01T02:00:00+00:00", "1970-01-01T04:00:00+00:00",
                                                      "1970-01-01T06:00:00+00:00"]


@pytest.mark.asyncio
async def test_the_unwind_waits_for_an_approved_instruction_in_flight_and_resume_re_arms_every_level() -> None:
    async with acting_rig() as (rig, planned, _):
        rig.snapshots.publish(at("100000", 1))
        await settle(rig)
        await rig.commands.send(strategy_instruction(reduces=False))  # approved while ACTIVE, still running
        await settle(rig)
        assert rig.approved.receive_nowait().instruction_id == "i9"
        rig.snapshots.publish(at("96500", 2))  # level 1 trips: its unwind is sized once i9 has finished
        await settle(rig)
        assert planned == [] and len(rig.approved) == 0 and rig.trading.state is TradingState.REDUCING
        rig.actor.instruction_finished(InstructionFinished(InstructionId("i9"), True, 1, 0, "", 0, 0))
        rig.snapshots.publish(at("96500", 2))
        await settle(rig)
        assert [a.level for a in planned] == [DrawdownAction.REDUCE]
        done(rig, "breaker1")
        rig.actor.rearm_breaker()  # `basisd resume`
        rig.trading.set(TradingState.ACTIVE, "operator", source="operator")
        rig.snapshots.publish(at("96500", 3))
        await settle(rig)
        rig.snapshots.publish(at("93500", 4))  # −3.1 % from the re-armed peak: level 1 acts again
        await settle(rig)
        assert [a.level for a in planned] == [DrawdownAction.REDUCE, DrawdownAction.REDUCE]
        assert rig.actor.breaker.peak_nav == D(96500)


@pytest.mark.asyncio
async def test_a_level_that_acted_is_not_resent_after_a_restart_and_its_unwind_cost_stays_excluded(
        tmp_path: Path) -> None:
    async with acting_rig(StateStore(tmp_path)) as (rig, planned, _):
        rig.snapshots.publish(at("100000", 1))
        await settle(rig)
        rig.snapshots.publish(at("96900", 2))  # level 1
        await settle(rig)
        done(rig, "breaker1")
        rig.snapshots.publish(at("96000", 2))  # settled: the unwind cost 900 (no books here: the NAV's change)
        await settle(rig)
        assert rig.actor.breaker.excluded_costs == D(900) and [a.level for a in planned] == [DrawdownAction.REDUCE]
    async with acting_rig(StateStore(tmp_path)) as (rig, planned, _):  # a new process, the same state directory
        assert rig.actor.breaker.tripped is DrawdownAction.REDUCE and rig.actor.breaker.excluded_costs == D(900)
        rig.snapshots.publish(at("96000", 3))  # −3.1 % once its own unwind cost is excluded: nothing new
        await settle(rig)
        assert planned == [] and len(rig.approved) == 0
        rig.snapshots.publish(at("95000", 4))  # −4.1 %: level 2, sized from level 1 (half of what is left)
        await settle(rig)
        assert [(a.level, a.unwind_fraction) for a in planned] == [(DrawdownAction.CLOSE_PART, D("0.5"))]
