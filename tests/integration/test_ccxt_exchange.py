"""The ccxt adapter (`daemon.venues.ccxt_exchange`) through the real ccxt, over TLS with the venues' real host names,
against the stateful exchange fake (`tests/fakes/exchange`): Binance USDⓈ-M futures and spot."""

from __future__ import annotations

import asyncio
import json
import random
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
    FatalVenueError,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueAccessLost,
    VenueBadPayload,
    VenueCredentialsRejected,
    VenueDegraded,
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
from daemon.venues.request_gate import GateClosed, GatePolicy

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


class Schedule:
    """The request gates' clock and sleep: wall-clock time plus what they slept, which is recorded and never
    waited for (backoff, Retry-After and bans cost a test nothing, and their lengths can be asserted)."""

    def __init__(self) -> None:
        self.offset_ms = 0
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset_ms += int(seconds * 1000) + 1

    def advance_to(self, ms: int) -> None:
        self.offset_ms += max(0, ms - self.now_ms())


def adapter(fake: Any, schedule: Schedule | None = None,
            **changes: Any) -> tuple[CcxtExchange, LosslessChannel[VenueReport]]:
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 1000)
    schedule = schedule or Schedule()
    return CcxtExchange(config(fake, **changes), WallClock(), reports, session=fake.session(),
                        wall_ms=schedule.now_ms, sleep=schedule.sleep, rng=random.Random(12)), reports


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


