"""Binance USDⓈ-M websockets on fstream.binance.com: the user-data stream and the market streams ccxt.pro uses.

User data: ccxt.pro POSTs /fapi/v1/listenKey, then opens /private/ws?listenKey=… (no SUBSCRIBE). The fake pushes
ORDER_TRADE_UPDATE for every order event of the state and ACCOUNT_UPDATE after each fill. Stream faults (drops,
lost, duplicated and out-of-order messages) are set on `StreamFaults` (faults.py); `expire_listen_key()` sends
Binance's `listenKeyExpired` and forgets the key; `mute_user_connections()` leaves sockets open but silent (no
message, no pong): a dead connection only a keep-alive can detect.

Every socket of the fake answers the client's pings itself (autoping off) so that a muted one can stop answering.

Market: /market/ws takes {"method":"SUBSCRIBE","params":["ethusdt@markPrice", "ethusdt@miniTicker"],"id":n}; each
`set_mark` pushes markPriceUpdate and 24hrMiniTicker to the subscribers of that symbol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from .binance_model import BinanceState, Order, Trade
from .binance_routes import BinanceRoutes, _s
from .faults import StreamFaults, as_sent

FSTREAM = "fstream.binance.com"
WS_API = "ws-api.binance.com"


UserStreamFaults = StreamFaults  # the name this module first gave them


class _Connection:
    def __init__(self, ws: web.WebSocketResponse, key: str | None = None) -> None:
        self.ws = ws
        self.key = key  # Binance user data: the listenKey it was opened with
        self.muted = False  # a fault: nothing is sent on it and pings go unanswered (a dead link, socket open)
        self.expired = False  # Binance user data: its listenKey expired, no more events
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.dropped: list[str] = []  # what was not sent because the connection was muted

    async def pump(self) -> None:
        while (text := await self.queue.get()) is not None:
            if self.ws.closed:
                return
            if self.muted:
                self.dropped.append(text)
                continue
            await self.ws.send_str(text)


def websocket() -> web.WebSocketResponse:
    """A server socket that leaves pings to `serve_connection` (so a muted connection can ignore them)."""
    return web.WebSocketResponse(autoping=False)


async def serve_connection(conn: _Connection, on_text: Any) -> None:
    """Reads the client's text frames (to `on_text`) while a pump writes what the fake queues for it."""
    pump = asyncio.create_task(conn.pump())
    try:
        async for msg in conn.ws:
            if conn.muted:
                continue  # a dead link: the client's pings and requests go unanswered
            if msg.type == WSMsgType.PING:
                await conn.ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT and on_text is not None:
                on_text(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        conn.queue.put_nowait(None)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


class SubscribedConnections:
    """Open private-stream connections of a venue, each with what it subscribed to (Bybit and OKX streams)."""

    subscribed: dict[_Connection, Any]

    async def close_all(self) -> None:
        for conn in list(self.subscribed):
            await conn.ws.close(code=1001, message=b"fake: stopping")

    async def drop_connections(self) -> int:
        """Drop every connection (a fault): the client must reconnect and re-subscribe."""
        conns = list(self.subscribed)
        for conn in conns:
            await conn.ws.close(code=1000, message=b"fake: dropped")
        return len(conns)

    def mute_connections(self) -> int:
        """Every open connection goes silent, socket left open (a fault): only a keep-alive can tell."""
        for conn in self.subscribed:
            conn.muted = True
        return len(self.subscribed)


class BinanceStreams:
    def __init__(self, state: BinanceState, routes: BinanceRoutes) -> None:
        self.state = state
        self.routes = routes
        self.faults = StreamFaults()
        self.spot_faults = StreamFaults()  # the same faults on the spot executionReports (x=TRADE)
        self.spot_sent: list[dict[str, Any]] = []  # every spot user-data event actually sent, in order
        self.expired_keys: list[str] = []  # listenKeys expired by `expire_listen_key`
        self.user: list[_Connection] = []
        self.spot_user: list[_Connection] = []  # ws-api connections subscribed to spot user data
        self.ws_api_rejections: list[dict[str, Any]] = []  # the errors the ws-api answered with
        self.market: dict[_Connection, set[str]] = {}
        self.sent: list[dict[str, Any]] = []  # every user-data message actually sent, in order
        state.listeners.append(self._on_order_event)
        state.mark_listeners.append(self.push_mark)

    def ws_routes(self) -> dict[tuple[str, str], Any]:
        return {(FSTREAM, "/private/ws"): self.user_stream, (FSTREAM, "/market/ws"): self.market_stream,
                (FSTREAM, "/public/ws"): self.market_stream, (WS_API, "/ws-api/v3"): self.spot_ws_api}

    # ---- test controls
    async def drop_user_connections(self, code: int = 1000) -> int:
        """Closes every user-data socket (ccxt: NetworkError on the pending watch, reconnect on the next)."""
        dropped = 0
        for conn in list(self.user):
            await conn.ws.close(code=code, message=b"fake: dropped")
            dropped += 1
        return dropped

    async def drop_spot_user_connections(self, code: int = 1000) -> int:
        """Closes every ws-api socket subscribed to spot user data (a fault)."""
        conns = list(self.spot_user)
        for conn in conns:
            await conn.ws.close(code=code, message=b"fake: dropped")
        return len(conns)

    def mute_user_connections(self) -> int:
        """Every user-data socket (USDⓈ-M and spot) goes silent, left open: no message, no pong (a fault)."""
        conns = [*self.user, *self.spot_user]
        for conn in conns:
            conn.muted = True
        return len(conns)

    def expire_listen_key(self) -> list[str]:
        """Binance's expiry: every active listenKey is forgotten (a keep-alive PUT now fails with -1125), its
        sockets get `{"e":"listenKeyExpired"}` and then no more events, as on Binance; the client must POST a
        new key and reconnect. Returns the expired keys."""
        keys = sorted(self.routes.listen_keys)
        self.routes.listen_keys.clear()
        self.expired_keys.extend(keys)
        now = self.state.now_ms()
        for conn in self.user:
            if conn.key in keys and not conn.expired:
                event = {"e": "listenKeyExpired", "E": now, "listenKey": conn.key}
                self.sent.append(event)
                conn.queue.put_nowait(json.dumps(event))
                conn.expired = True
        return keys

    async def close_all(self) -> None:
        for conn in [*self.user, *self.market, *self.spot_user]:
            await conn.ws.close(code=1001, message=b"fake: stopping")

    def push_mark(self, symbol: str) -> None:
        """Sends the current mark of `symbol` to its market subscribers (set_mark calls this too)."""
        now = self.state.now_ms()
        mark = self.state.marks[symbol]
        low = symbol.lower()
        for conn, subs in self.market.items():
            if f"{low}@markprice" in subs or f"{low}@markprice@1s" in subs:
                conn.queue.put_nowait(json.dumps({
                    "e": "markPriceUpdate", "E": now, "s": symbol, "p": _s(mark), "i": _s(mark), "P": _s(mark),
                    "r": _s(self.state.funding_rate[symbol]), "T": self.state.next_funding_time_ms}))
            if f"{low}@miniticker" in subs:
                conn.queue.put_nowait(json.dumps({
                    "e": "24hrMiniTicker", "E": now, "s": symbol, "c": _s(mark), "o": _s(mark), "h": _s(mark),
                    "l": _s(mark), "v": "1000", "q": _s(mark * 1000)}))

    # ---- handlers
    async def user_stream(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey", "")
        if key not in self.routes.listen_keys:
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws, key)
        self.user.append(conn)
        try:
            await self._serve(conn, on_text=None)
        finally:
            self.user.remove(conn)
        return ws

    async def market_stream(self, request: web.Request) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        self.market[conn] = set()

        def on_text(text: str) -> None:
            msg = json.loads(text)
            params = [p.lower() for p in msg.get("params", [])]
            if msg.get("method") == "SUBSCRIBE":
                self.market[conn].update(params)
            elif msg.get("method") == "UNSUBSCRIBE":
                self.market[conn].difference_update(params)
            conn.queue.put_nowait(json.dumps({"result": None, "id": msg.get("id")}))
            for symbol in self.state.marks:  # the first tick right after subscribing, as Binance does
                if any(p.startswith(symbol.lower() + "@") for p in params):
                    self.push_mark(symbol)

        try:
            await self._serve(conn, on_text=on_text)
        finally:
            del self.market[conn]
        return ws

    async def spot_ws_api(self, request: web.Request) -> web.StreamResponse:
        """Binance's WebSocket API: ccxt.pro spot user data subscribes with a signed userDataStream request."""
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)

        def on_text(text: str) -> None:
            msg = json.loads(text)
            if msg.get("method") != "userDataStream.subscribe.signature":
                conn.queue.put_nowait(json.dumps({"id": msg.get("id"), "status": 400,
                                                  "error": {"code": -1100, "msg": "fake: method not served"}}))
                return
            error = self._ws_api_auth_error(msg.get("params", {}))
            if error is not None:
                self.ws_api_rejections.append(error)
                conn.queue.put_nowait(json.dumps({"id": msg.get("id"), "status": 400, "error": error}))
                return
            if conn not in self.spot_user:
                self.spot_user.append(conn)
            conn.queue.put_nowait(json.dumps({"id": msg.get("id"), "status": 200, "result": {"subscriptionId": 0}}))

        try:
            await self._serve(conn, on_text=on_text)
        finally:
            if conn in self.spot_user:
                self.spot_user.remove(conn)
        return ws

    def _ws_api_auth_error(self, params: dict[str, Any]) -> dict[str, Any] | None:
        creds = self.routes.credentials
        if params.get("apiKey") != creds.api_key:
            return {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        signature = str(params.get("signature", ""))
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        expected = hmac.new(creds.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return {"code": -1022, "msg": "Signature for this request is not valid."}
        if abs(self.state.now_ms() - int(params.get("timestamp", 0))) > int(params.get("recvWindow", 5000)):
            return {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
        return None

    async def _serve(self, conn: _Connection, on_text: Any) -> None:
        await serve_connection(conn, on_text)

    # ---- events
    def _on_order_event(self, execution: str, order: Order, trade: Trade | None) -> None:
        if order.market == "spot":
            event = json.dumps({"subscriptionId": 0, "event": self._execution_report(execution, order, trade)})
            for text in self.spot_faults.apply(event, fill=execution == "TRADE"):
                self.spot_sent.append(as_sent(text))
                for conn in self.spot_user:
                    conn.queue.put_nowait(text)
            return
        self._send_user(self._order_trade_update(execution, order, trade), fault_eligible=execution == "TRADE")
        if trade is not None:
            self._send_user(self._account_update(order.symbol), fault_eligible=False)

    def _send_user(self, payload: dict[str, Any], *, fault_eligible: bool) -> None:
        for t in self.faults.apply(json.dumps(payload), fill=fault_eligible):
            self.sent.append(as_sent(t))
            for conn in self.user:
                if not conn.expired:
                    conn.queue.put_nowait(t)

    def _order_trade_update(self, execution: str, o: Order, t: Trade | None) -> dict[str, Any]:
        now = self.state.now_ms()
        m = self.state.futures_markets[o.symbol]
        zero = Decimal(0)
        return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
            "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": o.time_in_force or "GTC",
            "q": _s(o.qty, m.qty_precision), "p": _s(o.price), "ap": _s(o.avg_price, 5), "sp": "0",
            "x": execution, "X": o.status, "i": o.order_id,
            "l": _s(t.qty if t else zero), "z": _s(o.executed), "L": _s(t.price if t else zero),
            "n": _s(t.commission if t else zero, 8), "N": t.commission_asset if t else "USDT",
            "T": t.time_ms if t else now,
            "t": t.id if t else 0, "b": "0", "a": "0", "m": bool(t.maker) if t else False, "R": o.reduce_only,
            "wt": "CONTRACT_PRICE", "ot": o.type, "ps": "BOTH", "cp": False,
            "rp": _s(t.realized_pnl if t else zero, 8), "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER",
            "pm": "NONE", "gtd": 0}}

    def _execution_report(self, execution: str, o: Order, t: Trade | None) -> dict[str, Any]:
        now = self.state.now_ms()
        zero = Decimal(0)
        return {"e": "executionReport", "E": now, "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type,
                "f": o.time_in_force or "GTC", "q": _s(o.qty, 8), "p": _s(o.price, 8), "P": "0.00000000",
                "F": "0.00000000", "g": -1, "C": o.client_id if execution == "CANCELED" else "", "x": execution,
                "X": o.status, "r": "NONE", "i": o.order_id, "l": _s(t.qty if t else zero, 8),
                "z": _s(o.executed, 8), "L": _s(t.price if t else zero, 8), "n": _s(t.commission if t else zero, 8),
                "N": t.commission_asset if t else None, "T": t.time_ms if t else now, "t": t.id if t else -1,
                "I": self.state.next_id(), "w": o.is_open, "m": bool(t.maker) if t else False, "M": t is not None,
                "O": o.time_ms, "Z": _s(o.cum_quote, 8), "Y": _s(t.qty * t.price if t else zero, 8),
                "Q": "0.00000000", "W": o.time_ms, "V": "EXPIRE_MAKER"}

    def _account_update(self, symbol: str) -> dict[str, Any]:
        st = self.state
        now = st.now_ms()
        pos = st.positions.get(symbol)
        wallet = st.balance("USDT")
        positions = [] if pos is None else [{
            "s": symbol, "pa": _s(pos.amount), "ep": _s(pos.entry_price), "bep": _s(pos.entry_price), "cr": "0",
            "up": _s(st.unrealized_pnl(symbol), 8), "mt": st.margin_type[symbol].lower().replace("crossed", "cross"),
            "iw": "0", "ps": "BOTH"}]
        return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
            "m": "ORDER", "B": [{"a": "USDT", "wb": _s(wallet, 8), "cw": _s(wallet, 8), "bc": "0"}],
            "P": positions}}
