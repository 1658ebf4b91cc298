"""The venues' public market streams (`daemon.venues.ccxt_market_stream.StreamingMarketSource`) through the real
ccxt.pro, over TLS with the venues' real host names, against the exchange fake: Binance (USDⓈ-M mark price, spot
miniTicker), Bybit v5 (linear and spot tickers) and OKX v5 (mark-price, funding-rate, spot tickers).

That a quote came from the stream and not from REST is read off the fake's request log: no premiumIndex, tickers,
mark-price or funding-rate read was made. No timing assertions: every wait is on a condition, bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.clock import WallClock
from daemon.domain.market import MarketBoard
from daemon.domain.messages import FundingRateReported, PriceTicked
from daemon.replay.live_feed import LiveFeed
from daemon.venues.ccxt_market import CcxtMarketSource
from daemon.venues.ccxt_market_stream import MarketStreamSettings, StreamingMarketSource
from tests.fakes.exchange.server import FakeExchange

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

WAIT = 20.0  # the bound of every wait (never reached when things work)
PERP, SPOT = "ETH/USDT:USDT", "ETH/USDT"
# Quick reconnects; staleness far away unless a test asks for it; keep-alive out of the way.
SETTINGS = MarketStreamSettings(stale_after_s=60, funding_stale_after_s=600, backoff_initial_s=0.05,
                                backoff_max_s=0.5, ping_interval_s=5, dead_after_s=60)


@dataclass(frozen=True)
class Venue:
    name: str
    perp_symbol: str  # the fake engine's symbols
    spot_symbol: str
    rest_reads: tuple[str, ...]  # the REST paths of the fallback's market data reads

    def state(self, fake: FakeExchange) -> Any:
        return getattr(fake, self.name)

    def rest_requests(self, fake: FakeExchange) -> list[str]:
        return [r.path for r in fake.requests if r.path in self.rest_reads]


VENUES = [
    Venue("binance", "ETHUSDT", "ETHUSDT", ("/fapi/v1/premiumIndex", "/api/v3/ticker/price")),
    Venue("bybit", "ETHUSDT", "ETHUSDT", ("/v5/market/tickers",)),
    Venue("okx", "ETH-USDT-SWAP", "ETH-USDT",
          ("/api/v5/public/funding-rate", "/api/v5/public/mark-price", "/api/v5/market/ticker")),
]
BY_NAME = {v.name: v for v in VENUES}


@asynccontextmanager
async def streaming(fake: FakeExchange, venue: Venue,
                    settings: MarketStreamSettings = SETTINGS, *,
                    start: bool = True) -> AsyncIterator[StreamingMarketSource]:
    session = fake.session()
    rest = CcxtMarketSource(venue.name, {"ETH": PERP}, {"ETH": SPOT}, session=session)
    source = StreamingMarketSource(venue.name, {"ETH": PERP}, {"ETH": SPOT}, fallback=rest, settings=settings,
                                   session=session)
    if start:  # else the first perp() / spot() starts the streams
        source.start()
    try:
        yield source
    finally:
        await source.close()


def both_fresh(source: StreamingMarketSource) -> Callable[[], bool]:
    return lambda: source.fresh("Perp", "ETH") and source.fresh("Spot", "ETH")


def more_messages(source: StreamingMarketSource, n: int) -> Callable[[], bool]:
    target = source.counters.messages + n
    return lambda: source.counters.messages >= target


def now_ns() -> int:
    return time.time_ns()


@pytest.mark.parametrize("venue", VENUES, ids=lambda v: v.name)
async def test_a_pushed_mark_arrives_through_the_stream_not_rest(exchange_fake: FakeExchange, venue: Venue) -> None:
    state = venue.state(exchange_fake)
    async with streaming(exchange_fake, venue, start=False) as source:
        updates: list[tuple[str, str]] = []
        source.on_update(lambda kind, asset: updates.append((kind, asset)))
        # The first calls start the streams and wait for the streams' first messages: no REST read even at start-up.
        first = await source.perp("ETH", now_ns())
        first_spot = await source.spot("ETH", now_ns())
        assert (first.mark, first.funding_rate, first_spot.price) == (Decimal(3000), Decimal("0.0001"), Decimal(3000))

        mark, rate, price = Decimal("3012.123456789"), Decimal("0.000123456789"), Decimal("3011.987654321")
        state.set_mark(venue.perp_symbol, mark)
        state.funding_rate[venue.perp_symbol] = rate
        exchange_fake.market_streams.push_funding(venue.name, venue.perp_symbol)
        state.set_spot_price(venue.spot_symbol, price)
        await source.wait_until(lambda: source.latest("Perp", "ETH")["mark"] == mark
                                and source.latest("Perp", "ETH")["rate"] == rate
                                and source.latest("Spot", "ETH")["spot"] == price, WAIT)
        quote, spot = await source.perp("ETH", now_ns()), await source.spot("ETH", now_ns())

    # Exactly the payload's digits, never through a float.
    assert (str(quote.mark), str(quote.funding_rate), str(spot.price)) == (
        "3012.123456789", "0.000123456789", "3011.987654321")
    assert quote.settles_at_ns == state.next_funding_time_ms * 1_000_000
    assert quote.ts_ns <= now_ns()
    assert venue.rest_requests(exchange_fake) == []
    assert source.counters.rest_answers == 0 and source.counters.stream_answers == 4
    assert source.counters.bad_messages == 0
    assert {("Perp", "ETH"), ("Spot", "ETH")} <= set(updates) and len(updates) == source.counters.messages


@pytest.mark.parametrize("venue", VENUES, ids=lambda v: v.name)
async def test_a_dropped_stream_reconnects_and_the_quotes_continue(exchange_fake: FakeExchange, venue: Venue) -> None:
    state = venue.state(exchange_fake)
    async with streaming(exchange_fake, venue) as source:
        await source.wait_until(both_fresh(source), WAIT)
        sockets = len([r for r in exchange_fake.requests if r.method == "WS"])
        with capture_logs() as logs:
            assert await exchange_fake.market_streams.drop(venue.name) >= 2  # perp and spot
            await source.wait_until(lambda: source.counters.reconnects >= 2, WAIT)  # both clients
            state.set_mark(venue.perp_symbol, Decimal("2950.55"))
            state.set_spot_price(venue.spot_symbol, Decimal("2950.45"))
            await source.wait_until(lambda: source.latest("Perp", "ETH")["mark"] == Decimal("2950.55")
                                    and source.latest("Spot", "ETH")["spot"] == Decimal("2950.45"), WAIT)
        quote, spot = await source.perp("ETH", now_ns()), await source.spot("ETH", now_ns())
        # Re-subscribed on new sockets (OKX's perp client has two channels on one socket).
        assert len([r for r in exchange_fake.requests if r.method == "WS"]) >= sockets + 2
        assert len(exchange_fake.market_streams.subscriptions(venue.name)) >= 2

    assert (quote.mark, spot.price) == (Decimal("2950.55"), Decimal("2950.45"))
    assert venue.rest_requests(exchange_fake) == []
    assert source.counters.sessions >= 4  # two clients, each live before and after the drop
    assert {e["kind"] for e in logs if e["event"] == "market_stream_disconnected"} == {"Perp", "Spot"}


@pytest.mark.parametrize("venue", VENUES, ids=lambda v: v.name)
async def test_a_stale_stream_falls_back_to_rest_and_comes_back(exchange_fake: FakeExchange, venue: Venue) -> None:
    # Stale after 0.3 s of silence; no reconnect for silence within the test (a muted socket stays muted).
    settings = MarketStreamSettings(stale_after_s=0.3, funding_stale_after_s=0.3, reconnect_after_stale=10_000,
                                    backoff_initial_s=0.05, backoff_max_s=0.5, ping_interval_s=5, dead_after_s=60)
    state = venue.state(exchange_fake)
    async with streaming(exchange_fake, venue, settings) as source:
        await source.wait_until(both_fresh(source), WAIT)
        assert exchange_fake.market_streams.mute(venue.name) >= 2
        state.set_mark(venue.perp_symbol, Decimal("3100.25"))  # muted: only REST can know
        await source.wait_until(lambda: not source.fresh("Perp", "ETH"), WAIT)
        with capture_logs() as logs:
            rest = await source.perp("ETH", now_ns())
            again = await source.perp("ETH", now_ns())
        assert rest.mark == again.mark == Decimal("3100.25")
        assert venue.rest_requests(exchange_fake), "the fallback read the venue's REST market data"
        assert source.counters.rest_answers == 2
        fallbacks = [e for e in logs if e["event"] == "market_stream_fallback"]
        assert len(fallbacks) == 1 and fallbacks[0]["asset"] == "ETH" and "silent" in fallbacks[0]["reason"]

        # A new connection streams again: the stream answers, and says so once.
        await exchange_fake.market_streams.drop(venue.name)
        state.set_mark(venue.perp_symbol, Decimal("3100.75"))
        await source.wait_until(lambda: source.fresh("Perp", "ETH")
                                and source.latest("Perp", "ETH")["mark"] == Decimal("3100.75"), WAIT)
        reads = len(venue.rest_requests(exchange_fake))
        with capture_logs() as logs:
            back = await source.perp("ETH", now_ns())
        assert back.mark == Decimal("3100.75") and len(venue.rest_requests(exchange_fake)) == reads
        assert [e["event"] for e in logs if e["event"].startswith("market_stream_")] == ["market_stream_resumed"]


async def test_a_silent_stream_is_reconnected(exchange_fake: FakeExchange) -> None:
    """A socket that stays open but delivers nothing is closed and replaced (the watchdog), not waited on."""
    settings = MarketStreamSettings(stale_after_s=0.2, funding_stale_after_s=0.2, reconnect_after_stale=2,
                                    backoff_initial_s=0.05, backoff_max_s=0.5, ping_interval_s=5, dead_after_s=60)
    venue = BY_NAME["bybit"]
    async with streaming(exchange_fake, venue, settings) as source:
        await source.wait_until(lambda: source.latest("Perp", "ETH")["mark"] is not None, WAIT)
        exchange_fake.market_streams.mute("bybit")
        await source.wait_until(lambda: source.counters.silent_reconnects >= 1, WAIT)
        venue.state(exchange_fake).set_mark("ETHUSDT", Decimal("2999.01"))
        await source.wait_until(lambda: source.latest("Perp", "ETH")["mark"] == Decimal("2999.01"), WAIT)
    linear = [r for r in exchange_fake.requests if r.method == "WS" and r.path == "/v5/public/linear"]
    assert len(linear) >= 2  # the silent socket was replaced by a new one, which streams again


async def test_a_float_in_the_payload_is_refused_and_rest_answers(exchange_fake: FakeExchange) -> None:
    """A mark written as a JSON number is not read through a float: the message is skipped, the quote ages."""
    settings = MarketStreamSettings(stale_after_s=0.3, funding_stale_after_s=0.3, reconnect_after_stale=10_000,
                                    backoff_initial_s=0.05, ping_interval_s=5, dead_after_s=60)
    venue = BY_NAME["binance"]
    async with streaming(exchange_fake, venue, settings) as source:
        await source.wait_until(both_fresh(source), WAIT)
        bad = {"e": "markPriceUpdate", "E": int(time.time() * 1000), "s": "ETHUSDT", "p": 3333.5, "i": "3333.5",
               "P": "3333.5", "r": "0.0001", "T": 1}
        for conn in exchange_fake.binance_streams.market:
            conn.queue.put_nowait(json.dumps(bad))
        await source.wait_until(lambda: source.counters.bad_messages >= 1, WAIT)
        assert source.latest("Perp", "ETH")["mark"] == Decimal(3000)  # unchanged by the bad message
        await source.wait_until(lambda: not source.fresh("Perp", "ETH"), WAIT)
        quote = await source.perp("ETH", now_ns())
    assert quote.mark == Decimal(3000) and "/fapi/v1/premiumIndex" in venue.rest_requests(exchange_fake)


async def test_no_first_message_means_rest_after_the_first_wait(exchange_fake: FakeExchange) -> None:
    """A stream that cannot connect (its host refused) does not hold the feed: REST answers after the first wait."""
    venue = BY_NAME["okx"]

    async def refuse(request: Any) -> Any:
        from aiohttp import web
        return web.json_response({"code": "1", "msg": "fake: refused"}, status=503)

    exchange_fake.ws_routes[("ws.okx.com", "/ws/v5/public")] = refuse
    settings = MarketStreamSettings(first_quote_wait_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2)
    with capture_logs() as logs:
        async with streaming(exchange_fake, venue, settings) as source:
            quote = await source.perp("ETH", now_ns())
            spot = await source.spot("ETH", now_ns())
            assert quote.mark == Decimal(3000) and spot.price == Decimal(3000)
            assert source.counters.rest_answers == 2
            await source.wait_until(lambda: source.counters.reconnects >= 6, WAIT)  # both clients, 3 times each
    assert set(venue.rest_requests(exchange_fake)) == set(venue.rest_reads)
    assert source.counters.sessions == 0
    # An outage is logged when it starts, not on every attempt to reconnect.
    outages = [e for e in logs if e["event"] == "market_stream_disconnected"]
    assert sorted(e["kind"] for e in outages) == ["Perp", "Spot"], outages
    assert all("503" in e["error"] for e in outages), outages


async def test_the_live_feed_reads_the_streams_of_three_venues(exchange_fake: FakeExchange) -> None:
    """The feed itself unchanged: one poll's PriceTicked / FundingRateReported carry the streamed values."""
    sources: dict[str, Any] = {}
    session = exchange_fake.session()
    for venue in VENUES:
        spot = {"ETH": SPOT} if venue.name == "binance" else None
        rest = CcxtMarketSource(venue.name, {"ETH": PERP}, spot, session=session)
        sources[venue.name] = StreamingMarketSource(venue.name, {"ETH": PERP}, spot, fallback=rest,
                                                    settings=SETTINGS, session=session)
    exchange_fake.bybit.set_mark("ETHUSDT", Decimal("3001.5"))
    exchange_fake.okx.set_mark("ETH-USDT-SWAP", Decimal("3002.5"))
    feed = LiveFeed(sources, WallClock(), {}, MarketBoard(), assets=("ETH",), spot_venue="binance",
                    poll_interval_s=0.05, request_timeout_s=10, gas_gwei=None)
    try:
        batch = await feed.next_batch()
    finally:
        await feed.close()
    assert batch is not None
    prices = {str(m.instrument_id): m.price for m in batch if isinstance(m, PriceTicked)}
    assert prices == {"binance:Perp:ETHUSDT": Decimal(3000), "bybit:Perp:ETHUSDT": Decimal("3001.5"),
                      "okx:Perp:ETHUSDT": Decimal("3002.5"), "binance:Spot:ETHUSDT": Decimal(3000)}
    assert len([m for m in batch if isinstance(m, FundingRateReported)]) == 3
    assert not any(h.degraded for h in feed.health.values())
    assert [r.path for r in exchange_fake.requests if any(r.path in v.rest_reads for v in VENUES)] == []


