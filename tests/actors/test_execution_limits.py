"""Seed 004's limits in the execution actor, on the real simulated exchange and chain: the gas price cap, the
maximum position size, the slippage cap per order and the timeout per instruction."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal

import anyio
import pytest

from actors.execution import ExecutionActor
from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.limits import ExecutionLimits
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    AccountReport,
    ExecuteInstruction,
    GasPriceReported,
    InstructionFinished,
    OracleRateReported,
    OrderEvent,
    OrderRejected,
    OrderStatusReport,
    PriceTicked,
    ReserveIndexesReported,
    Side,
    SubmitOrder,
    TradingState,
    VenueReport,
)
from daemon.domain.strategy import Executor, Instruction, Step
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain
from tests.actors.test_execution_actor import entry_instruction as entry

D = Decimal


class HangingExchange:
    """A venue that takes an order and never answers (a lost response): counts what it was sent."""

    def __init__(self, venue: str) -> None:
        self.venue = VenueId(venue)
        self.received: list[ClientOrderId] = []

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        self.received.append(order.client_order_id)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def cancel_all_orders(self) -> int:
        return 0

    async def fetch_account(self) -> AccountReport:
        return AccountReport(self.venue, (), (), 0, 0, 0)


@dataclass
class Rig:
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction]
    reports: LosslessChannel[VenueReport]
    events: LosslessChannel[OrderEvent]
    exchange: SimulatedExchange
    hanging: HangingExchange
    trading: TradingStateCell
    board: MarketBoard
    limits: list[ExecutionLimits]
    legs: dict[str, Decimal]
    actor: ExecutionActor


@asynccontextmanager
async def running(limits: ExecutionLimits) -> AsyncIterator[Rig]:
    clock = VirtualClock(0, None)
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 64)
    reports: LosslessChannel[VenueReport] = LosslessChannel("fills.reports", 256)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 64)
    exchange = SimulatedExchange("binance", clock, reports, taker_fee_bps=D(5))
    exchange.set_price("Spot", D(3000))
    exchange.set_price("Perp", D(3001))
    hanging = HangingExchange("bybit")
    board = MarketBoard()
    for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(10), 0, 0),
                    ReserveIndexesReported("weETH", D("1.01"), D("1.01"), 0, 0),
                    ReserveIndexesReported("WETH", D("1.03"), D("1.05"), 0, 0),
                    PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), 0, 0),
                    PriceTicked(InstrumentId("binance:Perp:ETHUSDT"), D(3001), 0, 0),
                    PriceTicked(InstrumentId("bybit:Perp:ETHUSDT"), D(3001), 0, 0)):
        board.update(message)
    chain = SimulatedChain(clock, board, reports, {"binance": exchange})
    chain.receive(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(100_000)),)))
    current = [limits]
    legs: dict[str, Decimal] = {}  # the books' legs in USD, as the composition root values them

    def positions() -> tuple[Mapping[str, Decimal], Decimal]:
        return legs, D(3000)

    venues = {"binance": exchange, "bybit": hanging}
    actor = ExecutionActor(orders, venues, events, chain,  # type: ignore[arg-type]
                           limits=lambda: current[0], market=board, positions=positions)
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=clock, trading=trading, policy=RestartPolicy(), heartbeat_interval_s=0.05,
                     heartbeat_timeout_s=5, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(orders, reports, events, exchange, hanging, trading, board, current, legs, actor)
        tg.cancel_scope.cancel()


async def finished(rig: Rig) -> InstructionFinished:
    with anyio.fail_after(5):
        while True:
            event = await rig.events.receive()
            if isinstance(event, InstructionFinished):
                return event


async def run(rig: Rig, name: str, instruction: Instruction) -> InstructionFinished:
    await rig.orders.send(ExecuteInstruction(InstructionId(name), instruction, 0, 0))
    return await finished(rig)


# --- gas price cap ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_above_the_gas_cap_an_instruction_waits_untouched_and_goes_through_once_gas_falls() -> None:
    async with running(ExecutionLimits(max_gas_price_gwei=D(100))) as rig:
        rig.board.update(GasPriceReported(D(150), 0, 0))
        deferred = await run(rig, "i1", entry(D(10)))
        assert (deferred.completed, deferred.steps_done, deferred.reports) == (False, 0, 0)
        assert deferred.reason == "gas price 150 gwei is above risk.max_gas_price_gwei 100: ENTRY waits for the " \
                                  "next cycle"
        assert len(rig.reports) == 0 and rig.exchange.orders_received == 0  # nothing was sent anywhere
        assert rig.trading.state is TradingState.ACTIVE  # a deferral is no failure: the strategy decides again
        rig.board.update(GasPriceReported(D(40), 0, 0))  # the next cycle
        done = await run(rig, "i2", entry(D(10)))
        assert (done.completed, done.steps_done) == (True, 5)


@pytest.mark.asyncio
async def test_the_gas_cap_never_delays_an_instruction_that_reduces_exposure() -> None:
    async with running(ExecutionLimits(max_gas_price_gwei=D(100))) as rig:
        rig.board.update(GasPriceReported(D(400), 0, 0))
        margin_top_up = Instruction(1, "ADD_MARGIN_TO_CEX", "binance", D(5_000), (
            Step(1, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "binance", {"amount_usd": D(5_000)}),), True, "margin")
        done = await run(rig, "i1", margin_top_up)
        assert done.completed and done.reports == 1
        orders_only = Instruction(1, "DELTA_ADJUST", "cex", D(3_000), (
            Step(1, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "binance", {"amount_usd": D(5_000)}),), False, "x")
        assert not (await run(rig, "i2", orders_only)).completed  # the same step adding exposure waits


# --- maximum position size --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_instruction_that_would_take_a_leg_past_the_position_limit_is_refused_whole() -> None:
    async with running(ExecutionLimits(max_position_usd=D(50_000))) as rig:
        rig.legs["binance:perp"] = D(21_000)  # already short 7 ETH there
        refused = await run(rig, "i1", entry(D(10)))  # +30 000 of perp: 51 000
        assert (refused.completed, refused.steps_done, refused.reports) == (False, 0, 0)
        assert refused.reason == ("step 3 OPEN_PERP_SHORT would take binance:perp to 51000 USD, above "
                                  "risk.max_position_usd 50000: ENTRY refused whole (not clipped: its legs are sized "
                                  "together)")
        assert len(rig.reports) == 0 and rig.actor.refused == 1
        # The spot leg is bought then withdrawn to the wallet within the same entry: only the peak counts.
        rig.legs["binance:perp"] = D(0)
        done = await run(rig, "i2", entry(D(10)))
        assert done.completed


@pytest.mark.asyncio
async def test_the_position_limit_never_blocks_a_reduction_whatever_the_leg_s_size() -> None:
    async with running(ExecutionLimits(max_position_usd=D(10_000))) as rig:
        assert (await run(rig, "i0", replace(entry(D(10)), reduces_exposure=False))).completed is False
        rig.limits[0] = ExecutionLimits(max_position_usd=D(1_000_000))  # a SIGHUP raised it
        assert (await run(rig, "i1", entry(D(10)))).completed
        rig.limits[0] = ExecutionLimits(max_position_usd=D(10_000))  # and lowered it below what is held
        rig.legs["binance:perp"] = D(30_010)
        reduce = Instruction(1, "DELTA_ADJUST", "cex", D(3_000), (
            Step(1, "REDUCE_PERP_SHORT", Executor.CEX, "binance", {"amount_eth": D(1)}),), True, "trim")
        assert (await run(rig, "i2", reduce)).completed


# --- slippage cap per order -------------------------------------------------------------------------------


def order(qty: str, side: Side = Side.SELL, reduce_only: bool = False, cid: str = "c1") -> SubmitOrder:
    return SubmitOrder(ClientOrderId(cid), InstructionId("i1"), InstrumentId("binance:Perp:ETHUSDT"), side, D(qty),
                       reduce_only, "test", 0, 0)


async def outcome(rig: Rig) -> OrderRejected | None:
    """The rejection of the last order, or None if it filled (a fill report reached the venue's channel)."""
    with anyio.fail_after(5):
        while not len(rig.events) and not len(rig.reports):
            await anyio.sleep(0.005)
    return rig.events.receive_nowait() if len(rig.events) else None  # type: ignore[return-value]


@pytest.mark.asyncio
async def test_an_order_whose_fill_would_be_worse_than_the_cap_is_refused_by_the_venue_whole() -> None:
    # The simulated venue slips 5 bps per million USD of notional: 2 000 ETH (6 M USD) slip 30 bps.
    async with running(ExecutionLimits(max_slippage_bps=D(2))) as rig:
        rig.exchange.book.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "USDT", D(10_000_000)),)))
        await rig.orders.send(order("2000"))
        rejected = await outcome(rig)
        assert isinstance(rejected, OrderRejected)
        assert rejected.reason == "binance: would fill at 2991.99, beyond the limit price 3000.40 (slippage cap)"
        assert rig.exchange.book.perp("binance", "ETHUSDT").quantity == 0  # no partial fill either
        await rig.orders.send(order("20", cid="c2"))  # 60 000 USD slips 0.3 bps: within the cap
        assert await outcome(rig) is None
        fill = rig.reports.receive_nowait()
        assert fill.price >= D(3001) * (1 - D("0.0002"))  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_reduce_only_order_is_not_held_back_by_the_slippage_cap() -> None:
    async with running(ExecutionLimits(max_slippage_bps=D("0.1"))) as rig:
        rig.exchange.book.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "USDT", D(10_000_000)),)))
        rig.limits[0] = ExecutionLimits(max_slippage_bps=D(50))
        await rig.orders.send(order("2000", cid="open"))
        assert await outcome(rig) is None
        rig.reports.receive_nowait()
        rig.limits[0] = ExecutionLimits(max_slippage_bps=D("0.1"))
        await rig.orders.send(order("2000", Side.BUY, reduce_only=True, cid="close"))  # slips 30 bps, cap 0.1
        assert await outcome(rig) is None
        assert rig.exchange.book.perp("binance", "ETHUSDT").quantity == 0


