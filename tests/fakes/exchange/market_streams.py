"""The venues' public market streams ccxt.pro reads, beside the Binance USDⓈ-M ones (`binance_streams.py`).

- Binance spot, `wss://stream.binance.com:9443/ws/<n>`: SUBSCRIBE `<sym>@miniTicker` / `<sym>@ticker` (ccxt.pro
  `watch_ticker`); a first tick on subscribe and one per `set_spot_price` (last price `c`).
- Bybit v5, `wss://stream.bybit.com/v5/public/linear` and `/v5/public/spot`: op `subscribe` to `tickers.<symbol>`
  (ccxt.pro `watch_ticker`); linear sends a `snapshot` on subscribe and then `delta`s carrying only what changed
  (mark, index, last; or funding rate and next funding time), as Bybit does — ccxt.pro merges them into the
  ticker's `info`. Spot is a snapshot each time. `{"op":"ping"}` → pong.
- OKX v5, `wss://ws.okx.com:443/ws/v5/public`: op `subscribe` to `tickers` (spot `last`), `mark-price` (`markPx`)
  and `funding-rate` (`fundingRate`, `fundingTime`); first data on subscribe, then one per change. Text `ping` →
  `pong`.

Each `set_mark` (perp) and `set_spot_price` (spot) of a venue's state pushes to its subscribers; a funding rate
changed in the state (`state.funding_rate[sym] = …`) is pushed by `push_funding(venue, symbol)`.
Heartbeat: the venues push market data continuously (Binance's mark price every second, OKX's unchanged mark every
10 s, ...) while the fake's prices move only when a test moves them; `heartbeat_s` (None by default: tests push
what they need) re-sends every subscribed quote at that period once `start()` ran (`python -m tests.fakes.exchange`
sets 1 s), so a client judging a silent stream stale sees a live one.
Faults: `await drop(venue)` closes the venue's public sockets (Binance: fstream market and spot), `mute(venue)` leaves
them open and silent (no message, no pong). `subscriptions(venue)` lists what the open connections subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from .binance_model import BinanceState
from .binance_routes import _s
from .binance_streams import BinanceStreams, SubscribedConnections, _Connection, serve_connection, websocket

BINANCE_SPOT = "stream.binance.com"
BYBIT = "stream.bybit.com"
OKX = "ws.okx.com"


class _Public(SubscribedConnections):
    """One venue's public connections, each with the topics it subscribed to."""

    def __init__(self) -> None:
        self.subscribed: dict[_Connection, Any] = {}


