"""Fills from the venues' private websockets (ccxt.pro), with a REST backstop, for one `CcxtExchange`.

`FillStream` runs one ccxt.pro client per ccxt exchange the account trades through (Binance: `binanceusdm` and
`binance` spot; Bybit and OKX: one unified client), made with the adapter's own settings (credentials, aiohttp
session, options) and its already loaded markets. Each loops on `watch_my_trades()` and hands every trade to
`CcxtExchange.publish_trade`, the path the REST poll publishes through, so a trade seen by both is booked once, by
(venue, trade id). `watch_orders()` is not needed: every venue's trade event carries the order's client id
(Binance USDⓈ-M `ORDER_TRADE_UPDATE.o.c`, spot `executionReport.c`, Bybit `execution.orderLinkId`, OKX
`orders.clOrdId`), which is all a fill report needs; order states come from the backstop's open orders.

A link (one pro client) lives through sessions: connect and subscribe → REST backstop (`poll_fills()` from the
last trade seen, open orders, account and positions) → healthy → … → the connection ends → unhealthy, back off
(exponential, with jitter) and start again. A connection is dead, and is closed, when nothing (no message, no
pong) arrived for `dead_after_s`; ccxt.pro pings every `ping_interval_s` (its `keepAlive`; Binance a protocol
ping, Bybit `{"op":"ping"}`, OKX the text `ping`) and gives up on the same budget (`maxPingPongMisses`). The
backstop also runs every `backstop_interval_s`: a message the venue never sent is found there.

Binance USDⓈ-M's listenKey is kept alive here (`PUT /fapi/v1/listenKey` every `listen_key_refresh_s`): ccxt.pro
4.5.90 PUTs once, `listenKeyRefreshRate` after its POST, and never again (its `keep_alive_listen_key` looks for its
subscriptions with `safe_dict` on a websocket client object, which is not a dict, so it never reschedules), and
Binance expires an unrenewed key after 60 minutes. A refused keep-alive, or Binance's `listenKeyExpired` event
(ccxt.pro ignores it; Binance then sends nothing more on that socket), makes this module forget the key and drop
the connection: the next session POSTs a new key and backstops the gap.

The stream's own health and counters (`healthy`, `counters`) are for metrics and the operator; nothing here halts
trading. Errors are logged by type with the account's secrets blanked out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ccxt.pro as ccxtpro
import structlog

from daemon.errors import VenueBadPayload
from daemon.venues.ccxt_exchange import AccountDetail, CcxtExchange, OpenOrder
from daemon.venues.reconnect import backoff_delay, check_backoff

log = structlog.get_logger()

HANDED_KEEP = 1000  # ccxt.pro's trade cache size (options.tradesLimit)

ProFactory = Callable[[str, dict[str, Any]], Any]
BackstopHook = Callable[[tuple[OpenOrder, ...], AccountDetail], Awaitable[None]]


def _default_pro_factory(exchange_id: str, settings: dict[str, Any]) -> Any:
    return getattr(ccxtpro, exchange_id)(settings)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    backoff_initial_s: float = 0.5  # the first reconnect waits about this long, each next one twice as long ...
    backoff_max_s: float = 30.0  # ... up to this
    backoff_jitter: float = 0.5  # each wait is shortened by up to this fraction, at random (no thundering herd)
    ping_interval_s: float = 10.0  # ccxt.pro's keepAlive: a ping this often
    dead_after_s: float = 30.0  # nothing received (message or pong) for this long: the connection is dead
    connect_timeout_s: float = 20.0  # connect, authenticate and subscribe within this, or start again
    backstop_interval_s: float = 60.0  # the REST backstop's period while connected
    listen_key_refresh_s: float = 1200.0  # Binance USDⓈ-M listenKey keep-alive period (Binance expires it at 60 min)

    def __post_init__(self) -> None:
        if not 0 < self.ping_interval_s < self.dead_after_s:
            raise ValueError("streams: ping_interval_s must be positive and shorter than dead_after_s (a dead "
                             "connection is one that missed its pongs)")
        check_backoff(self, "streams")
        if self.backstop_interval_s <= 0 or self.connect_timeout_s <= 0 or self.listen_key_refresh_s <= 0:
            raise ValueError("streams: intervals and timeouts must be positive")


@dataclass(slots=True)
class StreamCounters:
    """What metrics read: monotonic counts since the stream started."""

    messages: int = 0  # websocket messages received (pongs excluded where ccxt reports them apart)
    connects: int = 0  # sessions that reached "subscribed"
    reconnects: int = 0  # sessions that ended and were started again
    dead_connections: int = 0  # closed by the watchdog: nothing received within dead_after_s
    listen_key_expiries: int = 0  # Binance listenKeyExpired events
    listen_key_renewals: int = 0  # Binance keep-alives the venue accepted
    listen_key_failures: int = 0  # ... and refused or failed
    fills_stream: int = 0  # fills first booked from a stream message
    fills_backstop: int = 0  # fills first booked by the REST backstop (the stream lost or had not sent them)
    bad_trades: int = 0  # streamed trades that could not be read exactly (left to the backstop)
    backstops: int = 0  # successful backstop rounds
    backstop_failures: int = 0


@dataclass(eq=False)
class _Link:
    """One ccxt.pro client and the state of its current session."""

    exchange_id: str
    pro: Any
    live: asyncio.Event = field(default_factory=asyncio.Event)  # connected and subscribed
    healthy: bool = False  # live and backstopped since
    handed: set[str] = field(default_factory=set)  # trade ids of the client's cache already handed over
    pending: bool = False  # the trade cache changed since the watcher last read it
    timers: list[asyncio.TimerHandle] = field(default_factory=list)  # ccxt's delayed calls (listenKey keep-alive)
    last_error: str = ""
    sessions: int = 0  # connections that became live and backstopped


class FillStream:
    def __init__(self, adapter: CcxtExchange, settings: StreamSettings | None = None, *,
                 factory: ProFactory = _default_pro_factory, rand: Callable[[], float] = random.random,
                 on_backstop: BackstopHook | None = None, on_reconnected: Callable[[], None] | None = None) -> None:
        """`adapter`: a started `CcxtExchange` (its markets loaded). `on_backstop`: called with the open orders and
        the account after every successful backstop (the reconciler's fresh truth). `on_reconnected`: called once a
        connection after the first is live and its backstop has read what was missed (the books should be checked
        against the venue now: issue 14 asks for a reconciliation after every reconnect)."""
        self._adapter = adapter
        self.on_reconnected = on_reconnected
        self.settings = settings or StreamSettings()
        self._factory = factory
        self._rand = rand
        self._on_backstop = on_backstop
        self.counters = StreamCounters()
        self.open_orders: tuple[OpenOrder, ...] = ()
        self.account: AccountDetail | None = None
        self._links: list[_Link] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._backstop_lock = asyncio.Lock()
        self._pulse = asyncio.Event()
        self._secrets: tuple[str, ...] = ()
        self._closing = False

    def __repr__(self) -> str:
        return f"FillStream({self._adapter.venue!r}, healthy={self.healthy})"

    # --- state ---------------------------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Every link connected, subscribed and backstopped since its last (re)connect."""
        return bool(self._links) and all(link.healthy for link in self._links) and not self._closing

    @property
    def last_errors(self) -> dict[str, str]:
        """Per ccxt exchange, why its last session ended ("" if none has)."""
        return {link.exchange_id: link.last_error for link in self._links}

    async def wait_until(self, predicate: Callable[[], bool], within_s: float, poll_s: float = 0.05) -> None:
        """Until `predicate()` holds (checked on every change of the stream's state, and every `poll_s` for what
        the stream does not see change); TimeoutError after `within_s` seconds."""
        async with asyncio.timeout(within_s):
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pulse.wait(), poll_s)

    async def wait_healthy(self, within_s: float) -> None:
        await self.wait_until(lambda: self.healthy, within_s)

    def _changed(self) -> None:
        pulse, self._pulse = self._pulse, asyncio.Event()
        pulse.set()

    # --- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        if not self._adapter.started:
            raise RuntimeError(f"{self._adapter.venue}: FillStream.start() before the adapter's start()")
        for exchange_id in self._adapter.exchange_ids:
            self._links.append(self._make_link(exchange_id))
        self._tasks = [asyncio.create_task(self._supervise(link), name=f"stream-{link.exchange_id}")
                       for link in self._links]
        self._tasks.append(asyncio.create_task(self._backstop_timer(), name=f"backstop-{self._adapter.venue}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"stream-watchdog-{self._adapter.venue}"))
        self._tasks += [asyncio.create_task(self._keep_listen_key(link), name="listen-key-binanceusdm")
                        for link in self._links if link.exchange_id == "binanceusdm"]

    async def close(self) -> None:
        """Stop every task and close every pro client (the shared session stays open: its owner closes it)."""
        self._closing = True
        self._changed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for link in self._links:
            link.healthy = False
            for timer in link.timers:
                timer.cancel()
            _forget_listen_key(link.pro)  # a keep-alive already under way then stops at once
            with contextlib.suppress(Exception):
                await link.pro.close()

    async def __aenter__(self) -> FillStream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the pro clients -----------------------------------------------------------------------------------------

    def _make_link(self, exchange_id: str) -> _Link:
        s = self.settings
        settings = self._adapter.client_settings(exchange_id)
        self._secrets += tuple(str(settings[k]) for k in ("apiKey", "secret", "password") if settings.get(k))
        options = settings.setdefault("options", {})
        if exchange_id == "binanceusdm":
            options["listenKeyRefreshRate"] = int(s.listen_key_refresh_s * 1000)
        # ccxt.pro's keep-alive: a ping every keepAlive ms, dead after maxPingPongMisses of them unanswered.
        settings["streaming"] = {"keepAlive": int(s.ping_interval_s * 1000),
                                 "maxPingPongMisses": s.dead_after_s / s.ping_interval_s}
        pro = self._factory(exchange_id, settings)
        if exchange_id in ("bybit", "okx"):
            pro.has["fetchCurrencies"] = False
        pro.set_markets(self._adapter.loaded_markets(exchange_id))
        link = _Link(exchange_id, pro)
        self._hook(link)
        return link

    def _hook(self, link: _Link) -> None:
        """Wrap the client's message and connection callbacks (read when ccxt makes each websocket client) and its
        delayed calls: count messages, learn when the subscription is live, handle `listenKeyExpired`."""
        pro = link.pro
        handle_message, on_connected, delay = pro.handle_message, pro.on_connected, pro.delay

        def message(client: Any, msg: Any) -> None:
            self.counters.messages += 1
            if isinstance(msg, dict) and msg.get("e") == "listenKeyExpired":
                self._listen_key_expired(link, client)
                return
            before = _cache_tail(pro)
            handle_message(client, msg)
            if _cache_tail(pro) != before:  # a trade was added (or a duplicate moved to the end)
                link.pending = True
            if _subscribed(link.exchange_id, msg):
                link.live.set()
            self._changed()

        def connected(client: Any, msg: Any = None) -> None:
            on_connected(client, msg)
            if link.exchange_id == "binanceusdm":  # no subscribe message: the socket itself is the subscription
                link.live.set()
                self._changed()

        def delayed(timeout: float, method: Any, *args: Any) -> asyncio.TimerHandle:
            handle: asyncio.TimerHandle = delay(timeout, method, *args)
            link.timers = [t for t in link.timers if not t.cancelled() and t.when() > pro.asyncio_loop.time()]
            link.timers.append(handle)
            return handle

        pro.handle_message, pro.on_connected, pro.delay = message, connected, delayed

    def _listen_key_expired(self, link: _Link, client: Any) -> None:
        self.counters.listen_key_expiries += 1
        log.warning("stream.listen_key_expired", venue=str(self._adapter.venue), exchange=link.exchange_id)
        _forget_listen_key(link.pro)  # the next watch POSTs a new key
        client.on_error(ccxtpro.NetworkError(f"{link.exchange_id}: listenKey expired"))
        self._changed()

    # --- sessions ------------------------------------------------------------------------------------------------

    async def _supervise(self, link: _Link) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._session(link)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever ended the session, the next one starts from a clean connection
                link.last_error = self._redact(f"{type(exc).__name__}: {exc}")
                if link.healthy or attempt == 0:
                    log.warning("stream.disconnected", venue=str(self._adapter.venue), exchange=link.exchange_id,
                                error=link.last_error)
            if link.healthy:
                attempt = 0  # it worked for a while: back to the short wait
            link.healthy = False
            self._changed()
            await self._drop_connections(link)
            if self._closing:
                return
            self.counters.reconnects += 1
            await asyncio.sleep(backoff_delay(attempt, self.settings, self._rand))
            attempt += 1

    async def _session(self, link: _Link) -> None:
        """One connection's life: subscribe, backstop, healthy until the connection ends (by raising)."""
        link.live.clear()
        watcher = asyncio.create_task(self._watch(link), name=f"watch-{link.exchange_id}")
        try:
            live = asyncio.create_task(link.live.wait())
            try:
                done, _ = await asyncio.wait({watcher, live}, timeout=self.settings.connect_timeout_s,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                live.cancel()
            if watcher in done:
                watcher.result()  # raises: the connection failed before it was live
            if not link.live.is_set():
                raise TimeoutError(f"not subscribed within {self.settings.connect_timeout_s} s")
            self.counters.connects += 1
            # Fills that happened while disconnected: read them (and the orders and positions) before calling the
            # link healthy. The stream runs meanwhile, and what both see is booked once.
            attempt = 0
            while True:
                backstop = asyncio.create_task(self._backstop())
                done, _ = await asyncio.wait({watcher, backstop}, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    backstop.cancel()
                    with contextlib.suppress(BaseException):
                        await backstop
                    watcher.result()
                if backstop.exception() is None:
                    break
                await asyncio.sleep(backoff_delay(attempt, self.settings, self._rand))
                attempt += 1
            link.healthy = True
            link.last_error = ""
            self._changed()
            link.sessions += 1
            if link.sessions > 1 and self.on_reconnected is not None:
                self.on_reconnected()  # a reconnect (not the first connect): what was missed is read; check the books
            await watcher  # returns only by raising
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher

    async def _watch(self, link: _Link) -> None:
        pro = link.pro
        while True:
            if link.pending and getattr(pro, "myTrades", None) is not None:
                # Trades arrived while the last ones were being published: ccxt resolved no future for them (none
                # was waiting), so read its new updates now rather than wait for a later trade to wake us.
                cache = pro.myTrades
                trades = pro.filter_by_symbol_since_limit(cache, None, None, cache.getLimit(None, None), True)
            else:
                trades = await pro.watch_my_trades()
            link.pending = False
            # ccxt's new updates since the last read (distinct ids; a duplicate of a trade already read shows again
            # and is skipped here; the adapter de-duplicates anyway).
            for trade in trades:
                trade_id = str(trade.get("id"))
                if trade_id in link.handed:
                    continue
                try:
                    self.counters.fills_stream += await self._adapter.publish_trade(link.exchange_id, trade)
                except VenueBadPayload as exc:
                    # Not readable exactly (a field missing or not what ccxt read): left to the REST backstop,
                    # which reads the venue's own record, rather than retried on every reconnect.
                    self.counters.bad_trades += 1
                    log.warning("stream.bad_trade", venue=str(self._adapter.venue), exchange=link.exchange_id,
                                error=self._redact(str(exc)))
                link.handed.add(trade_id)
            if len(link.handed) > 4 * HANDED_KEEP:  # bounded: only ids still in ccxt's cache can show again
                link.handed &= {str(t.get("id")) for t in (getattr(pro, "myTrades", None) or trades)}
            self._changed()

    async def _drop_connections(self, link: _Link) -> None:
        """Close the client's websockets, so the next session connects and subscribes afresh."""
        clients = list((link.pro.clients or {}).values())
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        link.pro.clients = {}

    # --- backstop and watchdog -----------------------------------------------------------------------------------

    async def _backstop(self) -> None:
        """Trades since the last one seen, then the open orders and the account, from REST."""
        async with self._backstop_lock:
            try:
                self.counters.fills_backstop += await self._adapter.poll_fills()
                self.open_orders = await self._adapter.fetch_open_orders()
                self.account = await self._adapter.fetch_account_detail()
                if self._on_backstop is not None:
                    await self._on_backstop(self.open_orders, self.account)
            except Exception as exc:
                self.counters.backstop_failures += 1
                log.warning("stream.backstop_failed", venue=str(self._adapter.venue),
                            error=self._redact(f"{type(exc).__name__}: {exc}"))
                self._changed()
                raise
            self.counters.backstops += 1
            self._changed()

    async def backstop_now(self) -> None:
        """One backstop round now (what the timer does); raises the adapter's error if it fails."""
        await self._backstop()

    async def _backstop_timer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.backstop_interval_s)
            if any(link.live.is_set() for link in self._links):
                with contextlib.suppress(Exception):  # counted and logged; the next round tries again
                    await self._backstop()

    async def _watchdog(self) -> None:
        """Closes a connection that received nothing (message or pong) for `dead_after_s`: its watch then fails
        and the link reconnects. (ccxt.pro's own pong check has the same budget; this one also covers a client
        whose pong timestamps a venue's clock sets.)"""
        limit_ms = self.settings.dead_after_s * 1000
        while True:
            await asyncio.sleep(self.settings.dead_after_s / 4)
            now = time.time() * 1000
            for link in self._links:
                for client in _open_clients(link.pro):
                    heard = max(t for t in (client.last_message_at, client.connectionEstablished, 0) if t)
                    if now - heard > limit_ms:
                        self.counters.dead_connections += 1
                        log.warning("stream.dead", venue=str(self._adapter.venue), exchange=link.exchange_id,
                                    silent_s=round((now - heard) / 1000, 1))
                        client.on_error(ccxtpro.RequestTimeout(
                            f"{link.exchange_id}: nothing received for {self.settings.dead_after_s} s"))
                        self._changed()

    async def _keep_listen_key(self, link: _Link) -> None:
        pro = link.pro
        while True:
            await asyncio.sleep(self.settings.listen_key_refresh_s)
            bucket = (pro.options or {}).get("linear")
            if not isinstance(bucket, dict) or not bucket.get("listenKey"):
                continue  # none yet (or forgotten): the next session POSTs one
            try:
                await pro.fapiPrivatePutListenKey()
            except ccxtpro.NetworkError as exc:  # no answer: the key has 60 minutes, try at the next round
                self.counters.listen_key_failures += 1
                log.warning("stream.listen_key_keepalive_failed", venue=str(self._adapter.venue),
                            error=self._redact(f"{type(exc).__name__}: {exc}"))
            except Exception as exc:  # refused (-1125: the key does not exist): a new key, a new connection
                self.counters.listen_key_failures += 1
                log.warning("stream.listen_key_refused", venue=str(self._adapter.venue),
                            error=self._redact(f"{type(exc).__name__}: {exc}"))
                _forget_listen_key(pro)
                for client in _open_clients(pro):
                    client.on_error(ccxtpro.NetworkError("binanceusdm: listenKey keep-alive refused"))
            else:
                self.counters.listen_key_renewals += 1
                bucket["lastAuthenticatedTime"] = pro.milliseconds()  # so ccxt does not POST a new one meanwhile
            self._changed()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]


def _subscribed(exchange_id: str, msg: Any) -> bool:
    """Whether `msg` is the venue's acknowledgement that the private subscription is live."""
    if not isinstance(msg, dict):
        return False
    if exchange_id == "binance":  # the ws-api's answer to userDataStream.subscribe.signature
        return str(msg.get("status")) == "200" and isinstance(msg.get("result"), dict) \
            and "subscriptionId" in msg["result"]
    if exchange_id == "bybit":
        return msg.get("op") == "subscribe" and msg.get("success") is True
    if exchange_id == "okx":
        return msg.get("event") == "subscribe"
    return False


def _cache_tail(pro: Any) -> tuple[int, int] | None:
    """What changes when ccxt adds a trade to its cache: its length and its last entry (appended or moved there)."""
    cache = getattr(pro, "myTrades", None)
    return (len(cache), id(cache[-1])) if cache else None


def _open_clients(pro: Any) -> Iterable[Any]:
    for client in list((pro.clients or {}).values()):
        if client.connection is not None and not client.closed() and client.connectionEstablished:
            yield client


def _forget_listen_key(pro: Any) -> None:
    """Binance USDⓈ-M: drop the cached listenKey (the next watch POSTs a new one; a pending keep-alive stops)."""
    bucket = (pro.options or {}).get("linear") if getattr(pro, "id", "") == "binanceusdm" else None
    if isinstance(bucket, dict):
        bucket["listenKey"] = None
        bucket["lastAuthenticatedTime"] = 0