async def test_clock_skew_arising_mid_session_degrades_the_venue_and_refuses_new_orders(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    """The venue's clock goes 5 s behind ours after start-up: the next order's timestamp is refused (-1021). The
    adapter measures the clocks again, finds them apart beyond the limit, and degrades the venue: the order fails
    naming the skew, nothing was placed, and no new order goes there while it lasts; a reduce-only one still may
    try. Back in sync, the next request succeeds and trading goes on."""
    venue, _ = binance
    exchange_fake.binance.clock_skew_ms = -5_000
    with pytest.raises(VenueDegraded, match=r"clock is -[45]\d{3} ms from ours, beyond the limit of 1000 ms"):
        await venue.submit_order(order("i29-1-1", PERP, Side.BUY, "0.020"))
    assert exchange_fake.binance.orders == {} and venue.degraded
    with pytest.raises(VenueDegraded, match="no new orders"):  # refused before it is sent
        await venue.submit_order(order("i29-2-1", PERP, Side.BUY, "0.020"))
    exchange_fake.binance.clock_skew_ms = 0
    await venue.fetch_account()  # a request that succeeds ends the degraded state
    assert not venue.degraded
    assert (await venue.submit_order(order("i29-3-1", PERP, Side.BUY, "0.020"))).status == "filled"


async def test_a_refused_timestamp_with_the_clocks_in_sync_is_sent_once_more(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    """A request the venue found late (-1021) while the clocks agree — it waited too long somewhere on the way: the
    clocks are measured again, and the order, which the venue did not execute, goes once more: filled, once."""
    venue, reports = binance
    exchange_fake.faults.binance_error(-1021, "Timestamp for this request is outside of the recvWindow.",
                                       path="/fapi/v1/order", method="POST", times=1)
    report = await venue.submit_order(order("i30-1-1", PERP, Side.SELL, "0.020"))
    assert report.status == "filled" and not venue.degraded
    venue_cid = to_venue(ClientOrderId("i30-1-1"), "binanceusdm")
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    assert exchange_fake.requests_to(path_prefix="/fapi/v1/time")  # measured again
    assert len(fills(reports)) == 1


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


async def test_a_slow_answer_within_the_timeout_is_just_slow(exchange_fake: Any,
                                                              binance: tuple[CcxtExchange, Any]) -> None:
    venue, reports = binance
    exchange_fake.faults.latency(0.4, path="/fapi/v1/order", method="POST", times=1)  # the adapter waits 1 s
    report = await venue.submit_order(order("i27-1-1", PERP, Side.BUY, "0.020"))
    assert report.status == "filled" and len(order_posts(exchange_fake)) == 1
    # Nothing looked up, nothing resent: the answer came, late.
    assert not [r for r in exchange_fake.requests_to(path_prefix="/fapi/v1/order") if r.method == "GET"]
    assert len(fills(reports)) == 1


async def test_a_request_that_timed_out_before_the_venue_saw_it_is_looked_up_then_resent_once(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    """Latency beyond the timeout on the way in: the venue never saw the order (the fake's latency comes before its
    handler). Its outcome is unknown to us, so it is asked for by client id first — not found — and only then sent
    again, under the same client id: one order."""
    venue, reports = binance
    exchange_fake.faults.latency(3.0, path="/fapi/v1/order", method="POST", times=1)
    report = await venue.submit_order(order("i28-1-1", PERP, Side.SELL, "0.030"))
    assert report.status == "filled"
    venue_cid = to_venue(ClientOrderId("i28-1-1"), "binanceusdm")
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    asked = [r for r in exchange_fake.requests_to(path_prefix="/fapi/v1/order")
             if r.method == "GET" and r.params.get("origClientOrderId") == venue_cid]
    [post] = order_posts(exchange_fake)  # the resend (the held first one is logged when the fake answers it)
    assert asked and post.params["newClientOrderId"] == venue_cid
    # The held first request never makes a second order (dropped with its connection, or refused as a duplicate
    # client id, as the venues do), even once its latency has passed.
    await asyncio.sleep(3.2)
    assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
    assert [f.quantity for f in fills(reports)] == [Decimal("0.03")]


async def test_an_unknown_outcome_is_looked_up_before_a_resend(exchange_fake: Any,
                                                                binance: tuple[CcxtExchange, Any]) -> None:
    """The order went out, the answer was lost, and the venue could not be asked either: neither sent nor failed.
    The next submit of the same client id asks first and finds it — no second order."""
    venue, reports = binance
    exchange_fake.faults.timeout_after_place(path="/fapi/v1/order", delay=10.0)
    exchange_fake.faults.http_error(503, body="<html>unavailable</html>", path="/fapi/v1/order", method="GET",
                                    times=None)  # every look-up attempt (they are retried with backoff)
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
    # As many times as a read is tried (GatePolicy.read_attempts): the read fails, not just its first attempt.
    exchange_fake.faults.http_error(503, body="<html>unavailable</html>", path="/fapi/v1/userTrades", times=3)
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


async def test_a_rate_limit_closes_the_gate_for_the_venues_wait_and_places_nothing(exchange_fake: Any) -> None:
    schedule = Schedule()
    venue, reports = adapter(exchange_fake, schedule)
    async with venue:
        gate = venue.gates["binanceusdm"]
        exchange_fake.faults.rate_limit(retry_after=7, path="/fapi/v1/order")
        limited_at = schedule.now_ms()
        with pytest.raises(VenueRateLimited) as caught:
            await venue.submit_order(order("i16-1-1", PERP, Side.BUY, "0.010"))
        assert caught.value.retry_after_s == 7
        assert not exchange_fake.binance.orders and not fills(reports)
        # The gate's own schedule: closed for at least the 7 s the venue asked for (plus jitter, at most 1 s).
        assert limited_at + 7_000 <= gate.closed_until_ms <= schedule.now_ms() + 8_000
        sent = len(exchange_fake.requests)
        # Before then nothing goes: an order is refused unsent (not queued), a read that would wait > 2 s too.
        with pytest.raises(GateClosed, match=r"no request to fapi\.binance\.com until .* asked for 7 s") as refused:
            await venue.submit_order(order("i16-1-1", PERP, Side.BUY, "0.010"))
        assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 6
        with pytest.raises(GateClosed):
            await venue.fetch_open_orders()
        assert len(exchange_fake.requests) == sent and gate.requests_refused == 2 and gate.rate_limits_seen == 1
        # Once the wait is down to 2 s a read sleeps it out, then goes: the next request waits at least that long.
        schedule.advance_to(gate.closed_until_ms - 2_000)
        slept = len(schedule.slept)
        assert await venue.fetch_open_orders() == ()
        assert schedule.slept[slept:] and 1.9 <= sum(schedule.slept[slept:]) <= 2.1
        assert schedule.now_ms() >= gate.closed_until_ms
        # Nothing was placed, so the same order goes out at once now (no look-up first).
        assert (await venue.submit_order(order("i16-1-1", PERP, Side.BUY, "0.010"))).status == "filled"
        assert not [r for r in exchange_fake.requests if r.method == "GET" and r.path == "/fapi/v1/order"]


async def test_a_short_rate_limit_on_a_read_is_waited_out_and_the_read_succeeds(exchange_fake: Any) -> None:
    schedule = Schedule()
    venue, _ = adapter(exchange_fake, schedule)
    async with venue:
        exchange_fake.faults.rate_limit(retry_after=1, path="/fapi/v3/account")
        before = len(exchange_fake.requests_to(path_prefix="/fapi/v3/account"))
        assert dict((await venue.fetch_account()).balances)["USDT"] == 2 * USDT
        # Two requests: the 429, then — at least the 1 s the venue asked for later — the one that answered.
        statuses = [r.status for r in exchange_fake.requests_to(path_prefix="/fapi/v3/account")[before:]]
        assert statuses == [429, 200] and sum(schedule.slept) >= 1.0


async def test_a_ban_stops_every_request_to_that_host_until_it_ends_then_trading_resumes(exchange_fake: Any) -> None:
    schedule = Schedule()
    venue, reports = adapter(exchange_fake, schedule)
    async with venue:
        gate = venue.gates["binanceusdm"]
        exchange_fake.faults.ban(seconds=120, host="fapi.binance.com")
        with pytest.raises(VenueRateLimited) as caught:
            await venue.submit_order(order("i50-1-1", PERP, Side.SELL, "0.050"))
        banned_until = caught.value.banned_until_ms
        assert banned_until is not None and banned_until > schedule.now_ms() + 100_000
        assert gate.bans_seen == 1 and gate.state == "banned" and not exchange_fake.binance.orders
        on_futures = len(exchange_fake.requests_to(host="fapi.binance.com"))
        # During the ban: reads fail at once saying until when, orders are refused unsent; not one request goes.
        with pytest.raises(GateClosed, match="banned by the venue until") as refused:
            await venue.fetch_account()
        assert refused.value.banned_until_ms == banned_until
        for attempt in range(3):
            with pytest.raises(GateClosed):
                await venue.submit_order(order("i50-1-1", PERP, Side.SELL, "0.050"))
            with pytest.raises(GateClosed):
                await venue.cancel_all_orders()
            with pytest.raises(GateClosed):
                await venue.poll_fills()
            schedule.advance_to(banned_until - 30_000 + attempt * 10_000)
        assert len(exchange_fake.requests_to(host="fapi.binance.com")) == on_futures  # none reached the fake
        assert gate.requests_refused >= 10
        # The spot host is not banned: it still answers.
        assert (await venue.submit_order(order("i50-2-1", SPOT, Side.BUY, "0.0100"))).status == "filled"
        # The ban ends (the fake's too), and the gate reopens after it plus its jitter: trading resumes.
        exchange_fake.faults.clear()
        schedule.advance_to(gate.closed_until_ms)
        assert gate.closed_until_ms >= banned_until
        assert (await venue.submit_order(order("i50-1-1", PERP, Side.SELL, "0.050"))).status == "filled"
        assert gate.state == "open" and gate.bans_seen == 1
        assert [f.client_order_id for f in fills(reports)] == ["i50-2-1", "i50-1-1"]
        assert exchange_fake.binance.position("ETHUSDT").amount == Decimal("-0.050")


async def test_a_real_ban_is_sat_out_on_the_wall_clock_and_the_gate_reopens_only_after_the_venues(
        exchange_fake: Any) -> None:
    """The same on the wall clock, with the fake's own ban left to end by itself: had the gate reopened before the
    venue's ban ended, the fake would have answered 418 again."""
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 1000)
    venue = CcxtExchange(config(exchange_fake, gate=GatePolicy(jitter_s=0.2)), WallClock(), reports,
                         session=exchange_fake.session())
    async with venue:
        gate = venue.gates["binanceusdm"]
        exchange_fake.faults.ban(seconds=1, host="fapi.binance.com")
        # A read answered 418 with a ban this short (≤ GatePolicy.max_read_wait_s) sleeps it out and asks again.
        assert await venue.fetch_open_orders() == ()
        assert gate.bans_seen == 1 and gate.read_retries == 1
        assert [r.status for r in exchange_fake.requests_to(host="fapi.binance.com")][-2:] == [418, 200]
        # A longer one: orders are refused while it lasts, and go once it is over.
        exchange_fake.faults.ban(seconds=3, host="fapi.binance.com")
        with pytest.raises(VenueRateLimited):
            await venue.submit_order(order("i61-1-1", PERP, Side.BUY, "0.010"))
        with pytest.raises(GateClosed):
            await venue.submit_order(order("i61-1-1", PERP, Side.BUY, "0.010"))
        await asyncio.sleep(gate.wait_s())
        assert (await venue.submit_order(order("i61-1-1", PERP, Side.BUY, "0.010"))).status == "filled"
        assert [r.status for r in exchange_fake.requests_to(host="fapi.binance.com")].count(418) == 2
        assert gate.bans_seen == 2


async def test_maintenance_sends_no_new_order_until_a_read_succeeds_again(exchange_fake: Any) -> None:
    schedule = Schedule()
    venue, reports = adapter(exchange_fake, schedule)
    async with venue:
        assert (await venue.submit_order(order("i51-1-1", PERP, Side.BUY, "0.100"))).status == "filled"
        gate = venue.gates["binanceusdm"]
        exchange_fake.faults.maintenance(host="fapi.binance.com")
        with pytest.raises(VenueDegraded, match="reading the account"):
            await venue.fetch_account()
        assert venue.degraded and gate.degraded and gate.degraded_episodes == 1
        # The read was retried with backoff before it gave up (sleeps recorded, not waited).
        # (twice each for the balance and the positions, read concurrently)
        assert gate.read_retries >= 2 and len(schedule.slept) == gate.read_retries
        posts = len(order_posts(exchange_fake))
        with pytest.raises(VenueDegraded, match="no new orders there"):
            await venue.submit_order(order("i51-2-1", PERP, Side.BUY, "0.050"))
        assert len(order_posts(exchange_fake)) == posts  # not sent
        # Reducing risk is still tried (a desk wants out on a bad day); the venue's 503 makes it unknown.
        with pytest.raises(UnknownOrderOutcome):
            await venue.submit_order(order("i51-3-1", PERP, Side.SELL, "0.050", reduce_only=True))
        assert len([r for r in exchange_fake.requests_to(path_prefix="/fapi/v1/order")
                    if r.method == "POST" and r.status == 503]) >= 1
        # Maintenance over: the first read that succeeds ends the degraded state, and new orders go again.
        exchange_fake.faults.clear()
        assert (await venue.fetch_account()).perps == (("ETHUSDT", Decimal("0.1")),)
        assert not venue.degraded
        assert (await venue.submit_order(order("i51-2-1", PERP, Side.BUY, "0.050"))).status == "filled"
        # The reduce-only order whose outcome was unknown is looked up before anything is re-sent.
        assert (await venue.submit_order(order("i51-3-1", PERP, Side.SELL, "0.050", reduce_only=True))).status \
            == "filled"
        assert exchange_fake.binance.position("ETHUSDT").amount == Decimal("0.100")
        assert [f.client_order_id for f in fills(reports)] == ["i51-1-1", "i51-2-1", "i51-3-1"]
        assert venue.counters()["gates"]["binanceusdm"]["degraded"] is False


async def test_credentials_revoked_after_start_up_halt_with_access_lost_and_no_further_request(
        exchange_fake: Any) -> None:
    venue, _ = adapter(exchange_fake)
    async with venue:
        # What Binance answers a key that was deleted, lost a permission, or no longer matches the IP allow-list.
        # (ccxt calls it DDoSProtection once a call has succeeded; the adapter knows better.)
        exchange_fake.faults.binance_error(-2015, "Invalid API-key, IP, or permissions for action.", status=401,
                                           host="fapi.binance.com", times=None)
        with pytest.raises(VenueAccessLost) as caught:
            await venue.fetch_account()
        message = str(caught.value)
        assert "binance" in message and "venues.binance.api_key" in message and "trading halts" in message
        creds = exchange_fake.credentials("binance")
        assert creds.secret not in message and creds.api_key not in message
        assert isinstance(caught.value, FatalVenueError)
        sent = len(exchange_fake.requests)
        # Lost for the whole account, on every host: nothing is sent with that key again.
        with pytest.raises(VenueAccessLost):
            await venue.submit_order(order("i52-1-1", SPOT, Side.BUY, "0.0100"))
        with pytest.raises(VenueAccessLost):
            await venue.poll_fills()
        assert len(exchange_fake.requests) == sent and not exchange_fake.binance.orders
        assert all(g.state == "access_lost" for g in venue.gates.values())


async def test_a_wrong_secret_after_start_up_is_access_lost_too(exchange_fake: Any) -> None:
    venue, _ = adapter(exchange_fake)
    async with venue:
        # The venue's signature check now fails (a rotated secret): -1022, an AuthenticationError.
        exchange_fake.faults.binance_error(-1022, "Signature for this request is not valid.", status=400,
                                           host="api.binance.com", times=None)
        with pytest.raises(VenueAccessLost, match="no longer accepts"):
            await venue.submit_order(order("i53-1-1", SPOT, Side.BUY, "0.0100"))
        assert not exchange_fake.binance.orders


async def test_bad_credentials_at_start_up_exit_78_without_the_secret(exchange_fake: Any) -> None:
    creds = exchange_fake.credentials("binance")
    venue, _ = adapter(exchange_fake, credentials=Credentials("fake-binance-unknown-key-1234", creds.secret))
    with pytest.raises(VenueCredentialsRejected) as caught:
        await venue.start()
    await venue.close()
    assert caught.value.exit_code == ExitCode.CONFIG and int(caught.value.exit_code) == 78
    assert "-2015" in str(caught.value) and "venues.binance.api_key" in str(caught.value)
    assert creds.secret not in str(caught.value) and creds.secret not in repr(venue)


async def test_an_unreadable_answer_to_an_order_is_looked_up_not_duplicated(exchange_fake: Any) -> None:
    venue, reports = adapter(exchange_fake)
    async with venue:
        exchange_fake.faults.malformed(path="/fapi/v1/order", method="POST")
        report = await venue.submit_order(order("i54-1-1", PERP, Side.BUY, "0.020"))
        assert report.status == "filled" and report.venue_order_id is not None
        venue_cid = to_venue(ClientOrderId("i54-1-1"), "binanceusdm")
        assert len([o for o in exchange_fake.binance.orders.values() if o.client_id == venue_cid]) == 1
        assert len(order_posts(exchange_fake)) == 1  # looked up, never re-sent
        looked_up = [r for r in exchange_fake.requests_to(path_prefix="/fapi/v1/order") if r.method == "GET"]
        assert looked_up and looked_up[0].params.get("origClientOrderId") == venue_cid
        assert [f.quantity for f in fills(reports)] == [Decimal("0.02")]
        assert venue.gates["binanceusdm"].bad_payloads == 1


async def test_an_unreadable_answer_to_a_read_is_a_bad_payload_naming_the_call(exchange_fake: Any) -> None:
    venue, _ = adapter(exchange_fake)
    async with venue:
        await venue.submit_order(order("i55-1-1", PERP, Side.BUY, "0.020"))
        # ccxt itself turns a truncated positionRisk into "no positions" without a word: that must not read as flat.
        exchange_fake.faults.malformed(path="/fapi/v3/positionRisk", times=None)
        with pytest.raises(VenueBadPayload, match=r"fetch_positions with a body that is not JSON .*positionRisk"):
            await venue.fetch_account()
        exchange_fake.faults.clear()
        exchange_fake.faults.malformed(path="/fapi/v3/account", times=None)
        with pytest.raises(VenueBadPayload, match="fetch_balance"):
            await venue.fetch_account()
        exchange_fake.faults.clear()
        assert (await venue.fetch_account()).perps == (("ETHUSDT", Decimal("0.02")),)


async def test_a_spot_buy_with_all_usdt_in_futures_moves_the_shortfall_first(exchange_fake: Any) -> None:
    state = exchange_fake.binance
    state.set_balance("USDT", Decimal(0), wallet="spot")
    state.set_balance("USDT", Decimal(20_000), wallet="futures")
    venue, reports = adapter(exchange_fake)
    async with venue:
        before = dict((await venue.fetch_account()).balances)["USDT"]
        report = await venue.submit_order(order("i56-1-1", SPOT, Side.BUY, "0.5000", limit_price="3030"))
        assert report.status == "filled"
        # 0.5 ETH at the cap 3030 with the 0.1 % taker fee: 1516.515 → 1516.52 moved, spot to futures, before it.
        [transfer] = venue.internal_transfers
        assert (transfer.asset, transfer.amount, transfer.from_wallet, transfer.to_wallet, transfer.ok) == \
            ("USDT", Decimal("1516.52"), "futures", "spot", True)
        posts = [r for r in exchange_fake.requests if r.method == "POST" and r.path in ("/sapi/v1/asset/transfer",
                                                                                         "/api/v3/order")]
        assert [p.path for p in posts] == ["/sapi/v1/asset/transfer", "/api/v3/order"]
        assert posts[0].params["type"] == "UMFUTURE_MAIN" and posts[0].params["amount"] == "1516.52"
        # The books: one account, so the transfer is no change; only the fill is (1500 USDT for 0.5 ETH at 3000).
        [fill] = fills(reports)
        assert (fill.quantity, fill.price) == (Decimal("0.5"), Decimal(3000))
        after = dict((await venue.fetch_account()).balances)["USDT"]
        assert after == before - Decimal(1500)
        assert venue.counters()["internal_transfers"] == 1


async def test_a_perp_order_draws_its_margin_from_spot_when_futures_lacks_it(exchange_fake: Any) -> None:
    state = exchange_fake.binance
    state.set_balance("USDT", Decimal(100), wallet="futures")
    venue, reports = adapter(exchange_fake)  # leverage 3
    async with venue:
        report = await venue.submit_order(order("i57-1-1", PERP, Side.SELL, "0.500", limit_price="2970"))
        assert report.status == "filled"
        # Initial margin 0.5 × 2970 / 3 = 495, plus 5 %, plus the 0.05 % taker fee: 520.49…; 100 there already.
        [transfer] = venue.internal_transfers
        assert (transfer.from_wallet, transfer.to_wallet, transfer.amount) == ("spot", "futures", Decimal("420.50"))
        assert state.balance("USDT", wallet="spot") == USDT - Decimal("420.50")
        # A reduce-only order needs no margin: nothing moves.
        assert (await venue.submit_order(order("i57-2-1", PERP, Side.BUY, "0.100", reduce_only=True))).status \
            == "filled"
        assert len(venue.internal_transfers) == 1 and len(fills(reports)) == 2


async def test_an_order_neither_wallet_can_fund_is_refused_before_it_is_sent(exchange_fake: Any) -> None:
    state = exchange_fake.binance
    state.set_balance("USDT", Decimal(10), wallet="spot")
    state.set_balance("USDT", Decimal(50), wallet="futures")
    venue, _ = adapter(exchange_fake)
    async with venue:
        report = await venue.submit_order(order("i58-1-1", SPOT, Side.BUY, "0.1000", limit_price="3030"))
        assert report.status == "rejected"
        assert report.reason == ("needs 303.31 USDT in the spot wallet, which has 10.0; the futures wallet has 50.0, "
                                 "short of the 293.31 to move")
        assert not venue.internal_transfers and not order_posts(exchange_fake, "/api/v3/order")


async def test_a_transfer_that_fails_refuses_the_order_with_the_reason(exchange_fake: Any) -> None:
    state = exchange_fake.binance
    state.set_balance("USDT", Decimal(0), wallet="spot")
    venue, _ = adapter(exchange_fake)
    async with venue:
        exchange_fake.faults.binance_error(-5002, "You have insufficient balance.", path="/sapi/v1/asset/transfer")
        report = await venue.submit_order(order("i59-1-1", SPOT, Side.BUY, "0.1000", limit_price="3030"))
        assert report.status == "rejected" and "moving 303.31 USDT from the futures wallet to the spot wallet " \
            "failed" in report.reason and "-5002" in report.reason
        [transfer] = venue.internal_transfers
        assert not transfer.ok and venue.counters()["internal_transfers_failed"] == 1
        assert not order_posts(exchange_fake, "/api/v3/order")


async def test_a_spot_sells_proceeds_are_swept_back_to_futures(exchange_fake: Any) -> None:
    state = exchange_fake.binance
    venue, _ = adapter(exchange_fake)
    async with venue:
        assert (await venue.submit_order(order("i60-1-1", SPOT, Side.BUY, "0.2000"))).status == "filled"
        assert not venue.internal_transfers  # the spot wallet had enough
        futures = state.balance("USDT", wallet="futures")
        assert (await venue.submit_order(order("i60-2-1", SPOT, Side.SELL, "0.1000", reduce_only=True))).status \
            == "filled"
        [sweep] = venue.internal_transfers
        # 0.1 ETH at 3000 = 300 USDT, less the 0.1 % fee charged in USDT: 299.70 back to futures.
        assert (sweep.from_wallet, sweep.to_wallet, sweep.amount, sweep.why) == \
            ("spot", "futures", Decimal("299.70"), "sweep i60-2-1")
        assert state.balance("USDT", wallet="futures") == futures + Decimal("299.70")


async def test_insufficient_margin_is_a_rejection_with_the_venues_reason(exchange_fake: Any,
                                                                        binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    # 300 000 USDT at 3x is more than both wallets hold: refused here, before anything is sent or moved.
    report = await venue.submit_order(order("i17-1-1", PERP, Side.BUY, "100.000"))
    # (the mark 3000 plus 1 % for a market order, / 3, plus 5 %, plus the taker fee)
    assert report.status == "rejected" and report.reason.startswith("needs 106201.50 USDT in the futures wallet")
    assert not order_posts(exchange_fake) and not venue.internal_transfers
    # Where the venue itself says no (margin it counts differently), its reason is the rejection's.
    exchange_fake.faults.binance_error(-2019, "Margin is insufficient.", path="/fapi/v1/order")
    report = await venue.submit_order(order("i17-2-1", PERP, Side.BUY, "1.000"))
    assert report.status == "rejected" and report.reason.startswith("-2019")


async def test_an_account_read_that_fails_is_a_venue_error_the_reconciler_retries(
        exchange_fake: Any, binance: tuple[CcxtExchange, Any]) -> None:
    venue, _ = binance
    exchange_fake.faults.maintenance(host="fapi.binance.com", times=1)  # one failed attempt: retried at once
    assert (await venue.fetch_account()).balances
    exchange_fake.faults.maintenance(host="fapi.binance.com")  # every attempt
    with pytest.raises(RetryableVenueError, match="reading the account"):
        await venue.fetch_account()
    exchange_fake.faults.clear()
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
    schedule = Schedule()
    return CcxtExchange(config(fake, **settings), WallClock(), reports, session=fake.session(),
                        wall_ms=schedule.now_ms, sleep=schedule.sleep, rng=random.Random(12)), reports


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
    assert venue.funding is None and not venue.internal_transfers  # one unified wallet: nothing to move
    assert not [r for r in exchange_fake.requests if "transfer" in r.path]


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
    schedule = Schedule()
    return CcxtExchange(config(fake, **settings), WallClock(), reports, session=fake.session(),
                        wall_ms=schedule.now_ms, sleep=schedule.sleep, rng=random.Random(12)), reports


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


async def test_okx_order_timed_out_is_an_unknown_outcome_looked_up_then_resent_under_the_same_id(
        exchange_fake: Any, okx: tuple[CcxtExchange, Any]) -> None:
    """OKX's sCode 51149 ("Order timed out, please try again later"): neither placed nor refused (ccxt 4.5.90 calls
    it a plain ExchangeError, which would read as a refusal). Here the venue did not place it: the look-up finds
    nothing, and the resend carries the same clOrdId."""
    venue, reports = okx
    venue_cid = to_venue(ClientOrderId("i44-1-1"), "okx")
    body = json.dumps({"code": "1", "msg": "All operations failed", "data": [
        {"clOrdId": venue_cid, "ordId": "", "sCode": "51149", "sMsg": "Order timed out, please try again later.",
         "tag": ""}]})
    exchange_fake.faults.http_error(200, body, host="okx.com", path="/api/v5/trade/*", method="POST",
                                    content_type="application/json")
    report = await venue.submit_order(order("i44-1-1", OKX_PERP, Side.BUY, "0.3"))
    assert report.status == "filled"
    posts = [r for r in exchange_fake.requests if r.method == "POST" and r.path.startswith("/api/v5/trade/")]
    assert [r.status for r in posts] == [200, 200]  # the 51149, then the resend (the one order below is its)
    looked_up = [r.params for r in exchange_fake.requests if r.method == "GET" and r.path == "/api/v5/trade/order"]
    assert looked_up and looked_up[0].get("clOrdId") == venue_cid
    assert len([o for o in exchange_fake.okx.orders.values() if o.client_id == venue_cid]) == 1
    assert [f.quantity for f in fills(reports)] == [Decimal("0.3")]


async def test_bybit_and_okx_rate_limits_close_their_own_gate_only(exchange_fake: Any) -> None:
    """Bybit's 10006 and OKX's 50011 come as RateLimitExceeded (a sibling of Binance's DDoSProtection): the same
    gate, per venue."""
    for make, host, path, instrument, exchange_id in (
            (bybit_adapter, "bybit.com", "/v5/order/create", BYBIT_PERP, "bybit"),
            (okx_adapter, "okx.com", "/api/v5/trade/*", OKX_PERP, "okx")):
        venue, _ = make(exchange_fake)
        async with venue:
            exchange_fake.faults.rate_limit(retry_after=5, host=host, path=path)
            with pytest.raises(VenueRateLimited) as caught:
                await venue.submit_order(order(f"i45-{exchange_id}-1", instrument, Side.BUY, "0.10"))
            assert caught.value.retry_after_s == 5
            gate = venue.gates[exchange_id]
            assert gate.state == "rate_limited" and gate.rate_limits_seen == 1
            sent = len(exchange_fake.requests)
            with pytest.raises(GateClosed, match="asked for 5 s"):
                await venue.submit_order(order(f"i45-{exchange_id}-1", instrument, Side.BUY, "0.10"))
            assert len(exchange_fake.requests) == sent


async def test_a_spot_trade_and_a_perp_trade_with_the_same_number_are_two_fills(exchange_fake: Any) -> None:
    # Binance numbers its spot and USDⓈ-M trades separately: trade 7 of one is not trade 7 of the other. The books
    # de-duplicate fills by (venue, trade id), so the id must say which.
    venue, _ = adapter(exchange_fake)
    async with venue:
        perps, spot = venue.ccxt_clients["binanceusdm"], venue.ccxt_clients["binance"]
        assert venue.trade_id(perps, "7") == "7" and venue.trade_id(spot, "7") == "binance-7"


async def test_okx_more_trades_since_the_last_poll_than_one_page_are_all_booked(
        exchange_fake: Any, okx: tuple[CcxtExchange, Any]) -> None:
    """OKX answers a trades query newest first, 100 at most: 150 fills since the last poll (a stream down for a
    while, a restart) are read page by page back to the last one seen — none is lost to the page's size."""
    venue, reports = okx
    assert await venue.poll_fills() == 0
    raw = await exchange_fake.client("okx")
    for i in range(150):
        cid = to_venue(ClientOrderId(f"r1i{60 + i}-1-1"), "okx")
        await raw.create_order("ETH/USDT:USDT", "market", "buy" if i % 2 == 0 else "sell", 1, None, {"clOrdId": cid})
    assert await venue.poll_fills() == 150
    got = fills(reports)
    assert len({f.trade_id for f in got}) == 150
    assert await venue.poll_fills() == 0  # and none twice
