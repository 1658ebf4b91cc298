"""The strategy actor's reaction to how its instructions ended."""

from __future__ import annotations

import random
from decimal import Decimal

import anyio
import pytest

from actors.strategy import StrategyActor
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ids import InstructionId, InstrumentId
from daemon.domain.ledger import ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.messages import (
    Command,
    ExecuteInstruction,
    InstructionFinished,
    MarketUpdated,
    OrderEvent,
    PortfolioSnapshotted,
    PriceTicked,
    TradingState,
)
from daemon.domain.strategy import ModeSpec
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell

D = Decimal
SPEC = ModeSpec("usdt_market_neutral", "USDT", "ETH", True, True, True, True, D("0.5"), D("0.909075"), D("0.95"),
                {"binance": D(1)}, D(1), D("0.02"), D(10))


async def outcome(event: InstructionFinished) -> TradingStateCell:
    market: ConflatingChannel[MarketUpdated | PortfolioSnapshotted] = ConflatingChannel("m", 8, lambda m: m.key)
    events: LosslessChannel[OrderEvent] = LosslessChannel("e", 8)
    commands: LosslessChannel[Command] = LosslessChannel("c", 8)
    trading = TradingStateCell()
    actor = StrategyActor(market, events, commands, spec=SPEC, venues=("binance",))
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=trading, policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await events.send(event)
        with anyio.fail_after(2):
            while len(events) or actor.failed_instructions == 0:
                await anyio.sleep(0.01)
        await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    return trading


@pytest.mark.asyncio
async def test_a_half_executed_instruction_halts_trading_for_a_human() -> None:
    trading = await outcome(InstructionFinished(InstructionId("i1"), False, 3, 3, "step 4 BUY_SPOT failed: x", 0, 0))
    assert trading.state is TradingState.HALTED
    assert "stopped after 3 step(s)" in trading.reason and "BUY_SPOT" in trading.reason


@pytest.mark.asyncio
async def test_an_instruction_refused_before_any_step_changes_nothing() -> None:
    trading = await outcome(InstructionFinished(InstructionId("i2"), False, 0, 0, "trading is reducing", 0, 0))
    assert trading.state is TradingState.ACTIVE


def _books(usdt: Decimal, short: Decimal, entry: Decimal) -> PortfolioSnapshotted:
    """binance holding `usdt` and a perp short of `short` ETH at `entry`, nothing else: what the strategy values."""
    ledger = Ledger(("binance",), gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "USDT", usdt),),
                           (PerpChange("binance", "ETHUSDT", short, entry),)))
    return PortfolioSnapshotted((), (), entry, D(0), usdt, 1, 0, 0, ledger=ledger.snapshot())


def _prices(eth: Decimal, ts_ns: int) -> MarketUpdated:
    return MarketUpdated((PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), eth, ts_ns, ts_ns),
                          PriceTicked(InstrumentId("binance:Perp:ETHUSDT"), eth, ts_ns, ts_ns)), ts_ns, ts_ns)


@pytest.mark.asyncio
@pytest.mark.parametrize("decide_on_risk", [True, False])
async def test_a_margin_falling_into_the_warning_band_is_decided_on_inside_the_interval(decide_on_risk: bool) -> None:
    market: ConflatingChannel[MarketUpdated | PortfolioSnapshotted] = ConflatingChannel("m", 8, lambda m: m.key)
    events: LosslessChannel[OrderEvent] = LosslessChannel("e", 8)
    commands: LosslessChannel[Command] = LosslessChannel("c", 8)
    clock = VirtualClock(0, None)
    actor = StrategyActor(market, events, commands, spec=SPEC, venues=("binance",), decision_interval_s=60,
                          decide_on_risk=decide_on_risk)
    sup = Supervisor([actor], clock=clock, trading=TradingStateCell(), policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        # A short of 10 ETH at 3000 with 15,000 USDT: a margin ratio of 0.5, OK. The first decision of the interval.
        await market.send(_books(D(15_000), D(-10), D(3000)))
        await market.send(_prices(D(3000), 1_000_000_000))
        with anyio.fail_after(2):
            while actor.decisions == 0:
                await anyio.sleep(0.01)
        decided = actor.decisions
        # (Its delta adjustment, the book holding no long: done, so that nothing is pending.)
        while len(commands):
            first = commands.receive_nowait()
            assert isinstance(first, ExecuteInstruction)
            await events.send(InstructionFinished(first.instruction_id, True, 1, 0, "", 0, 0))
        await anyio.sleep(0.05)
        # Ten seconds later, inside the same 60 s interval: ETH at 3700 leaves it 15,000 − 7,000 = 8,000 USDT of
        # equity on 37,000 of notional, 0.216, then 3750: 0.2, the warning level (margin_warning_ratio 0.20).
        await market.send(_prices(D(3700), 10_000_000_000))
        await anyio.sleep(0.05)
        assert actor.decisions == decided  # still OK: the interval's rule holds
        await market.send(_prices(D(3760), 11_000_000_000))
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    if decide_on_risk:
        assert actor.decisions == decided + 1 and actor.risk_decisions == 1
        issued = [commands.receive_nowait() for _ in range(len(commands))]
        assert "ADD_MARGIN_TO_CEX" in [c.instruction.type for c in issued if isinstance(c, ExecuteInstruction)]
    else:
        assert actor.decisions == decided and actor.risk_decisions == 0  # a replay waits for its next bar
