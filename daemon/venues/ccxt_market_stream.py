"""A venue's public market data from its websocket streams (ccxt.pro), with REST where a stream is missing or stale.

`StreamingMarketSource` is a `MarketSource` (`daemon.replay.live_feed`) like `CcxtMarketSource`, so the live feed
does not change: it still asks `perp()` / `spot()` on its cadence, and gets the latest streamed quote when that is
fresh, else the REST source's answer (the one it wraps, `fallback`). Background tasks keep the latest quote per
asset, one ccxt.pro client per market type (the perp client, and the spot client on the valuation venue):

- binance: perp `binanceusdm.watch_mark_price` (markPriceUpdate: mark `p`, index `i`, funding rate `r`, next
  settlement `T`); spot `binance.watch_ticker` (miniTicker, last `c`).
- bybit: perp `bybit.watch_ticker` on linear (`markPrice`, `indexPrice`, `fundingRate`, `nextFundingTime`; Bybit
  sends a snapshot, then deltas of what changed, which ccxt.pro merges into `info`); spot `watch_ticker` (`lastPrice`).
- okx: perp `okx.watch_mark_price` (`markPx`) and `okx.watch_funding_rate` (`fundingRate`, `fundingTime`); spot
  `watch_ticker` (`last`).

Binance's mark stream and Bybit's ticker carry the funding rate with the mark; OKX's funding-rate channel is its
own (OKX pushes it every 30–90 s, hence a separate, longer staleness limit). Every number is read exactly from the
payload (`info`) as `ccxt_parse.exact` does, checked against the float ccxt parsed where ccxt parses one: a
malformed message is counted and skipped (its quote ages and REST answers), never a zero price.

Freshness is judged on our monotonic clock at receipt, not on the venue's timestamps (a venue's clock is not ours):
a mark or spot price older than `stale_after_s`, or a funding rate older than `funding_stale_after_s`, is stale,
and the REST source answers, said once in the log when a quote moves to REST and once when it comes back. The
very first call for an asset waits up to `first_quote_wait_s` for the stream's first message (the streams start
with the first call), so a start-up does not poll REST just because the websocket was still connecting.

A client's streams live through sessions: load markets, subscribe every channel → messages → the session ends
(the venue dropped the socket, ccxt.pro's keep-alive missed its pongs for `dead_after_s`, or a channel has been
silent for `reconnect_after_stale` × its staleness limit: a socket that answers pings but delivers nothing) →
close the client's sockets, back off (exponential, capped, with jitter) and start again; the wait goes back to
short once a session delivered. `close()` stops every task and closes the pro clients and the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import ccxt.pro as ccxtpro
import structlog

from daemon.errors import VenueBadPayload
from daemon.failures import describe
from daemon.venues.ccxt_exchange import RATE_LIMITER
from daemon.venues.ccxt_market import CLIENTS
from daemon.venues.ccxt_parse import exact
from daemon.venues.quotes import PerpQuote, SpotQuote
from daemon.venues.reconnect import backoff_delay, check_backoff

log = structlog.get_logger()

NS_PER_MS = 1_000_000

ProFactory = Callable[[str, dict[str, Any]], Any]


class RestSource(Protocol):
    """What the stream falls back to: `CcxtMarketSource` (the live feed's `MarketSource`)."""

    venue: str

    async def perp(self, asset: str, now_ns: int) -> PerpQuote: ...

    async def spot(self, asset: str, now_ns: int) -> SpotQuote: ...

    async def close(self) -> None: ...


# Per venue, the perp client's channels: (ccxt.pro method, what its messages update).
_PERP_CHANNELS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "binance": (("watch_mark_price", ("mark", "funding")),),
    "bybit": (("watch_ticker", ("mark", "funding")),),
    "okx": (("watch_mark_price", ("mark",)), ("watch_funding_rate", ("funding",))),
}
_SPOT_CHANNELS: tuple[tuple[str, tuple[str, ...]], ...] = (("watch_ticker", ("spot",)),)
# Per venue, the raw fields: mark (mark, index or None), funding (rate, next settlement in ms), spot last price.
_MARK_FIELDS = {"binance": ("p", "i"), "bybit": ("markPrice", "indexPrice"), "okx": ("markPx", None)}
_FUNDING_FIELDS = {"binance": ("r", "T"), "bybit": ("fundingRate", "nextFundingTime"),
                   "okx": ("fundingRate", "fundingTime")}
