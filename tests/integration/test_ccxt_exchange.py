"""The ccxt adapter (`daemon.venues.ccxt_exchange`) through the real ccxt, over TLS with the venues' real host names,
against the stateful exchange fake (`tests/fakes/exchange`): Binance USDⓈ-M futures and spot."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.messages import FillReport, Side, SubmitOrder, VenueReport
from daemon.errors import (
    ExitCode,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueCredentialsRejected,
    VenueRateLimited,
)
from daemon.venues.ccxt_exchange import (
    AccountModeMismatch,
    CcxtExchange,
    CcxtVenueConfig,
    ClockSkewError,
    Credentials,
)
from daemon.venues.client_ids import to_venue

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

PERP = InstrumentId("binance:Perp:ETHUSDT")
SPOT = InstrumentId("binance:Spot:ETHUSDT")
USDT = Decimal(10_000)


def config(fake: Any, **changes: Any) -> CcxtVenueConfig:
    creds = fake.credentials("binance")
    base = CcxtVenueConfig(
        venue="binance", exchanges={"Perp": "binanceusdm", "Spot": "binance"}, instruments=(PERP, SPOT),
        credentials=Credentials(creds.api_key, creds.secret), key_setting="venues.binance.api_key", leverage=3,
        max_clock_skew_ms=1000, timeout_ms=1000, enable_rate_limit=False,
    )
    return replace(base, **changes)


def adapter(fake: Any, **changes: Any) -> tuple[CcxtExchange, LosslessChannel[VenueReport]]:
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 1000)
    return CcxtExchange(config(fake, **changes), WallClock(), reports, session=fake.session()), reports


@pytest_asyncio.fixture
async def binance(exchange_fake: Any) -> AsyncIterator[tuple[CcxtExchange, LosslessChannel[VenueReport]]]:
    venue, reports = adapter(exchange_fake)
    await venue.start()
    try:
        yield venue, reports
    finally:
        await venue.close()


def order(cid: str, instrument: str, side: Side, quantity: str, reduce_only: bool = False,
          limit_price: str | None = None) -> SubmitOrder:
    return SubmitOrder(ClientOrderId(cid), InstructionId(cid.rsplit("-", 1)[0]), InstrumentId(instrument), side,
                       Decimal(quantity), reduce_only, "test", 0, 0,
                       None if limit_price is None else Decimal(limit_price))


def fills(reports: LosslessChannel[VenueReport]) -> list[FillReport]:
    out = []
    while len(reports):
        report = reports.receive_nowait()
        assert isinstance(report, FillReport)
        out.append(report)
    return out


def cached(directory: Path) -> list[str]:
    return sorted(p.name.rsplit("-", 3)[0] for p in directory.iterdir())


def order_posts(fake: Any, prefix: str = "/fapi/v1/order") -> list[Any]:
    return [r for r in fake.requests_to(path_prefix=prefix) if r.method == "POST" and r.path == prefix]


# --- start-up --------------------------------------------------------------------------------------------------------


async def test_start_up_sets_leverage_and_loads_only_what_is_traded(exchange_fake: Any) -> None:
    venue, _ = adapter(exchange_fake, leverage=4)
    async with venue:
        assert exchange_fake.binance.leverage["ETHUSDT"] == 4
        assert venue.rules(PERP).symbol == "ETH/USDT:USDT" and venue.rules(SPOT).symbol == "ETH/USDT"
        with pytest.raises(Exception, match="not among the instruments"):
            venue.rules("binance:Perp:BTCUSDT")
    [spot_info] = exchange_fake.requests_to(path_prefix="/api/v3/exchangeInfo")
    assert spot_info.params == {"symbols": '["ETHUSDT"]'}  # Binance spot can be asked for only these
    paths = {r.path for r in exchange_fake.requests}
    assert not any(p.startswith("/sapi") for p in paths)  # no currencies or margin pairs: only what it trades


async def test_the_markets_cache_makes_a_warm_start_without_exchange_info(exchange_fake: Any, tmp_path: Path) -> None:
    cache = tmp_path / "markets"
    for run in range(2):
        venue, reports = adapter(exchange_fake, market_cache_dir=cache)
        async with venue:
            assert venue.rules(PERP).amount_step == Decimal("0.001")
            # Warm or cold, ccxt has what it needs to trade and to read the account.
            assert (await venue.submit_order(order(f"i3-{run}-1", PERP, Side.BUY, "0.010"))).status == "filled"
            assert len(fills(reports)) == 1
            assert dict((await venue.fetch_account()).perps) == {"ETHUSDT": Decimal("0.01") * (run + 1)}
    assert len(exchange_fake.requests_to(path_prefix="/fapi/v1/exchangeInfo")) == 1
    assert len(exchange_fake.requests_to(path_prefix="/api/v3/exchangeInfo")) == 1
    assert cached(cache) == ["binance-binance", "binance-binanceusdm"]  # per venue and exchange (and day)


async def test_clock_skew_beyond_the_limit_refuses_trading(exchange_fake: Any) -> None:
    exchange_fake.binance.clock_skew_ms = 5_000
    venue, _ = adapter(exchange_fake, max_clock_skew_ms=1000)
    with pytest.raises(ClockSkewError) as caught:
        await venue.start()
    await venue.close()
    assert caught.value.venue == "binance" and 4_000 < caught.value.skew_ms < 6_000
    assert "binance" in str(caught.value) and "beyond the limit of 1000 ms" in str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert not venue.started
    with pytest.raises(Exception, match="before start"):
        await venue.submit_order(order("i1-1-1", PERP, Side.BUY, "0.01"))


async def test_wrong_credentials_are_a_start_up_error_naming_the_venue_never_the_secret(exchange_fake: Any) -> None:
    creds = exchange_fake.credentials("binance")
    wrong = "wrong-secret-" + "x" * 40
    venue, _ = adapter(exchange_fake, credentials=Credentials(creds.api_key, wrong))
    with pytest.raises(VenueCredentialsRejected) as caught:
        await venue.start()
    await venue.close()
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG and caught.value.venue == "binance"
    assert "venues.binance.api_key" in message
    assert wrong not in message and creds.secret not in message and wrong not in repr(venue)


async def test_hedge_mode_is_refused_not_changed(exchange_fake: Any) -> None:
    exchange_fake.binance.dual_side_position = True
    venue, _ = adapter(exchange_fake)
    with pytest.raises(AccountModeMismatch, match="position mode is hedge, the config requires one-way"):
        await venue.start()
    await venue.close()
    assert exchange_fake.binance.dual_side_position is True
    assert not [r for r in exchange_fake.requests if r.method == "POST" and r.path == "/fapi/v1/positionSide/dual"]


async def test_isolated_margin_is_refused_not_changed(exchange_fake: Any) -> None:
    exchange_fake.binance.margin_type["ETHUSDT"] = "ISOLATED"
    venue, _ = adapter(exchange_fake)
    with pytest.raises(AccountModeMismatch, match="margin mode on ETH/USDT:USDT is isolated"):
        await venue.start()
    await venue.close()
    assert not [r for r in exchange_fake.requests if r.path == "/fapi/v1/marginType"]


# --- orders and fills ------------------------------------------------------------------------------------------------


async def test_a_perp_market_order_round_trip_books_a_fill(exchange_fake: Any,
                                                           binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    report = await venue.submit_order(order("i7-1-1", PERP, Side.SELL, "0.100"))
    assert report.status == "filled" and report.venue == "binance" and report.venue_order_id is not None
    [fill] = fills(reports)
    assert (fill.client_order_id, fill.instrument_id, fill.side, fill.quantity, fill.price) == \
        ("i7-1-1", PERP, Side.SELL, Decimal("0.1"), Decimal(3000))
    assert fill.fee == Decimal("0.15") and fill.fee_currency == "USDT"  # 0.05 % taker on 300 USDT
    assert exchange_fake.binance.order_by_client_id(to_venue(ClientOrderId("i7-1-1"), "binanceusdm")) is not None
    # Idempotent: the same client id again is the first outcome, nothing is sent.
    posts = len(order_posts(exchange_fake))
    assert await venue.submit_order(order("i7-1-1", PERP, Side.SELL, "0.100")) == report
    assert len(order_posts(exchange_fake)) == posts
    assert await venue.poll_fills() == 0 and not fills(reports)  # de-duplicated by trade id


async def test_a_spot_market_order_round_trip_books_a_fill(exchange_fake: Any,
                                                           binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    report = await venue.submit_order(order("i7-2-1", SPOT, Side.BUY, "0.0100"))
    assert report.status == "filled"
    [fill] = fills(reports)
    assert (fill.instrument_id, fill.side, fill.quantity) == (SPOT, Side.BUY, Decimal("0.01"))
    assert exchange_fake.binance.balance("ETH", wallet="spot") > 0


async def test_a_resend_after_a_restart_finds_the_first_order_instead_of_placing_a_second(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    first = await venue.submit_order(order("i19-1-1", PERP, Side.BUY, "0.030"))
    # A new process, with no memory of the order; its fills are read from a minute back (from the journal, in the
    # daemon).
    restarted, reports = adapter(exchange_fake, fills_since_ms=int(time.time() * 1000) - 60_000)
    async with restarted:
        again = await restarted.submit_order(order("i19-1-1", PERP, Side.BUY, "0.030"))
    assert (again.status, again.venue_order_id) == ("filled", first.venue_order_id)
    assert exchange_fake.binance.position("ETHUSDT").amount == Decimal("0.030")  # one order, not two
    assert [r.status for r in order_posts(exchange_fake)] == [200, 400]  # the venue refused the duplicate id
    assert [f.client_order_id for f in fills(reports)] == ["i19-1-1"]  # same trade id: the books dedupe it


async def test_a_quantity_off_the_lot_step_is_refused_with_the_reason(exchange_fake: Any,
                                                                      binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    report = await venue.submit_order(order("i8-1-1", PERP, Side.BUY, "0.0105"))
    assert report.status == "rejected"
    assert report.reason == "quantity 0.0105 is not a multiple of the lot step 0.001 on ETH/USDT:USDT"
    small = await venue.submit_order(order("i8-2-1", PERP, Side.BUY, "0.005", limit_price="3030"))
    assert small.status == "rejected" and "below the minimum 20" in small.reason
    unnamed = await venue.submit_order(order("drill-" + "x" * 40 + "-1", PERP, Side.BUY, "0.010"))
    assert unnamed.status == "rejected" and "has no venue form" in unnamed.reason
    assert not order_posts(exchange_fake) and not fills(reports)  # refused here: nothing went to the venue


async def test_the_venues_refusal_is_a_rejection_with_its_reason(exchange_fake: Any,
                                                                 binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    # Reduce-only with no position: the venue refuses it (it would open one).
    report = await venue.submit_order(order("i9-1-1", PERP, Side.SELL, "0.010", reduce_only=True))
    assert report.status == "rejected" and report.reason.startswith("-2022")


async def test_reduce_only_reduces(exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    assert (await venue.submit_order(order("i10-1-1", PERP, Side.BUY, "0.100"))).status == "filled"
    assert (await venue.submit_order(order("i10-2-1", PERP, Side.SELL, "0.040", reduce_only=True))).status == "filled"
    assert exchange_fake.binance.position("ETHUSDT").amount == Decimal("0.060")
    assert [f.quantity for f in fills(reports)] == [Decimal("0.1"), Decimal("0.04")]
    [post] = [r for r in order_posts(exchange_fake) if r.params.get("reduceOnly")]
    assert post.params["reduceOnly"] == "true"


async def test_a_marketable_limit_fills_within_its_cap(exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    report = await venue.submit_order(order("i11-1-1", PERP, Side.BUY, "0.010", limit_price="3015.004"))
    assert report.status == "filled"
    [post] = order_posts(exchange_fake)
    assert (post.params["type"], Decimal(post.params["price"]), post.params["timeInForce"]) == \
        ("LIMIT", Decimal("3015.00"), "FOK")  # the cap on the tick, on the safe side; all or nothing
    assert [f.price for f in fills(reports)] == [Decimal(3000)]


async def test_a_timeout_after_placement_is_resolved_by_client_id_without_a_duplicate(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.timeout_after_place(path="/fapi/v1/order", delay=10.0)
    report = await venue.submit_order(order("i12-1-1", PERP, Side.SELL, "0.050"))
    assert report.status == "filled"
    venue_cid = to_venue(ClientOrderId("i12-1-1"), "binanceusdm")
    placed = [o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]
    # One order on the venue, and no second POST: the fake logs a request when it answers, and the held one is
    # still unanswered, so any POST in the log would be a resend.
    assert len(placed) == 1 and order_posts(exchange_fake) == []
    looked_up = [r for r in exchange_fake.requests_to(path_prefix="/fapi/v1/order") if r.method == "GET"]
    assert looked_up and looked_up[0].params.get("origClientOrderId") == venue_cid
    [fill] = fills(reports)
    assert fill.client_order_id == "i12-1-1" and fill.quantity == Decimal("0.05")
    assert exchange_fake.binance.position("ETHUSDT").amount == Decimal("-0.050")


async def test_a_spot_timeout_after_placement_is_resolved_the_same_way(exchange_fake: Any,
                                                                       binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.timeout_after_place(path="/api/v3/order", delay=10.0)
    report = await venue.submit_order(order("i24-1-1", SPOT, Side.BUY, "0.0200"))
    assert report.status == "filled"
    venue_cid = to_venue(ClientOrderId("i24-1-1"), "binance")
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    assert order_posts(exchange_fake, "/api/v3/order") == []  # the held POST only (logged when answered)
    assert [f.quantity for f in fills(reports)] == [Decimal("0.02")]


async def test_a_request_lost_before_placement_is_resent_with_the_same_client_id(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.http_error(502, body="<html>bad gateway</html>", path="/fapi/v1/order")
    report = await venue.submit_order(order("i13-1-1", PERP, Side.BUY, "0.020"))
    assert report.status == "filled"
    posts = order_posts(exchange_fake)
    venue_cid = to_venue(ClientOrderId("i13-1-1"), "binanceusdm")
    assert len(posts) == 2 and {p.params["newClientOrderId"] for p in posts} == {venue_cid}
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    assert len(fills(reports)) == 1


async def test_an_unknown_outcome_is_looked_up_before_a_resend(exchange_fake: Any,
                                                                binance: tuple[CcxtExchange, Any]) -> None:
    """The order went out, the answer was lost, and the venue could not be asked either: neither sent nor failed.
    The next submit of the same client id asks first and finds it — no second order."""
    venue, reports = binance
    exchange_fake.faults.timeout_after_place(path="/fapi/v1/order", delay=10.0)
    exchange_fake.faults.http_error(503, body="<html>unavailable</html>", path="/fapi/v1/order", method="GET")
    venue_cid = to_venue(ClientOrderId("i14-1-1"), "binanceusdm")
    with pytest.raises(UnknownOrderOutcome, match="outcome is unknown"):
        await venue.submit_order(order("i14-1-1", PERP, Side.BUY, "0.020"))
    exchange_fake.faults.clear()
    report = await venue.submit_order(order("i14-1-1", PERP, Side.BUY, "0.020"))
    assert report.status == "filled" and order_posts(exchange_fake) == []  # the held first POST only: no resend
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    assert len(fills(reports)) == 1


async def test_poll_fills_finds_a_later_fill_of_an_order_from_an_earlier_run(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    """A resting order placed before a restart fills later: the REST backstop books it under our own client id
    (read back from the venue), once."""
    venue, reports = binance
    raw = await exchange_fake.client("binanceusdm")
    venue_cid = to_venue(ClientOrderId("r2i40-3-1"), "binanceusdm")
    await raw.create_order("ETH/USDT:USDT", "limit", "buy", 0.02, 2900, {"timeInForce": "GTC",
                                                                         "newClientOrderId": venue_cid})
    assert await venue.poll_fills() == 0
    exchange_fake.binance.set_mark("ETHUSDT", Decimal(2890))  # crosses the resting bid
    assert await venue.poll_fills() == 1
    [fill] = fills(reports)
    assert (fill.client_order_id, fill.quantity, fill.price, fill.side) == \
        ("r2i40-3-1", Decimal("0.02"), Decimal(2900), Side.BUY)
    assert await venue.poll_fills() == 0 and not fills(reports)
    # A trade of someone else's order (by hand, another bot) is not ours to book: the reconciler shows it.
    await raw.create_order("ETH/USDT:USDT", "market", "sell", 0.01)
    assert await venue.poll_fills() == 0 and not fills(reports)


async def test_a_fill_read_that_fails_after_the_order_is_left_to_the_backstop(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.http_error(503, body="<html>unavailable</html>", path="/fapi/v1/userTrades")
    report = await venue.submit_order(order("i21-1-1", PERP, Side.BUY, "0.010"))
    assert report.status == "filled" and not fills(reports) and venue.fills_overdue  # filled, never "failed"
    assert await venue.poll_fills() == 1 and not venue.fills_overdue
    assert [f.client_order_id for f in fills(reports)] == ["i21-1-1"]


async def test_fills_are_read_forward_from_a_week_back_through_the_venues_window(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    """Binance USDⓈ-M answers at most 7 days from `startTime`: reading from 8 days back takes two windows."""
    venue, _ = binance
    await venue.submit_order(order("i22-1-1", PERP, Side.BUY, "0.010"))
    eight_days = 8 * 24 * 3600 * 1000
    restarted, reports = adapter(exchange_fake, fills_since_ms=int(time.time() * 1000) - eight_days)
    async with restarted:
        assert await restarted.poll_fills() == 1
    assert [f.client_order_id for f in fills(reports)] == ["i22-1-1"]
    windows = [r.params for r in exchange_fake.requests_to(path_prefix="/fapi/v1/userTrades")][1:]
    assert len(windows) == 2 and int(windows[0]["endTime"]) - int(windows[0]["startTime"]) == eight_days * 7 // 8


async def test_cancel_all_orders_cancels_the_resting_ones(exchange_fake: Any,
                                                          binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    raw = await exchange_fake.client("binanceusdm")
    await raw.create_order("ETH/USDT:USDT", "limit", "buy", 0.01, 2500, {"timeInForce": "GTC"})
    await raw.create_order("ETH/USDT:USDT", "limit", "sell", 0.01, 3500, {"timeInForce": "GTC"})
    spot = await exchange_fake.client("binance")
    ours = to_venue(ClientOrderId("i23-1-1"), "binance")
    await spot.create_order("ETH/USDT", "limit", "buy", 0.01, 2500, {"timeInForce": "GTC", "newClientOrderId": ours})
    resting = await venue.fetch_open_orders()
    assert sorted((o.instrument_id, o.side, o.price) for o in resting) == [
        (PERP, Side.BUY, Decimal(2500)), (PERP, Side.SELL, Decimal(3500)), (SPOT, Side.BUY, Decimal(2500))]
    assert {o.client_order_id for o in resting} == {None, "i23-1-1"}  # ours read back; the others are foreign
    assert await venue.cancel_all_orders() == 3
    assert not [o for o in exchange_fake.binance.orders.values() if o.is_open]
    assert await venue.cancel_all_orders() == 0


async def test_a_rate_limit_is_retryable_after_the_venues_wait_and_places_nothing(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.rate_limit(retry_after=7, path="/fapi/v1/order")
    with pytest.raises(VenueRateLimited) as caught:
        await venue.submit_order(order("i16-1-1", PERP, Side.BUY, "0.010"))
    assert caught.value.retry_after_s == 7
    assert not exchange_fake.binance.orders and not fills(reports)
    # Nothing was placed, so the same order goes out at once next time (no look-up first).
    assert (await venue.submit_order(order("i16-1-1", PERP, Side.BUY, "0.010"))).status == "filled"
    assert not [r for r in exchange_fake.requests if r.method == "GET" and r.path == "/fapi/v1/order"]


async def test_insufficient_margin_is_a_rejection_with_the_venues_reason(exchange_fake: Any,
                                                                        binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    report = await venue.submit_order(order("i17-1-1", PERP, Side.BUY, "100.000"))  # 300 000 USDT at 3x: too much
    assert report.status == "rejected" and report.reason.startswith("-2019")


async def test_an_account_read_that_fails_is_a_venue_error_the_reconciler_retries(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    exchange_fake.faults.maintenance(host="fapi.binance.com", times=1)
    with pytest.raises(RetryableVenueError, match="reading the account"):
        await venue.fetch_account()
    assert (await venue.fetch_account()).balances


# --- account truth ---------------------------------------------------------------------------------------------------


async def test_fetch_account_matches_the_fakes_state(exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    await venue.submit_order(order("i15-1-1", PERP, Side.SELL, "0.200"))
    await venue.submit_order(order("i15-2-1", SPOT, Side.BUY, "0.2000"))
    exchange_fake.binance.set_mark("ETHUSDT", Decimal(3100))
    detail = await venue.fetch_account_detail()
    state = exchange_fake.binance
    usdt = state.balance("USDT", wallet="futures") + state.balance("USDT", wallet="spot")
    assert dict(detail.report.balances) == {"USDT": usdt, "ETH": state.balance("ETH", wallet="spot")}
    assert detail.report.perps == (("ETHUSDT", Decimal("-0.2")),)
    assert detail.report.account == "binance" and detail.report.reports_sent is None
    assert ("binanceusdm", "USDT", state.balance("USDT", wallet="futures")) in detail.wallets
    assert ("binance", "USDT", state.balance("USDT", wallet="spot")) in detail.wallets
    [position] = detail.positions
    assert position.quantity == state.position("ETHUSDT").amount
    assert position.entry_price == Decimal(3000) and position.mark_price == Decimal(3100)
    assert position.liquidation_price == state.liquidation_price("ETHUSDT").quantize(Decimal("0.00000001"))
    assert position.maintenance_margin == state.maint_margin("ETHUSDT")
    again = await venue.fetch_account()
    assert (again.balances, again.perps) == (detail.report.balances, detail.report.perps)


async def test_a_balance_drift_shows_in_the_account(exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    before = dict((await venue.fetch_account()).balances)["USDT"]
    exchange_fake.binance.drift_balance("USDT", Decimal(-5), wallet="futures")
    assert dict((await venue.fetch_account()).balances)["USDT"] == before - 5


# --- Bybit v5 (unified account: linear perps and spot through one client and one wallet) -----------------------------

BYBIT_PERP = InstrumentId("bybit:Perp:ETHUSDT")
BYBIT_SPOT = InstrumentId("bybit:Spot:ETHUSDT")


def bybit_adapter(fake: Any, **changes: Any) -> tuple[CcxtExchange, LosslessChannel[VenueReport]]:
    creds = fake.credentials("bybit")
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 1000)
    settings = {"venue": "bybit", "exchanges": {"Perp": "bybit", "Spot": "bybit"},
                "instruments": (BYBIT_PERP, BYBIT_SPOT), "credentials": Credentials(creds.api_key, creds.secret),
                "key_setting": "venues.bybit.api_key", **changes}
    return CcxtExchange(config(fake, **settings), WallClock(), reports, session=fake.session()), reports


@pytest_asyncio.fixture
async def bybit(exchange_fake: Any) -> AsyncIterator[tuple[CcxtExchange, LosslessChannel[VenueReport]]]:
    venue, reports = bybit_adapter(exchange_fake)
    await venue.start()
    try:
        yield venue, reports
    finally:
        await venue.close()


async def test_bybit_start_up_sets_leverage_once_and_loads_only_linear_and_spot(
        exchange_fake: Any, bybit: tuple[CcxtExchange, Any]) -> None:
    venue, _ = bybit
    assert exchange_fake.bybit.leverage["ETHUSDT"] == 3
    assert venue.rules(BYBIT_PERP).amount_step == Decimal("0.01")
    categories = {r.params.get("category") for r in exchange_fake.requests_to(path_prefix="/v5/market/instruments")}
    assert categories == {"linear", "spot"}
    again, _ = bybit_adapter(exchange_fake)
    async with again:  # the same leverage again: Bybit's "not modified" is not a failure
        assert again.started


async def test_bybit_round_trips_book_fills_and_the_account_matches(exchange_fake: Any,
                                                                     bybit: tuple[CcxtExchange, Any]) -> None:
    venue, reports = bybit
    perp = await venue.submit_order(order("i30-1-1", BYBIT_PERP, Side.SELL, "0.10"))
    spot = await venue.submit_order(order("i30-2-1", BYBIT_SPOT, Side.BUY, "0.10000"))
    assert (perp.status, spot.status) == ("filled", "filled")
    got = fills(reports)
    assert [(f.client_order_id, f.instrument_id, f.quantity) for f in got] == [
        ("i30-1-1", BYBIT_PERP, Decimal("0.1")), ("i30-2-1", BYBIT_SPOT, Decimal("0.1"))]
    account = await venue.fetch_account()
    state = exchange_fake.bybit
    assert dict(account.balances) == {"USDT": state.balance("USDT", wallet="futures"),
                                      "ETH": state.balance("ETH", wallet="futures")}  # one unified wallet, once
    assert account.perps == (("ETHUSDT", Decimal("-0.1")),)
    assert await venue.poll_fills() == 0


async def test_bybit_refuses_a_quantity_off_its_lot_step(exchange_fake: Any, bybit: tuple[CcxtExchange, Any]) -> None:
    venue, _ = bybit
    report = await venue.submit_order(order("i31-1-1", BYBIT_PERP, Side.BUY, "0.015"))
    assert report.status == "rejected" and "lot step 0.01" in report.reason
    assert not exchange_fake.requests_to(path_prefix="/v5/order/create")


async def test_bybit_timeout_after_placement_is_resolved_by_client_id(exchange_fake: Any,
                                                                       bybit: tuple[CcxtExchange, Any]) -> None:
    venue, reports = bybit
    exchange_fake.faults.timeout_after_place(path="/v5/order/create", host="bybit.com", delay=10.0)
    report = await venue.submit_order(order("i32-1-1", BYBIT_PERP, Side.BUY, "0.20"))
    assert report.status == "filled"
    venue_cid = to_venue(ClientOrderId("i32-1-1"), "bybit")
    assert len([o for o in exchange_fake.bybit.orders.values() if o.client_id == venue_cid]) == 1
    assert exchange_fake.requests_to(path_prefix="/v5/order/create") == []  # the held one only: no resend
    looked_up = [r.params for r in exchange_fake.requests if r.path in ("/v5/order/realtime", "/v5/order/history")]
    assert looked_up and all(p.get("orderLinkId") == venue_cid for p in looked_up)
    assert [f.client_order_id for f in fills(reports)] == ["i32-1-1"]


async def test_bybit_venue_refusal_is_a_rejection_with_its_reason(exchange_fake: Any,
                                                                  bybit: tuple[CcxtExchange, Any]) -> None:
    venue, _ = bybit
    report = await venue.submit_order(order("i33-1-1", BYBIT_PERP, Side.SELL, "0.10", reduce_only=True))
    assert report.status == "rejected" and report.reason.startswith("110017")


async def test_bybit_wrong_credentials_are_a_start_up_error_naming_the_venue(exchange_fake: Any) -> None:
    creds = exchange_fake.credentials("bybit")
    wrong = "wrong-bybit-secret-" + "y" * 30
    venue, _ = bybit_adapter(exchange_fake, credentials=Credentials(creds.api_key, wrong))
    with pytest.raises(VenueCredentialsRejected) as caught:
        await venue.start()
    await venue.close()
    assert caught.value.venue == "bybit" and "venues.bybit.api_key" in str(caught.value)
    assert wrong not in str(caught.value) and creds.secret not in str(caught.value)


# --- OKX v5 (swaps counted in contracts of 0.1 ETH; the adapter speaks ETH) ---------------------------------------

OKX_PERP = InstrumentId("okx:Perp:ETHUSDT")
OKX_SPOT = InstrumentId("okx:Spot:ETHUSDT")


def okx_adapter(fake: Any, **changes: Any) -> tuple[CcxtExchange, LosslessChannel[VenueReport]]:
    creds = fake.credentials("okx")
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 1000)
    settings = {"venue": "okx", "exchanges": {"Perp": "okx", "Spot": "okx"}, "instruments": (OKX_PERP, OKX_SPOT),
                "credentials": Credentials(creds.api_key, creds.secret, creds.passphrase),
                "key_setting": "venues.okx.api_key", **changes}
    return CcxtExchange(config(fake, **settings), WallClock(), reports, session=fake.session()), reports


@pytest_asyncio.fixture
async def okx(exchange_fake: Any) -> AsyncIterator[tuple[CcxtExchange, LosslessChannel[VenueReport]]]:
    venue, reports = okx_adapter(exchange_fake)
    await venue.start()
    try:
        yield venue, reports
    finally:
        await venue.close()


async def test_okx_round_trips_in_the_base_asset_and_the_account_matches(exchange_fake: Any,
                                                                          okx: tuple[CcxtExchange, Any]) -> None:
    venue, reports = okx
    assert venue.rules(OKX_PERP).contract_size == Decimal("0.1")
    perp = await venue.submit_order(order("i40-1-1", OKX_PERP, Side.SELL, "0.5"))
    spot = await venue.submit_order(order("i40-2-1", OKX_SPOT, Side.BUY, "0.1"))
    assert (perp.status, spot.status) == ("filled", "filled")
    assert len([r for r in exchange_fake.requests if r.method == "POST" and r.path.startswith("/api/v5/trade/")]) == 2
    got = fills(reports)
    assert [(f.client_order_id, f.instrument_id, f.quantity) for f in got] == [
        ("i40-1-1", OKX_PERP, Decimal("0.5")), ("i40-2-1", OKX_SPOT, Decimal("0.1"))]
    assert exchange_fake.okx.position("ETH-USDT-SWAP").amount == Decimal("-0.5")  # 5 contracts of 0.1 ETH
    account = await venue.fetch_account()
    state = exchange_fake.okx
    assert dict(account.balances) == {"USDT": state.balance("USDT", wallet="futures"),
                                      "ETH": state.balance("ETH", wallet="futures")}
    assert account.perps == (("ETHUSDT", Decimal("-0.5")),)
    assert exchange_fake.okx.leverage["ETH-USDT-SWAP"] == 3


async def test_okx_timeout_after_placement_is_resolved_by_client_id(exchange_fake: Any,
                                                                     okx: tuple[CcxtExchange, Any]) -> None:
    venue, reports = okx
    exchange_fake.faults.timeout_after_place(path="/api/v5/trade/*", host="okx.com", delay=10.0)
    report = await venue.submit_order(order("i41-1-1", OKX_PERP, Side.BUY, "0.3"))
    assert report.status == "filled"
    venue_cid = to_venue(ClientOrderId("i41-1-1"), "okx")
    assert len([o for o in exchange_fake.okx.orders.values() if o.client_id == venue_cid]) == 1
    assert [f.quantity for f in fills(reports)] == [Decimal("0.3")]
    looked_up = [r.params for r in exchange_fake.requests if r.method == "GET" and r.path == "/api/v5/trade/order"]
    assert looked_up and all(p.get("clOrdId") == venue_cid for p in looked_up)


async def test_okx_refuses_a_quantity_off_the_contract_lot(exchange_fake: Any, okx: tuple[CcxtExchange, Any]) -> None:
    venue, _ = okx
    report = await venue.submit_order(order("i42-1-1", OKX_PERP, Side.BUY, "0.0005"))
    assert report.status == "rejected" and "lot step" in report.reason


async def test_okx_open_orders_are_read_in_the_base_asset_and_cancelled(exchange_fake: Any,
                                                                         okx: tuple[CcxtExchange, Any]) -> None:
    venue, _ = okx
    raw = await exchange_fake.client("okx")
    ours = to_venue(ClientOrderId("i43-1-1"), "okx")
    await raw.create_order("ETH/USDT:USDT", "limit", "buy", 2, 2500, {"clientOrderId": ours, "marginMode": "cross"})
    [resting] = await venue.fetch_open_orders()
    assert (resting.instrument_id, resting.client_order_id, resting.quantity, resting.price) == \
        (OKX_PERP, "i43-1-1", Decimal("0.2"), Decimal(2500))  # 2 contracts of 0.1 ETH
    assert await venue.cancel_all_orders() == 1 and await venue.fetch_open_orders() == ()
