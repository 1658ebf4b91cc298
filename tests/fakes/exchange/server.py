"""The exchange fake: one aiohttp TLS server on 127.0.0.1 answering for every venue host, by (host, method, path)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from .binance_model import BinanceState, link_venues
from .binance_routes import BinanceRoutes
from .binance_streams import BinanceStreams
from .bybit import BybitRoutes, bybit_state
from .bybit_streams import BybitStreams
from .call import Call, Credentials, LoggedRequest
from .faults import Faults, Kind
from .market_streams import MarketStreams
from .okx import OkxRoutes, okx_state
from .okx_streams import OkxStreams
from .resolver import VenueResolver
from .tls import TlsMaterial, make_tls_material

Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def venue_session(port: int, cert_path: Path) -> aiohttp.ClientSession:
    """A session whose resolver sends venue hosts to the fake on `port` and trusts only the fake's certificate."""
    tls = TlsMaterial(cert_path, cert_path)
    connector = aiohttp.TCPConnector(resolver=VenueResolver(port), ssl=tls.client_context())
    return aiohttp.ClientSession(connector=connector)


class FakeExchange:
    def __init__(self, *, port: int = 0, cert_dir: Path | None = None,
                 credentials: dict[str, Credentials] | None = None, funding_every_s: float | None = None) -> None:
        """`funding_every_s`: settle funding on every open perp position of every venue at this period (a demo
        compresses Binance's 8 h); None (tests): only when a test calls `state.settle_funding`."""
        self._requested_port = port
        self._funding_every_s = funding_every_s
        self._funding_task: asyncio.Task[None] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="exchange-fake-")
            cert_dir = Path(self._tmp.name)
        self.tls = make_tls_material(cert_dir)
        self._credentials = credentials or {
            v: Credentials(f"fake-{v}-{secrets.token_hex(8)}", secrets.token_hex(32), secrets.token_hex(8))
            for v in ("binance", "bybit", "okx")}
        self.binance = BinanceState()
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []
        self.routes: dict[tuple[str, str, str], Handler] = {}
        binance_routes = BinanceRoutes(self.binance, self._credentials["binance"])
        self.routes.update(binance_routes.table())
        self.binance_streams = BinanceStreams(self.binance, binance_routes)
        self.bybit = bybit_state()
        self.routes.update(BybitRoutes(self.bybit, self._credentials["bybit"]).table())
        self.okx = okx_state()
        okx_routes = OkxRoutes(self.okx, self._credentials["okx"])
        link_venues(self.binance, self.bybit, self.okx)  # guest (money): withdrawals land on peer venues
        self.routes.update(okx_routes.table())
        self.ws_routes: dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}
        self.ws_routes.update(self.binance_streams.ws_routes())
        self.bybit_streams = BybitStreams(self.bybit, self._credentials["bybit"])
        self.ws_routes.update(self.bybit_streams.ws_routes())
        self.okx_streams = OkxStreams(self.okx, okx_routes, self._credentials["okx"])
        self.ws_routes.update(self.okx_streams.ws_routes())
        # guest (mstreams): the public market streams of Binance spot, Bybit and OKX
        self.market_streams = MarketStreams(self.binance, self.binance_streams, self.bybit, self.okx)
        self.ws_routes.update(self.market_streams.ws_routes())
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._sessions: list[aiohttp.ClientSession] = []
        self._clients: list[Any] = []
        self._stopping = asyncio.Event()

    # ---- lifecycle
    async def start(self) -> FakeExchange:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # shutdown_timeout: a held (timed-out) answer must not keep teardown waiting.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port, ssl_context=self.tls.server_context())
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        if self._funding_every_s:
            self._funding_task = asyncio.create_task(self._settle_funding_forever(self._funding_every_s))
        self.market_streams.start()  # guest (mstreams): its heartbeat, if one is set
        return self

    async def _settle_funding_forever(self, period: float) -> None:
        while not self._stopping.is_set():
            await self._sleep(period)
            if self._stopping.is_set():
                return
            for state in (self.binance, self.bybit, self.okx):
                for symbol in list(state.positions):
                    state.settle_funding(symbol)

    async def stop(self) -> None:
        self._stopping.set()
        if self._funding_task is not None:
            await self._funding_task
        for client in self._clients:
            await client.close()
        await self.binance_streams.close_all()
        await self.market_streams.close_all()  # guest (mstreams)
        await self.bybit_streams.close_all()
        await self.okx_streams.close_all()
        for session in self._sessions:
            await session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> FakeExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- clients
    def credentials(self, venue: str) -> Credentials:
        return self._credentials[venue]

    def session(self) -> aiohttp.ClientSession:
        session = venue_session(self.port, self.tls.cert_path)
        self._sessions.append(session)
        return session

    def ccxt_config(self, venue: str, **options: Any) -> dict[str, Any]:
        """The constructor config for a ccxt client of `venue` ("binanceusdm" or "binance" spot) on the fake."""
        account = "binance" if venue in ("binanceusdm", "binance") else venue
        creds = self._credentials[account]
        opts: dict[str, Any] = {"fetchCurrencies": False}
        if venue == "binance":
            opts.update({"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "defaultType": "spot"})
        if venue == "bybit":
            opts.update({"fetchMarkets": {"types": ["linear", "spot"]}})
        if venue == "okx":
            opts.update({"fetchMarkets": {"types": ["swap", "spot"]}})
        opts.update(options)
        config: dict[str, Any] = {"apiKey": creds.api_key, "secret": creds.secret, "session": self.session(),
                                  "enableRateLimit": False, "cafile": str(self.tls.cert_path), "options": opts}
        if creds.passphrase and venue == "okx":
            config["password"] = creds.passphrase
        return config

    async def client(self, venue: str, *, pro: bool = False, **options: Any) -> Any:
        """A ccxt client (`pro=True`: ccxt.pro, REST and websockets) on the fake; closed by stop()."""
        import ccxt.async_support as ccxt_async
        import ccxt.pro as ccxt_pro

        cls = getattr(ccxt_pro if pro else ccxt_async, venue)
        exchange = cls(self.ccxt_config(venue, **options))
        if venue in ("bybit", "okx"):
            exchange.has["fetchCurrencies"] = False  # these two ignore options.fetchCurrencies
        self._clients.append(exchange)
        return exchange

    # ---- log
    def requests_to(self, host: str | None = None, path_prefix: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.requests if (host is None or r.host == host)
                and (path_prefix is None or r.path.startswith(path_prefix))]

    # ---- dispatch
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived_ns = time.perf_counter_ns()  # guest (bench): LoggedRequest.ts_ns
        host = (request.host or "").split(":")[0].lower()
        method, path = request.method.upper(), request.path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # ccxt.pro numbers its market connections: /market/ws/0, /market/ws/1, ...
            base = path.rsplit("/", 1)[0] if path.rsplit("/", 1)[-1].isdigit() else path
            ws_handler = self.ws_routes.get((host, path)) or self.ws_routes.get((host, base))
            self.requests.append(LoggedRequest(host, "WS", path, dict(request.query), 101 if ws_handler else 404))
            if ws_handler is None:
                return web.json_response({"code": -5000, "msg": f"fake: no websocket {host}{path}"}, status=404)
            return await ws_handler(request)
        raw_query = request.rel_url.raw_query_string
        raw_body = (await request.read()).decode("utf-8", "replace")
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if raw_body and request.content_type == "application/x-www-form-urlencoded":
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        call = Call(host, method, path, params, raw_query, raw_body, request.headers)
        response = await self._respond(call)
        self.requests.append(LoggedRequest(host, method, path, {k: v for k, v in params.items() if k != "signature"},
                                           response.status, arrived_ns, time.perf_counter_ns()))
        return response

    async def _respond(self, call: Call) -> web.StreamResponse:
        now = self.binance.now_ms() - self.binance.clock_skew_ms
        until = self.faults.banned_until_ms.get(call.host)
        if until is not None and now < until:
            status, body, headers = self.faults.ban_response(call.host, now)
            return web.Response(status=status, text=body, headers=headers)
        rules = self.faults.take(call.host, call.method, call.path)
        for rule in rules:
            if rule.kind is Kind.LATENCY:
                await self._sleep(rule.seconds)
        for rule in rules:
            if rule.kind is Kind.RESPOND:
                return web.Response(status=rule.status, text=rule.body, headers=rule.headers)
            if rule.kind is Kind.BAN:
                self.faults.banned_until_ms[call.host] = now + int(rule.seconds * 1000)
                status, body, headers = self.faults.ban_response(call.host, now)
                return web.Response(status=status, text=body, headers=headers)
        handler = self.routes.get((call.host, call.method, call.path))
        if handler is None:
            response: web.StreamResponse = web.json_response(
                {"code": -5000, "msg": f"fake: no route {call.method} {call.host}{call.path}"}, status=404)
        else:
            response = await handler(call)
        for rule in rules:
            if rule.kind is Kind.HOLD:
                await self._sleep(rule.seconds)  # the state already changed; the client gives up waiting
            if rule.kind is Kind.MALFORMED and isinstance(response, web.Response) and response.text:
                text = response.text
                response = web.Response(status=200, text=text[: max(1, len(text) // 2)],
                                        content_type="application/json")
        return response

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