# --- execution timeout per instruction ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_instruction_past_its_timeout_is_failed_with_its_state_halts_trading_and_sends_nothing_twice() -> None:
    async with running(ExecutionLimits(instruction_timeout_s=0.2)) as rig:
        hedge = Instruction(1, "DELTA_ADJUST", "cex", D(3_000), (
            Step(1, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "binance", {"amount_usd": D(5_000)}),
            Step(2, "INCREASE_PERP_SHORT", Executor.CEX, "bybit", {"amount_eth": D(1)}),
            Step(3, "INCREASE_PERP_SHORT", Executor.CEX, "binance", {"amount_eth": D(1)}),
        ), False, "hedge")
        done = await run(rig, "i7", hedge)
        assert (done.completed, done.steps_done, done.reports) == (False, 1, 1)  # the transfer went through
        assert done.reason == ("timed out after 0.2 s (risk.instruction_timeout_s) in step 2 INCREASE_PERP_SHORT: "
                               "its outcome is unknown (ask the venue for i7-2); nothing is resent")
        assert rig.trading.state is TradingState.HALTED
        assert rig.trading.reason.startswith("instruction i7 timed out")
        assert rig.hanging.received == ["i7-2"]  # sent once, never again
        assert rig.exchange.orders_received == 0  # and the step after it never went out
        assert rig.actor.timed_out == 1
