"""OKX v5 private websocket (ws.okx.com/ws/v5/private): login op and the `orders` channel (fills ride on it).

Login is OKX's: sign = base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify")), with the passphrase,
timestamp in seconds within 30 s of the server. A fill is an `orders` push with tradeId/fillPx/fillSz/fillFee set,
as OKX sends it (fillFee negative for a charge).
Stream faults: `.faults` (`StreamFaults`: lose / duplicate / reorder the next `orders` pushes that carry a fill),
`await .drop_connections()`, `.mute_connections()` (open but silent: no message, no pong).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from .binance_model import BinanceState, Order, Trade
from .binance_routes import _s
from .binance_streams import SubscribedConnections, _Connection, serve_connection, websocket
from .call import Credentials
from .faults import StreamFaults, as_sent
from .okx import OkxRoutes

WS = "ws.okx.com"


class OkxStreams(SubscribedConnections):
    def __init__(self, state: BinanceState, routes: OkxRoutes, credentials: Credentials) -> None:
        self.state = state
        self.routes = routes
        self.credentials = credentials
        self.subscribed: dict[_Connection, list[dict[str, Any]]] = {}
        self.sent: list[dict[str, Any]] = []
        self.faults = StreamFaults()  # lose / duplicate / reorder the next fill messages
        state.listeners.append(self._on_order_event)

    def ws_routes(self) -> dict[tuple[str, str], Any]:
        return {(WS, "/ws/v5/private"): self.private}

    async def private(self, request: web.Request) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        authed = False
        channels: list[dict[str, Any]] = []
        self.subscribed[conn] = channels

        def on_text(text: str) -> None:
            nonlocal authed
            if text == "ping":
                conn.queue.put_nowait("pong")
                return
            msg = json.loads(text)
            op = msg.get("op")
            if op == "login":
                authed = self._login_ok(msg.get("args", [{}])[0])
                reply = {"event": "login", "msg": "", "code": "0", "connId": "fake"} if authed else {
                    "event": "error", "code": "60009", "msg": "Login failed.", "connId": "fake"}
            elif op == "subscribe" and authed:
                channels.extend(msg.get("args", []))
                reply = {"event": "subscribe", "arg": (msg.get("args") or [{}])[0], "connId": "fake"}
            else:
                reply = {"event": "error", "code": "60011", "msg": "Please log in", "connId": "fake"}
            conn.queue.put_nowait(json.dumps(reply))

        try:
            await serve_connection(conn, on_text)
        finally:
            del self.subscribed[conn]
        return ws

    def _login_ok(self, args: dict[str, Any]) -> bool:
        c = self.credentials
        ts = str(args.get("timestamp", ""))
        expected = base64.b64encode(hmac.new(c.secret.encode(), f"{ts}GET/users/self/verify".encode(),
                                             hashlib.sha256).digest()).decode()
        return (args.get("apiKey") == c.api_key and args.get("passphrase") == c.passphrase
                and hmac.compare_digest(str(args.get("sign", "")), expected) and ts.isdigit()
                and abs(int(ts) * 1000 - self.state.now_ms()) <= 30_000)

    def _on_order_event(self, execution: str, order: Order, trade: Trade | None) -> None:
        row = self.routes._order(order)
        if trade is not None:
            swap = order.market == "futures"
            row.update({"tradeId": str(trade.id), "fillPx": _s(trade.price),
                        "fillSz": _s(self.routes._to_sz(order.symbol, trade.qty).normalize() if swap else trade.qty),
                        "fillTime": str(trade.time_ms), "fillFee": _s(-trade.commission, 8),
                        "fillFeeCcy": trade.commission_asset, "execType": "M" if trade.maker else "T"})
        inst_type = row["instType"]
        for conn, channels in self.subscribed.items():
            for arg in channels:
                if arg.get("channel") == "orders" and arg.get("instType") in ("ANY", inst_type) and arg.get(
                        "instId") in (None, order.symbol):
                    text = json.dumps({"arg": {**arg, "uid": "1"}, "data": [row]})
                    for target, out in self.faults.apply((conn, text), fill=trade is not None):
                        self.sent.append(as_sent(out))
                        target.queue.put_nowait(out)
                    break
