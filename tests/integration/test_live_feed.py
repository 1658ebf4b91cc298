"""The live feed (paper mode's market data) against the exchange fake: real ccxt, real Binance hosts, over TLS."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TypeVar

import pytest
from structlog.testing import capture_logs

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    BalancesChanged,
    FillReport,
    FundingRateReported,
    GasPriceReported,
    PriceTicked,
    Side,
    SubmitOrder,
    VenueReport,
)
from daemon.domain.risk import RiskLimits, stale_series
from daemon.replay.live_feed import LiveFeed
from daemon.venues.ccxt_market import CLIENTS, CcxtMarketSource
from daemon.venues.simulated import SimulatedExchange
from tests.fakes.exchange.server import FakeExchange

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

T = TypeVar("T")
PERP = InstrumentId("binance:Perp:ETHUSDT")
SPOT = InstrumentId("binance:Spot:ETHUSDT")
NS_PER_MS = 1_000_000
EIGHT_HOURS_MS = 8 * 3_600_000


def paper_feed(fake: FakeExchange, reports: LosslessChannel[VenueReport]) -> tuple[LiveFeed, SimulatedExchange,
                                                                                   MarketBoard]:
    clock = WallClock()
    exchange = SimulatedExchange("binance", clock, reports, taker_fee_bps=Decimal(5))
    source = CcxtMarketSource("binance", {"ETH": "ETH/USDT:USDT"}, {"ETH": "ETH/USDT"}, timeout_s=2,
                              session=fake.session())
    board = MarketBoard()
    feed = LiveFeed({"binance": source}, clock, {"binance": exchange}, board, assets=("ETH",), spot_venue="binance",
                    poll_interval_s=0.05, request_timeout_s=2, gas_gwei=Decimal(12))
    return feed, exchange, board


def by_type(batch: Sequence[object], kind: type[T]) -> list[T]:
    return [m for m in batch if isinstance(m, kind)]


def order(n: int, instrument: InstrumentId, side: Side, quantity: str) -> SubmitOrder:
    return SubmitOrder(ClientOrderId(f"t-{n}"), InstructionId("t"), instrument, side, Decimal(quantity), False,
                       "test", 0, 0)


async def test_a_poll_is_the_replay_s_messages_at_the_venue_s_marks_and_the_exchanges_fill_there(
        exchange_fake: FakeExchange) -> None:
    st = exchange_fake.binance
    st.set_mark("ETHUSDT", Decimal("3123.45"))
    st.set_spot_price("ETHUSDT", Decimal("3120.5"))
    st.funding_rate["ETHUSDT"] = Decimal("0.00012")
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 64)
    feed, exchange, board = paper_feed(exchange_fake, reports)
    try:
        batch = await feed.next_batch()
    finally:
        await feed.close()
    assert batch is not None
    assert [(m.instrument_id, m.price) for m in by_type(batch, PriceTicked)] == [
        (PERP, Decimal("3123.45")), (SPOT, Decimal("3120.5"))]
    (funding,) = by_type(batch, FundingRateReported)
    assert funding.rate == Decimal("0.00012") and funding.settles_at_ns == st.next_funding_time_ms * NS_PER_MS
    assert [m.gwei for m in by_type(batch, GasPriceReported)] == [Decimal(12)]
    assert board.marks[("binance", "ETH")] == Decimal("3123.45") and board.prices["ETH"] == Decimal("3120.5")
    # Only public data was asked for: no key, no signature, on the venue's real hosts.
    assert {(r.host, r.path) for r in exchange_fake.requests} == {
        ("fapi.binance.com", "/fapi/v1/exchangeInfo"), ("fapi.binance.com", "/fapi/v1/premiumIndex"),
        ("api.binance.com", "/api/v3/exchangeInfo"), ("api.binance.com", "/api/v3/ticker/price")}
    # The simulated exchange fills at the live price (plus its own slippage model, a fraction of a cent here).
    exchange.credit_unreported("USDT", Decimal(10_000))
    status = await exchange.submit_order(order(1, SPOT, Side.BUY, "0.1"))
    assert status.status == "filled", status
    fill = reports.receive_nowait()
    assert isinstance(fill, FillReport) and abs(fill.price - Decimal("3120.5")) <= Decimal("0.01")


async def test_a_failing_venue_is_degraded_and_logged_its_series_go_stale_and_it_recovers(
        exchange_fake: FakeExchange) -> None:
    feed, _, board = paper_feed(exchange_fake, LosslessChannel("reports", 64))
    try:
        assert await feed.next_batch()
        exchange_fake.faults.maintenance(times=None)
        with capture_logs() as logs:
            degraded = await feed.next_batch()
            again = await feed.next_batch()
        assert degraded is not None and again is not None
        # Nothing from the venue, but the feed goes on: market time moves with the wall clock (the gas tick).
        assert [type(m) for m in degraded] == [GasPriceReported] and [type(m) for m in again] == [GasPriceReported]
        assert feed.health["binance"].degraded and feed.health["binance"].failures == 2
        warned = [e for e in logs if e["event"] == "market_venue_degraded"]
        assert len(warned) == 1 and warned[0]["venue"] == "binance"  # logged once, not at every poll
        assert "ExchangeNotAvailable" in warned[0]["error"] or "VenueDegraded" in warned[0]["error"]
        # The existing staleness machinery sees the venue's series age (seconds, on live data); the gas tick is fresh.
        stale = stale_series(board.ages_s(), RiskLimits(data_stale_after_s=Decimal("0.01"),
                                                        funding_stale_after_s=Decimal("0.01")))
        assert PERP in stale and SPOT in stale and f"funding:{PERP}" in stale and "gas" not in stale
        exchange_fake.faults.clear()
        with capture_logs() as logs:
            recovered = await feed.next_batch()
        assert recovered is not None and PERP in [getattr(m, "instrument_id", None) for m in recovered]
        assert not feed.health["binance"].degraded
        assert [e["failed_polls"] for e in logs if e["event"] == "market_venue_recovered"] == [2]
    finally:
        await feed.close()


async def test_a_venue_that_asks_us_to_wait_is_not_asked_again_before_it_said(exchange_fake: FakeExchange) -> None:
    feed, _, _ = paper_feed(exchange_fake, LosslessChannel("reports", 64))
    try:
        assert await feed.next_batch()
        exchange_fake.faults.rate_limit(retry_after=30, times=None)
        await feed.next_batch()
        asked = len(exchange_fake.requests)
        for _ in range(3):
            await feed.next_batch()
        assert len(exchange_fake.requests) == asked  # Retry-After: 30 s is honoured, with no request meanwhile
        assert feed.health["binance"].degraded
    finally:
        await feed.close()


async def test_funding_is_settled_on_the_simulated_exchange_when_the_venue_s_settlement_time_passes(
        exchange_fake: FakeExchange) -> None:
    st = exchange_fake.binance
    st.funding_rate["ETHUSDT"] = Decimal("0.0003")
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 64)
    feed, exchange, _ = paper_feed(exchange_fake, reports)
    try:
        await feed.next_batch()
        exchange.credit_unreported("USDT", Decimal(10_000))
        assert (await exchange.submit_order(order(1, PERP, Side.SELL, "1"))).status == "filled"
        reports.receive_nowait()  # the fill
        await feed.next_batch()
        assert exchange.funding_settlements == 0  # the same settlement time: nothing was paid yet
        mark = st.marks["ETHUSDT"]
        # The settlement passed: the venue names the next one (the fake's time moves on eight hours).
        st.clock_skew_ms += EIGHT_HOURS_MS
        st.funding_rate["ETHUSDT"] = Decimal("0.0001")
        await feed.next_batch()
    finally:
        await feed.close()
    assert exchange.funding_settlements == 1
    paid = reports.receive_nowait()
    assert isinstance(paid, BalancesChanged)
    # The short received the rate reported for the settlement that passed (0.0003), not the next one's.
    assert [c.delta for c in paid.change.tokens] == [(mark * Decimal("0.0003")).quantize(Decimal("0.00000001"))]


async def test_every_venue_paper_accepts_has_a_market_data_client() -> None:
    from daemon.config import MARKET_VENUES

    assert set(MARKET_VENUES) == set(CLIENTS)


async def test_bybit_s_marks_funding_and_spot_are_read_exactly_from_its_v5_payloads(
        exchange_fake: FakeExchange) -> None:
    st = exchange_fake.bybit
    st.set_mark("ETHUSDT", Decimal("3301.37"))
    st.set_spot_price("ETHUSDT", Decimal("3300.5"))
    st.funding_rate["ETHUSDT"] = Decimal("-0.00005")
    source = CcxtMarketSource("bybit", {"ETH": "ETH/USDT:USDT"}, {"ETH": "ETH/USDT"}, timeout_s=2,
                              session=exchange_fake.session())
    try:
        perp = await source.perp("ETH", 2**62)
        spot = await source.spot("ETH", 2**62)
    finally:
        await source.close()
    assert (perp.mark, perp.funding_rate) == (Decimal("3301.37"), Decimal("-0.00005"))
    assert perp.settles_at_ns == st.next_funding_time_ms * NS_PER_MS
    assert spot.price == Decimal("3300.5")
    assert {r.host for r in exchange_fake.requests} == {"api.bybit.com"}


async def test_okx_s_spot_price_is_read_exactly(exchange_fake: FakeExchange) -> None:
    exchange_fake.okx.set_spot_price("ETH-USDT", Decimal("3290.25"))
    source = CcxtMarketSource("okx", {"ETH": "ETH/USDT:USDT"}, {"ETH": "ETH/USDT"}, timeout_s=2,
                              session=exchange_fake.session())
    try:
        spot = await source.spot("ETH", 2**62)
    finally:
        await source.close()
    assert spot.price == Decimal("3290.25")


async def test_okx_s_mark_and_funding_are_read_exactly(exchange_fake: FakeExchange) -> None:
    st = exchange_fake.okx
    st.set_mark("ETH-USDT-SWAP", Decimal("3291.5"))
    st.funding_rate["ETH-USDT-SWAP"] = Decimal("0.00007")
    source = CcxtMarketSource("okx", {"ETH": "ETH/USDT:USDT"}, timeout_s=2, session=exchange_fake.session())
    try:
        perp = await source.perp("ETH", 2**62)
    finally:
        await source.close()
    assert (perp.mark, perp.funding_rate) == (Decimal("3291.5"), Decimal("0.00007"))
    assert perp.settles_at_ns == st.next_funding_time_ms * NS_PER_MS