@pytest.mark.parametrize("venue", VENUES, ids=lambda v: v.name)
async def test_close_leaves_no_task(exchange_fake: FakeExchange, venue: Venue) -> None:
    before = set(asyncio.all_tasks())
    async with streaming(exchange_fake, venue) as source:
        await source.wait_until(both_fresh(source), WAIT)
        assert len(set(asyncio.all_tasks()) - before) >= 2
    await asyncio.sleep(0)  # let cancelled callbacks run
    # The fake's own server side (its handlers of the shared session's kept-alive connections) is not ours.
    left = {t for t in set(asyncio.all_tasks()) - before
            if not t.done() and "RequestHandler" not in getattr(t.get_coro(), "__qualname__", "")}
    assert left == set(), [t.get_name() for t in left]
    assert source.fresh("Perp", "ETH") is False  # closed: nothing answers from the stream any more


async def test_the_fakes_heartbeat_keeps_an_unchanged_market_streaming(exchange_fake: FakeExchange) -> None:
    """The venues push continuously whether or not a price moved; the fake does so when its heartbeat is set."""
    exchange_fake.market_streams.heartbeat_s = 0.05  # a started fake: start() starts the heartbeat now
    exchange_fake.market_streams.start()
    for venue in VENUES:
        async with streaming(exchange_fake, venue) as source:
            await source.wait_until(both_fresh(source), WAIT)
            await source.wait_until(more_messages(source, 6), WAIT)  # while nothing moved
            assert source.latest("Perp", "ETH")["mark"] == Decimal(3000)
        assert venue.rest_requests(exchange_fake) == []
