"""Bybit v5 private websocket (stream.bybit.com/v5/private): auth op, `execution` and `order` topics.

Auth is Bybit's: args [apiKey, expires, HMAC-SHA256(secret, "GET/realtime" + expires)], refused once `expires`
is in the past. Every order event of the Bybit state is pushed to the connections subscribed to its topic.
Stream faults: `.faults` (`StreamFaults`: lose / duplicate / reorder the next `execution` pushes),
`await .drop_connections()`, `.mute_connections()` (open but silent: no message, no pong).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from .binance_model import BinanceState, Order, Trade
from .binance_streams import SubscribedConnections, _Connection, serve_connection, websocket
from .bybit import _execution, _order
from .call import Credentials
from .faults import StreamFaults, as_sent

STREAM = "stream.bybit.com"


class BybitStreams(SubscribedConnections):
    def __init__(self, state: BinanceState, credentials: Credentials) -> None:
        self.state = state
        self.credentials = credentials
        self.subscribed: dict[_Connection, set[str]] = {}
        self.sent: list[dict[str, Any]] = []
        self.faults = StreamFaults()  # lose / duplicate / reorder the next fill messages
        state.listeners.append(self._on_order_event)

    def ws_routes(self) -> dict[tuple[str, str], Any]:
        return {(STREAM, "/v5/private"): self.private}

    async def private(self, request: web.Request) -> web.StreamResponse:
        ws = websocket()
        await ws.prepare(request)
        conn = _Connection(ws)
        authed = False
        topics: set[str] = set()
        self.subscribed[conn] = topics

        def on_text(text: str) -> None:
            nonlocal authed
            msg = json.loads(text)
            op = msg.get("op")
            reply: dict[str, Any] = {"op": op, "conn_id": "fake", "req_id": msg.get("req_id", "")}
            if op == "ping":
                reply.update({"success": True, "ret_msg": "pong"})
            elif op == "auth":
                authed = self._auth_ok(msg.get("args", []))
                reply.update({"success": authed, "ret_msg": "" if authed else "Params Error"})
            elif op == "subscribe" and authed:
                topics.update(msg.get("args", []))
                reply.update({"success": True, "ret_msg": ""})
            else:
                reply.update({"success": False, "ret_msg": "Request not authorized"})
            conn.queue.put_nowait(json.dumps(reply))

        try:
            await serve_connection(conn, on_text)
        finally:
            del self.subscribed[conn]
        return ws

    def _auth_ok(self, args: list[Any]) -> bool:
        if len(args) != 3 or args[0] != self.credentials.api_key:
            return False
        expires = str(args[1])
        expected = hmac.new(self.credentials.secret.encode(), f"GET/realtime{expires}".encode(),
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(str(args[2]), expected) and expires.isdigit() and int(expires) > self.state.now_ms()

    def _on_order_event(self, execution: str, order: Order, trade: Trade | None) -> None:
        category = "linear" if order.market == "futures" else "spot"
        markets = self.state.futures_markets if order.market == "futures" else self.state.spot_markets
        now = self.state.now_ms()
        self._push("order", {"id": f"order-{now}", "topic": "order", "creationTime": now,
                             "data": [{**_order(order, markets[order.symbol]), "category": category}]})
        if trade is not None:
            self._push("execution", {"id": f"exec-{trade.id}", "topic": "execution", "creationTime": now,
                                     "data": [{**_execution(trade, order), "category": category}]}, fill=True)

    def _push(self, topic: str, payload: dict[str, Any], *, fill: bool = False) -> None:
        text = json.dumps(payload)
        for conn, topics in self.subscribed.items():
            if topic in topics:
                for target, out in self.faults.apply((conn, text), fill=fill):
                    self.sent.append(as_sent(out))
                    target.queue.put_nowait(out)