_SPOT_FIELDS = {"binance": "c", "bybit": "lastPrice", "okx": "last"}


@dataclass(frozen=True, slots=True)
class MarketStreamSettings:
    # A mark or spot price older than this is stale: REST answers. The venues push continuously (Binance's mark
    # every second, Bybit's tickers on every change, OKX's mark every 10 s even unchanged).
    stale_after_s: float = 15.0
    funding_stale_after_s: float = 150.0  # a funding rate older than this is stale (OKX pushes every 30–90 s)
    first_quote_wait_s: float = 3.0  # the first call per asset waits this long for the stream's first message
    reconnect_after_stale: float = 2.0  # a channel silent this many times its staleness limit: reconnect
    ping_interval_s: float = 10.0  # ccxt.pro's keepAlive: a ping this often
    dead_after_s: float = 30.0  # ... and the socket is dead after this long without a pong
    backoff_initial_s: float = 0.5  # the first reconnect waits about this long, each next one twice as long ...
    backoff_max_s: float = 30.0  # ... up to this
    backoff_jitter: float = 0.5  # each wait is shortened by up to this fraction, at random

    def __post_init__(self) -> None:
        if self.stale_after_s <= 0 or self.funding_stale_after_s <= 0 or self.first_quote_wait_s < 0:
            raise ValueError("market streams: staleness limits must be positive, the first wait not negative")
        if self.reconnect_after_stale < 1:
            raise ValueError("market streams: reconnect_after_stale must be at least 1 (reconnect only once stale)")
        if not 0 < self.ping_interval_s < self.dead_after_s:
            raise ValueError("market streams: ping_interval_s must be positive and shorter than dead_after_s")
        check_backoff(self, "market streams")


@dataclass(slots=True)
class StreamCounters:
    """What metrics read: monotonic counts since the source started."""

    messages: int = 0  # stream updates read (one per watch that returned)
    bad_messages: int = 0  # updates that could not be read exactly (skipped)
    sessions: int = 0  # sessions that delivered at least one update
    reconnects: int = 0  # sessions that ended and were started again
    silent_reconnects: int = 0  # ... of which because a channel stayed silent
    stream_answers: int = 0  # perp()/spot() answered from the stream
    rest_answers: int = 0  # ... from the REST fallback


@dataclass
class _Latest:
    """The latest streamed values of one asset on one market type, with when (monotonic) each was received."""

    mark: Decimal | None = None
    index: Decimal | None = None
    rate: Decimal | None = None
    settles_ms: int | None = None
    spot: Decimal | None = None
    ts_ms: int | None = None  # the venue's time of the latest mark / spot price
    received: dict[str, float] = field(default_factory=dict)  # "mark" | "funding" | "spot" → monotonic s
    first: asyncio.Event = field(default_factory=asyncio.Event)  # every part has arrived once
    waited: bool = False  # the first call's wait for the stream is spent


@dataclass(eq=False)
class _Link:
    """One ccxt.pro client, the assets it watches and its channels."""

    kind: str  # "Perp" | "Spot"
    pro: Any
    symbols: dict[str, str]  # asset → ccxt symbol
    channels: tuple[tuple[str, tuple[str, ...]], ...]
    delivered: bool = False  # the current session delivered an update
    last_error: str = ""


