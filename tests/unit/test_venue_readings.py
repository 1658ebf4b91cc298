"""The simulated venues keep the worst margin ratio / health factor they saw *before* acting (issue 11 §2), and
every liquidation with its time: the readings taken after the hour's actions hide the breach that caused them."""

from __future__ import annotations

from decimal import Decimal

import anyio

from daemon.backtest_risk import liquidation_events, worst_before_action
from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ledger import WALLET, ChangeSet, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import GasPriceReported, OracleRateReported, ReserveIndexesReported, VenueReport
from daemon.venues.book import LiquidationEvent, Reading
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal
HOUR = 3_600 * 10**9


def test_the_margin_ratio_before_a_top_up_is_the_one_on_record() -> None:
    """OKX on history: 0.1988 at the new mark, then the strategy topped up and the hourly row read 0.2061."""
    async def scenario() -> tuple[SimulatedExchange, bool]:
        clock = VirtualClock(0, None)
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        okx = SimulatedExchange("okx", clock, reports, taker_fee_bps=D(0))
        okx.book.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("okx", "USDT", D(1000)),),
                                 (PerpChange("okx", "ETHUSDT", D(-1), D(4000)),)))
        okx.set_price("Perp", D(4000))
        await okx.check_liquidation()  # 1000 / 4000 = 0.25
        await clock.sleep_until(HOUR)
        okx.set_price("Perp", D(4170))
        liquidated = await okx.check_liquidation()  # (1000 − 170) / 4170 = 0.1990: the venue sees it first
        okx.record_transfer(ChangeSet(Reason.VENUE_TRANSFER, HOUR, (TokenChange("okx", "USDT", D(100)),)))
        await clock.sleep_until(2 * HOUR)
        await okx.check_liquidation()  # after the top-up: 930 / 4170 = 0.2230
        return okx, liquidated

    okx, liquidated = anyio.run(scenario)
    assert not liquidated and okx.liquidation_events == []
    assert okx.worst_margin_ratio is not None
    assert okx.worst_margin_ratio.value == D(830) / D(4170) and okx.worst_margin_ratio.ts_ns == HOUR
    summary = worst_before_action(_NoChain(), {"okx": okx})
    assert summary == {"health_factor": None, "margin_ratio": {"okx": {"value": "0.199041", "at": "1970-01-01 01:00"}}}


class _NoChain:
    """A book without AAVE debt: no health factor to read."""

    worst_health_factor: Reading | None = None
    liquidation_events: list[LiquidationEvent] = []


def test_the_health_factor_the_liquidators_acted_on_is_on_record_with_the_liquidation() -> None:
    async def scenario() -> SimulatedChain:
        clock = VirtualClock(0, None)
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 256)
        board = MarketBoard()
        for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(0), 0, 0),
                        ReserveIndexesReported("weETH", D(1), D(1), 0, 0),
                        ReserveIndexesReported("WETH", D(1), D(1), 0, 0)):
            board.update(message)
        chain = SimulatedChain(clock, board, reports, {})
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        await chain.atomic_leverage_entry(D(10), D(100), D(90), "entry")  # HF 0.95 · 100 / 90 = 1.0556
        assert await chain.check_liquidation() == 0
        await clock.sleep_until(3 * HOUR)
        board.update(OracleRateReported("weETH/ETH", D("0.987"), 3 * HOUR, 3 * HOUR))  # −6 %: HF 0.9922
        assert await chain.check_liquidation() >= 1
        return chain

    chain = anyio.run(scenario)
    worst = chain.worst_health_factor
    assert worst is not None and worst.ts_ns == 3 * HOUR
    assert worst.value == D("0.95") * (D(100) / D("1.05") * D("0.987")) / D(90)
    assert chain.health_factor() >= 1  # what an after-the-fact reading sees: the breach is gone
    first = chain.liquidation_events[0]
    assert (first.venue, first.ts_ns, first.trigger, first.value_before) == ("aave_v3", 3 * HOUR, "health_factor",
                                                                             worst.value)
    assert first.loss > 0 and first.unit == "ETH"
    (event, *_) = liquidation_events(chain, {})
    assert event["venue"] == "aave_v3" and event["at"] == "1970-01-01 03:00" and event["trigger"] == "health_factor"