class MarketStreams:
    def __init__(self, binance: BinanceState, binance_streams: BinanceStreams, bybit: BinanceState,
                 okx: BinanceState) -> None:
        self.states = {"binance": binance, "bybit": bybit, "okx": okx}
        self._binance_streams = binance_streams
        self.binance_spot = _Public()  # connection → set of stream names ("ethusdt@miniticker")
        self.bybit = _Public()  # connection → (category, set of topics)
        self.okx = _Public()  # connection → list of {"channel", "instId"}
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (venue, message) of every public push, in order
        self.heartbeat_s: float | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        binance.spot_listeners.append(self._binance_spot_tick)
        bybit.mark_listeners.append(lambda symbol: self._bybit_push("linear", symbol, "mark"))
        bybit.spot_listeners.append(lambda symbol: self._bybit_push("spot", symbol, "spot"))
        okx.mark_listeners.append(lambda inst: self._okx_push(inst, ("mark-price", "tickers")))
        okx.spot_listeners.append(lambda inst: self._okx_push(inst, ("tickers",)))

    def ws_routes(self) -> dict[tuple[str, str], Any]:
        return {(BINANCE_SPOT, "/ws"): self._binance_spot, (BYBIT, "/v5/public/linear"): self._bybit_linear,
                (BYBIT, "/v5/public/spot"): self._bybit_spot, (OKX, "/ws/v5/public"): self._okx}

    # ---- test controls
    def push_funding(self, venue: str, symbol: str) -> None:
        """Send the state's current funding rate (and next funding time) of `symbol` to its subscribers."""
        if venue == "binance":
            self._binance_streams.push_mark(symbol)  # markPriceUpdate carries the rate
        elif venue == "bybit":
            self._bybit_push("linear", symbol, "funding")
        else:
            self._okx_push(symbol, ("funding-rate",))

    def _sides(self, venue: str) -> list[dict[_Connection, Any]]:
        if venue == "binance":
            return [self._binance_streams.market, self.binance_spot.subscribed]
        return [(self.bybit if venue == "bybit" else self.okx).subscribed]

    async def drop(self, venue: str) -> int:
        """Close every public socket of `venue` (a fault): ccxt.pro's pending watches fail, a client reconnects."""
        conns = [conn for side in self._sides(venue) for conn in list(side)]
        for conn in conns:
            await conn.ws.close(code=1000, message=b"fake: dropped")
        return len(conns)

    def mute(self, venue: str) -> int:
        """Every public socket of `venue` goes silent, left open: no message, no pong (a fault)."""
        conns = [conn for side in self._sides(venue) for conn in side]
        for conn in conns:
            conn.muted = True
        return len(conns)

    def subscriptions(self, venue: str) -> list[Any]:
        return [topics for side in self._sides(venue) for topics in side.values()]

    def start(self) -> None:
        """Start the heartbeat if `heartbeat_s` is set (FakeExchange.start calls this)."""
        if self.heartbeat_s and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(self.heartbeat_s), name="fake-market-heartbeat")

    async def _beat(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.push_all()

    def push_all(self) -> None:
        """Re-send the current quote of every subscribed symbol on every venue (the heartbeat's tick)."""
        binance, bybit, okx = self.states["binance"], self.states["bybit"], self.states["okx"]
        for symbol in binance.marks:
            self._binance_streams.push_mark(symbol)
        for symbol in binance.spot_prices:
            self._binance_spot_tick(symbol)
        for symbol in bybit.marks:
            self._bybit_push("linear", symbol, "mark")
        for symbol in bybit.spot_prices:
            self._bybit_push("spot", symbol, "spot")
        for inst in okx.marks:
            self._okx_push(inst, ("mark-price", "tickers", "funding-rate"))
        for inst in okx.spot_prices:
            self._okx_push(inst, ("tickers",))

    async def close_all(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for side in (self.binance_spot, self.bybit, self.okx):
            await side.close_all()

    def _send(self, venue: str, conn: _Connection, payload: dict[str, Any]) -> None:
        self.sent.append((venue, payload))
        conn.queue.put_nowait(json.dumps(payload))

    # ---- Binance spot
    async def _binance_spot(self, request: web.Request) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        streams: set[str] = set()
        self.binance_spot.subscribed[conn] = streams

        def on_text(text: str) -> None:
            msg = json.loads(text)
            params = [str(p).lower() for p in msg.get("params", [])]
            if msg.get("method") == "SUBSCRIBE":
                streams.update(params)
            elif msg.get("method") == "UNSUBSCRIBE":
                streams.difference_update(params)
            conn.queue.put_nowait(json.dumps({"result": None, "id": msg.get("id")}))
            if msg.get("method") == "SUBSCRIBE":
                for symbol in self.states["binance"].spot_prices:
                    if any(p.startswith(symbol.lower() + "@") for p in params):
                        self._binance_spot_tick(symbol, only=conn)

        try:
            await serve_connection(conn, on_text)
        finally:
            del self.binance_spot.subscribed[conn]
        return ws

    def _binance_spot_tick(self, symbol: str, only: _Connection | None = None) -> None:
        st = self.states["binance"]
        now, price, low = st.now_ms(), _s(st.spot_prices[symbol]), symbol.lower()
        for conn, streams in self.binance_spot.subscribed.items():
            if only is not None and conn is not only:
                continue
            if f"{low}@miniticker" in streams:
                self._send("binance", conn, {"e": "24hrMiniTicker", "E": now, "s": symbol, "c": price, "o": price,
                                             "h": price, "l": price, "v": "1000", "q": "0"})
            if f"{low}@ticker" in streams:
                self._send("binance", conn, {
                    "e": "24hrTicker", "E": now, "s": symbol, "p": "0", "P": "0", "w": price, "x": price,
                    "c": price, "Q": "1", "b": price, "B": "1", "a": price, "A": "1", "o": price, "h": price,
                    "l": price, "v": "1000", "q": "0", "O": now - 86_400_000, "C": now, "F": 1, "L": 2, "n": 2})

    # ---- Bybit
    async def _bybit_linear(self, request: web.Request) -> web.StreamResponse:
        return await self._bybit_serve(request, "linear")

    async def _bybit_spot(self, request: web.Request) -> web.StreamResponse:
        return await self._bybit_serve(request, "spot")

    async def _bybit_serve(self, request: web.Request, category: str) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        topics: set[str] = set()
        self.bybit.subscribed[conn] = (category, topics)

        def on_text(text: str) -> None:
            msg = json.loads(text)
            op = msg.get("op")
            reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": "fake-public",
                                     "req_id": str(msg.get("req_id", "")), "op": op}
            if op == "ping":
                reply["ret_msg"] = "pong"
            elif op == "subscribe":
                topics.update(msg.get("args", []))
            elif op == "unsubscribe":
                topics.difference_update(msg.get("args", []))
            else:
                reply.update({"success": False, "ret_msg": f"fake: op {op!r} not served"})
            conn.queue.put_nowait(json.dumps(reply))
            if op == "subscribe":
                for topic in msg.get("args", []):
                    symbol = str(topic).removeprefix("tickers.")
                    if str(topic).startswith("tickers.") and symbol in self._bybit_markets(category):
                        self._send("bybit", conn, self._bybit_ticker(category, symbol, "snapshot"))

        try:
            await serve_connection(conn, on_text)
        finally:
            del self.bybit.subscribed[conn]
        return ws

    def _bybit_markets(self, category: str) -> dict[str, Any]:
        st = self.states["bybit"]
        return st.futures_markets if category == "linear" else st.spot_markets

    def _bybit_ticker(self, category: str, symbol: str, what: str) -> dict[str, Any]:
        """A `tickers` push: the full snapshot, or (linear) a delta with only what `what` changed."""
        st = self.states["bybit"]
        now = st.now_ms()
        if category == "spot":
            p = _s(st.spot_prices[symbol])
            data = {"symbol": symbol, "lastPrice": p, "highPrice24h": p, "lowPrice24h": p, "prevPrice24h": p,
                    "volume24h": "0", "turnover24h": "0", "price24hPcnt": "0", "usdIndexPrice": p}
            return {"topic": f"tickers.{symbol}", "ts": now, "type": "snapshot", "cs": now, "data": data}
        mark = _s(st.marks[symbol])
        funding = {"fundingRate": _s(st.funding_rate[symbol]), "nextFundingTime": str(st.next_funding_time_ms)}
        prices = {"markPrice": mark, "indexPrice": mark, "lastPrice": mark, "bid1Price": mark, "ask1Price": mark}
        if what == "snapshot":
            data = {"symbol": symbol, "tickDirection": "ZeroPlusTick", "price24hPcnt": "0", "prevPrice24h": mark,
                    "highPrice24h": mark, "lowPrice24h": mark, "prevPrice1h": mark, "openInterest": "0",
                    "openInterestValue": "0", "turnover24h": "0", "volume24h": "0", "bid1Size": "1",
                    "ask1Size": "1", **prices, **funding}
        else:
            data = {"symbol": symbol, **(prices if what == "mark" else funding)}
        return {"topic": f"tickers.{symbol}", "type": what if what == "snapshot" else "delta", "data": data,
                "cs": now, "ts": now}

    def _bybit_push(self, category: str, symbol: str, what: str) -> None:
        topic = f"tickers.{symbol}"
        for conn, (cat, topics) in self.bybit.subscribed.items():
            if cat == category and topic in topics:
                self._send("bybit", conn, self._bybit_ticker(category, symbol, what))

    # ---- OKX
    async def _okx(self, request: web.Request) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        channels: list[dict[str, Any]] = []
        self.okx.subscribed[conn] = channels

        def on_text(text: str) -> None:
            if text == "ping":
                conn.queue.put_nowait("pong")
                return
            msg = json.loads(text)
            op, args = msg.get("op"), msg.get("args") or []
            if op == "subscribe":
                for arg in args:
                    inst = str(arg.get("instId", ""))
                    if arg.get("channel") not in ("tickers", "mark-price", "funding-rate") or not self._okx_known(
                            inst, arg.get("channel")):
                        conn.queue.put_nowait(json.dumps({
                            "event": "error", "code": "60018", "connId": "fake-public",
                            "msg": f"Wrong URL or channel:{arg.get('channel')},instId:{inst} doesn't exist."}))
                        continue
                    channels.append({"channel": arg["channel"], "instId": inst})
                    conn.queue.put_nowait(json.dumps({"event": "subscribe", "arg": arg, "connId": "fake-public"}))
                    self._okx_push(inst, (arg["channel"],), only=conn)
            elif op == "unsubscribe":
                for arg in args:
                    channels[:] = [c for c in channels if c != {"channel": arg.get("channel"),
                                                                "instId": arg.get("instId")}]
                    conn.queue.put_nowait(json.dumps({"event": "unsubscribe", "arg": arg, "connId": "fake-public"}))
            else:
                conn.queue.put_nowait(json.dumps({"event": "error", "code": "60012", "connId": "fake-public",
                                                  "msg": f"Illegal request: {text}"}))

        try:
            await serve_connection(conn, on_text)
        finally:
            del self.okx.subscribed[conn]
        return ws

    def _okx_known(self, inst: str, channel: str) -> bool:
        st = self.states["okx"]
        if channel == "tickers":
            return inst in st.marks or inst in st.spot_prices
        return inst in st.futures_markets

    def _okx_data(self, channel: str, inst: str) -> dict[str, Any]:
        st = self.states["okx"]
        now = str(st.now_ms())
        if channel == "mark-price":
            return {"instType": "SWAP", "instId": inst, "markPx": _s(st.marks[inst]), "ts": now}
        if channel == "funding-rate":
            nxt, rate = st.next_funding_time_ms, _s(st.funding_rate[inst])
            return {"instType": "SWAP", "instId": inst, "fundingRate": rate, "fundingTime": str(nxt),
                    "nextFundingTime": str(nxt + 8 * 3600 * 1000), "nextFundingRate": "", "method": "current_period",
                    "maxFundingRate": "0.0075", "minFundingRate": "-0.0075", "premium": "0", "settState": "settled",
                    "settFundingRate": rate, "impactValue": "", "interestRate": "0", "ts": now}
        swap = inst in st.futures_markets
        p = _s(st.marks[inst] if swap else st.spot_prices[inst])
        return {"instType": "SWAP" if swap else "SPOT", "instId": inst, "last": p, "lastSz": "1", "askPx": p,
                "askSz": "1", "bidPx": p, "bidSz": "1", "open24h": p, "high24h": p, "low24h": p, "volCcy24h": "0",
                "vol24h": "0", "sodUtc0": p, "sodUtc8": p, "ts": now}

    def _okx_push(self, inst: str, channels: tuple[str, ...], only: _Connection | None = None) -> None:
        for conn, subscribed in self.okx.subscribed.items():
            if only is not None and conn is not only:
                continue
            for arg in subscribed:
                if arg["instId"] == inst and arg["channel"] in channels:
                    self._send("okx", conn, {"arg": dict(arg), "data": [self._okx_data(arg["channel"], inst)]})