class StreamingMarketSource:
    """One venue's public market data (`binance`, `bybit`, `okx`) from its streams, REST (`fallback`) otherwise."""

    def __init__(self, venue: str, perp_symbols: Mapping[str, str], spot_symbols: Mapping[str, str] | None = None,
                 *, fallback: RestSource, settings: MarketStreamSettings | None = None,
                 session: aiohttp.ClientSession | None = None, timeout_s: float = 10.0,
                 factory: ProFactory | None = None, rand: Callable[[], float] = random.random) -> None:
        if venue not in CLIENTS:
            raise ValueError(f"no market stream for venue {venue!r} (known: {', '.join(CLIENTS)})")
        if fallback.venue != venue:
            raise ValueError(f"the REST fallback is {fallback.venue!r}'s, not {venue!r}'s")
        self.venue = venue
        self.settings = settings or MarketStreamSettings()
        self.counters = StreamCounters()
        self._fallback = fallback
        self._session = session
        self._timeout_s = timeout_s
        self._factory = factory or (lambda exchange_id, config: getattr(ccxtpro, exchange_id)(config))
        self._rand = rand
        self._perp_symbols = dict(perp_symbols)
        self._spot_symbols = dict(spot_symbols or {})
        self._latest: dict[tuple[str, str], _Latest] = {}  # (kind, asset) → latest
        for asset in self._perp_symbols:
            self._latest[("Perp", asset)] = _Latest()
        for asset in self._spot_symbols:
            self._latest[("Spot", asset)] = _Latest()
        self._on_rest: dict[tuple[str, str], bool] = {}  # (kind, asset) → answered by REST last time
        self._links: list[_Link] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._pulse = asyncio.Event()
        self._listeners: list[Callable[[str, str], None]] = []

    def __repr__(self) -> str:
        return f"StreamingMarketSource({self.venue!r}, started={bool(self._tasks)})"

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._perp_symbols)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the streams (the first `perp()` / `spot()` does it too); needs a running event loop."""
        if self._tasks or self._closing:
            return
        self._links.append(_Link("Perp", self._client("Perp"), self._perp_symbols, _PERP_CHANNELS[self.venue]))
        if self._spot_symbols:
            self._links.append(_Link("Spot", self._client("Spot"), self._spot_symbols, _SPOT_CHANNELS))
        self._tasks = [asyncio.create_task(self._supervise(link), name=f"market-stream-{self.venue}-{link.kind}")
                       for link in self._links]

    async def close(self) -> None:
        """Stop every task, close the pro clients and the REST fallback (a shared session stays open)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for link in self._links:
            await _drop_connections(link.pro)
            with contextlib.suppress(Exception):
                await link.pro.close()
        self._links = []
        await self._fallback.close()

    def _client(self, kind: str) -> Any:
        exchange_id, options = CLIENTS[self.venue][kind]
        s = self.settings
        config: dict[str, Any] = {
            "timeout": int(self._timeout_s * 1000), "enableRateLimit": True, **RATE_LIMITER,
            "options": {"fetchCurrencies": False, **options},
            # ccxt.pro's keep-alive: a ping every keepAlive ms, dead after maxPingPongMisses of them unanswered.
            "streaming": {"keepAlive": int(s.ping_interval_s * 1000),
                          "maxPingPongMisses": s.dead_after_s / s.ping_interval_s}}
        if self._session is not None:
            config["session"] = self._session  # a redirected session (tests, demos); ccxt does not close it
        client = self._factory(exchange_id, config)
        client.has["fetchCurrencies"] = False  # public data only (Bybit and OKX ignore the option)
        return client

    # --- the MarketSource port -----------------------------------------------------------------------------------

    async def perp(self, asset: str, now_ns: int) -> PerpQuote:
        """The streamed mark and funding rate when fresh, else the REST source's (raises what REST raises)."""
        latest = await self._ready("Perp", asset)
        reason = self._stale("Perp", latest)
        if reason is None:
            assert latest.mark is not None and latest.rate is not None
            self._answered("Perp", asset, None)
            return PerpQuote(asset, latest.mark, latest.rate,
                             latest.settles_ms * NS_PER_MS if latest.settles_ms else None,
                             _ts_ns(latest.ts_ms, now_ns))
        self._answered("Perp", asset, reason)
        return await self._fallback.perp(asset, now_ns)

    async def spot(self, asset: str, now_ns: int) -> SpotQuote:
        """The streamed spot price when fresh, else the REST source's."""
        latest = await self._ready("Spot", asset)
        reason = self._stale("Spot", latest)
        if reason is None:
            assert latest.spot is not None
            self._answered("Spot", asset, None)
            return SpotQuote(asset, latest.spot, _ts_ns(latest.ts_ms, now_ns))
        self._answered("Spot", asset, reason)
        return await self._fallback.spot(asset, now_ns)

    # --- state, for the feed's health, metrics and tests ---------------------------------------------------------

    def fresh(self, kind: str, asset: str) -> bool:
        """Whether `perp()` (kind "Perp") / `spot()` ("Spot") would answer from the stream now."""
        return self._stale(kind, self._latest[(kind, asset)]) is None

    def latest(self, kind: str, asset: str) -> dict[str, Any]:
        """The latest streamed values (mark, index, rate, settles_ms, spot, ts_ms), fresh or not."""
        x = self._latest[(kind, asset)]
        return {"mark": x.mark, "index": x.index, "rate": x.rate, "settles_ms": x.settles_ms, "spot": x.spot,
                "ts_ms": x.ts_ms}

    @property
    def last_errors(self) -> dict[str, str]:
        """Per market type, why its last session ended ("" while it has not)."""
        return {link.kind: link.last_error for link in self._links}

    async def wait_until(self, predicate: Callable[[], bool], within_s: float, poll_s: float = 0.05) -> None:
        """Until `predicate()` holds (checked on every streamed update, and every `poll_s`); TimeoutError after
        `within_s`."""
        async with asyncio.timeout(within_s):
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pulse.wait(), poll_s)

    def on_update(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(kind, asset)` after every streamed update held (for an event-driven consumer, benchmarks);
        it runs on the stream's task and must not block."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    async def _ready(self, kind: str, asset: str) -> _Latest:
        latest = self._latest[(kind, asset)]  # KeyError: an asset this source was not built for
        self.start()
        if not latest.waited:
            latest.waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(latest.first.wait(), self.settings.first_quote_wait_s)
        return latest

    def _stale(self, kind: str, latest: _Latest) -> str | None:
        """Why the stream cannot answer for this quote now (None: it can)."""
        if self._closing or not self._tasks:
            return "stream not running"
        now = time.monotonic()
        parts = ("mark", "funding") if kind == "Perp" else ("spot",)
        for part in parts:
            at = latest.received.get(part)
            if at is None:
                return f"no {part} streamed yet"
            limit = self._limit(part)
            if now - at > limit:
                return f"{part} silent for {now - at:.1f} s (limit {limit:g} s)"
        return None

    def _limit(self, part: str) -> float:
        return self.settings.funding_stale_after_s if part == "funding" else self.settings.stale_after_s

    def _answered(self, kind: str, asset: str, reason: str | None) -> None:
        key = (kind, asset)
        was_rest = self._on_rest.get(key)
        if reason is None:
            self.counters.stream_answers += 1
            if was_rest:
                log.info("market_stream_resumed", venue=self.venue, asset=asset, kind=kind)
            self._on_rest[key] = False
            return
        self.counters.rest_answers += 1
        if not was_rest:
            log.warning("market_stream_fallback", venue=self.venue, asset=asset, kind=kind, reason=reason,
                        detail="answered by REST until the stream is fresh again")
        self._on_rest[key] = True

    # --- sessions ------------------------------------------------------------------------------------------------

    async def _supervise(self, link: _Link) -> None:
        attempt = 0
        while not self._closing:
            link.delivered = False
            try:
                await self._session_run(link)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever ended the session, the next one starts from a clean connection
                link.last_error = describe(exc)
                if link.delivered or attempt == 0:
                    log.warning("market_stream_disconnected", venue=self.venue, kind=link.kind,
                                error=link.last_error)
            if link.delivered:
                attempt = 0  # it worked for a while: back to the short wait
            await _drop_connections(link.pro)
            if self._closing:
                return
            self.counters.reconnects += 1
            self._changed()
            await asyncio.sleep(backoff_delay(attempt, self.settings, self._rand))
            attempt += 1

    async def _session_run(self, link: _Link) -> None:
        """One session: markets, then every channel of every asset watched until one fails (by raising)."""
        if link.pro.markets is None:
            await link.pro.load_markets()
        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for asset, symbol in link.symbols.items():
                for method, parts in link.channels:
                    tg.create_task(self._watch(link, asset, symbol, method, parts))
            tg.create_task(self._watchdog(link, started))

    async def _watch(self, link: _Link, asset: str, symbol: str, method: str, parts: tuple[str, ...]) -> None:
        watch = getattr(link.pro, method)
        warned = False
        while True:
            structure = await watch(symbol)
            # Several messages may have been handled before this task ran again: ccxt's cache has the latest.
            cache = link.pro.fundingRates if method == "watch_funding_rate" else link.pro.tickers
            structure = (cache or {}).get(symbol) or structure
            self.counters.messages += 1
            try:
                self._apply(link.kind, asset, symbol, parts, structure)
            except VenueBadPayload as exc:
                self.counters.bad_messages += 1
                if not warned:  # once per session and channel: a venue sending garbage would flood the log
                    warned = True
                    log.warning("market_stream_bad_message", venue=self.venue, kind=link.kind, asset=asset,
                                method=method, error=str(exc))
                continue
            if not link.delivered:
                link.delivered = True
                self.counters.sessions += 1
                log.info("market_stream_live", venue=self.venue, kind=link.kind, sessions=self.counters.sessions)
            for listener in self._listeners:
                try:
                    listener(link.kind, asset)
                except Exception as exc:  # a consumer's bug must not end the venue's stream
                    log.warning("market_stream_listener_failed", venue=self.venue, error=describe(exc))
            self._changed()

    async def _watchdog(self, link: _Link, started: float) -> None:
        """End the session when one of its channels has been silent for `reconnect_after_stale` × its limit."""
        limits = {part: self._limit(part) * self.settings.reconnect_after_stale
                  for _, parts in link.channels for part in parts}
        check_s = max(0.05, min(limits.values()) / 4)
        while True:
            await asyncio.sleep(check_s)
            now = time.monotonic()
            for asset in link.symbols:
                latest = self._latest[(link.kind, asset)]
                for part, limit in limits.items():
                    since = max(started, latest.received.get(part, started))
                    if now - since > limit:
                        self.counters.silent_reconnects += 1
                        raise TimeoutError(f"{self.venue} {link.kind} {asset}: no {part} update for "
                                           f"{now - since:.1f} s: reconnecting")

    def _apply(self, kind: str, asset: str, symbol: str, parts: tuple[str, ...], structure: Any) -> None:
        """Read one streamed structure exactly into the asset's latest values (VenueBadPayload: nothing changes)."""
        info = structure.get("info") if isinstance(structure, dict) else None
        if not isinstance(info, dict):
            raise VenueBadPayload(f"{self.venue} {symbol}: a streamed update without its payload")
        what = f"{self.venue} {symbol} (stream)"
        update: dict[str, Any] = {}
        if "mark" in parts:
            mark_field, index_field = _MARK_FIELDS[self.venue]
            update["mark"] = exact(info.get(mark_field), f"{what} mark", structure.get("markPrice"))
            if index_field is not None and info.get(index_field) not in (None, ""):
                update["index"] = exact(info.get(index_field), f"{what} index", structure.get("indexPrice"))
        if "funding" in parts:
            rate_field, next_field = _FUNDING_FIELDS[self.venue]
            update["rate"] = exact(info.get(rate_field), f"{what} funding rate", structure.get("fundingRate"))
            next_ms = info.get(next_field)
            update["settles_ms"] = int(next_ms) if isinstance(next_ms, str | int) and str(next_ms).isdigit() \
                and int(next_ms) > 0 else None
        if "spot" in parts:
            update["spot"] = exact(info.get(_SPOT_FIELDS[self.venue]), f"{what} spot price", structure.get("last"))
        latest = self._latest[(kind, asset)]
        for name, value in update.items():
            setattr(latest, name, value)
        if "mark" in parts or "spot" in parts:
            ts = structure.get("timestamp")
            latest.ts_ms = int(ts) if isinstance(ts, int | float) and ts > 0 else None
        now = time.monotonic()
        for part in parts:
            latest.received[part] = now
        needed = ("mark", "funding") if kind == "Perp" else ("spot",)
        if all(part in latest.received for part in needed):
            latest.first.set()


async def _drop_connections(pro: Any) -> None:
    """Close the client's websockets, so the next session connects and subscribes afresh."""
    for client in list((getattr(pro, "clients", None) or {}).values()):
        with contextlib.suppress(Exception):
            await client.close()
    pro.clients = {}


def _ts_ns(ts_ms: int | None, now_ns: int) -> int:
    """The venue's timestamp, never later than our clock (a venue's clock ahead of ours must not age the rest)."""
    if ts_ms is not None and ts_ms > 0:
        return min(ts_ms * NS_PER_MS, now_ns)
    return now_ns
