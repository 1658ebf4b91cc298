"""The strategy actor's reaction to how its instructions ended."""

from __future__ import annotations

import random
from decimal import Decimal

import anyio
import pytest

from actors.strategy import StrategyActor
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ids import InstructionId
from daemon.domain.messages import (
    Command,
    InstructionFinished,
    MarketUpdated,
    OrderEvent,
    PortfolioSnapshotted,
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
