"""API: the positions API (seed 002) — `GET /api/v1/positions/summary`, `GET /api/v1/positions/health` and the
WebSocket `/api/v1/positions/stream`, on one port (`daemon.api.server`).

It reads copies of what flows into and out of the books (`daemon.api.taps`), never the books themselves, and
nothing it does can make another actor wait: its inbox is the stamped portfolio and risk snapshots
(conflated); with each one it drains the copied venue reports and the market data, works out the position
updates (`daemon.api.tracker`) and hands them, encoded once, to the per-client queues, which drop a client
rather than wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import anyio
import structlog

from daemon.api.server import ApiServer
from daemon.api.taps import ApiTaps, Stamped
from daemon.api.tracker import PositionTracker
from daemon.api.views import HealthInputs, Json, ReconciliationLike, ViewConfig, encode, health, holdings, iso, summary
from daemon.bus import ChannelClosed, WouldBlock
from daemon.domain.market import MarketBoard
from daemon.domain.messages import MarketUpdated, PortfolioSnapshotted, RiskAssessed, TradingState
from daemon.domain.risk import RiskLimits, stale_series
from daemon.lifecycle import ActorContext, ActorRecord, serve
from daemon.log import register_secrets
from daemon.settings import ApiSettings


class ApiActor:
    name = "api"

    def __init__(
        self,
        taps: ApiTaps,
        settings: ApiSettings,
        config: ViewConfig,
        *,
        records: Callable[[], Iterable[ActorRecord]],
        heartbeat_timeout_s: float,
        limits: Callable[[], RiskLimits],
        reconciliation: Callable[[], ReconciliationLike | None] = lambda: None,
        pnl: Callable[[], Mapping[str, Decimal]] = dict,
        waiting_for: Callable[[], str] = str,
    ) -> None:
        self.taps = taps
        self._settings = settings
        self._config = config
        self._records = records
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._limits = limits
        self._reconciliation = reconciliation
        self._pnl = pnl  # the books' exact hourly attribution since start, by component
        self._waiting_for = waiting_for  # why trading has not started yet (the start gate), '' once it may
        if settings.token is not None:
            register_secrets([settings.token.get_secret_value()])  # a token pasted into a URL is scrubbed too
        # What was streamed and the books' last state outlive restarts of this actor, as its inboxes do.
        self.tracker = PositionTracker(Decimal(str(settings.price_update_threshold)), config.lending_venue)
        self.board = MarketBoard()
        self.latest: PortfolioSnapshotted | None = None
        self.risk: RiskAssessed | None = None
        self._snapshot_mono: float | None = None
        self._ctx: ActorContext | None = None
        self._cache: dict[str | None, bytes] = {}
        self._cache_body: Json | None = None
        self._version = 0  # bumped by every snapshot: the cached summary is valid for one version and state
        self._cache_key: tuple[int, TradingState] | None = None
        self.server = ApiServer(settings, self, structlog.get_logger().bind(actor=self.name))
        self.port: int | None = None
        self.updates_streamed = 0

    async def bind(self) -> int:
        """Listen (the daemon binds every listener before anything can trade); the bound port. Raises OSError."""
        if not self.server.listening:
            self.port = await self.server.start()
            structlog.get_logger().info("api_listening", actor=self.name, host=self._settings.host, port=self.port,
                                        token_required=self._settings.token is not None)
        assert self.port is not None
        return self.port

    async def run(self, ctx: ActorContext) -> None:
        self._ctx = ctx
        try:
            await self.bind()  # already bound at start-up; bound again after a restart of this actor
        except OSError as exc:
            ctx.log.error("api_bind_failed", host=self._settings.host, port=self._settings.port, error=str(exc))
            raise
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keepalive)
                await serve(ctx, self.taps.snapshots, self._on_snapshot)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.server.stop()

    async def _on_snapshot(self, stamped: Stamped) -> None:
        self._drain()
        self._version += 1
        item = stamped.item
        if isinstance(item, RiskAssessed):
            self.risk = item
            return
        self.latest = item
        self._snapshot_mono = time.monotonic()
        updates = self.tracker.update(holdings(item, self.board.state(), self._config), stamped.books_taken,
                                      item.ts_event, stamped.wall_ns)
        if not self.server.clients:
            return
        last_changed = self.tracker.last_changed_ns
        for update in updates:
            self.server.broadcast(encode(update.to_json(last_changed.get(update.symbol))))
        self.updates_streamed += len(updates)

    def _drain(self) -> None:
        """Take every copied report and market update queued so far (they were published before the snapshot)."""
        try:
            while True:
                self.tracker.add(self.taps.reports.receive_nowait())
        except (WouldBlock, ChannelClosed):
            pass
        try:
            while True:
                batch: Any = self.taps.market.receive_nowait()
                for update in batch.updates if isinstance(batch, MarketUpdated) else (batch,):
                    self.board.update(update)
        except (WouldBlock, ChannelClosed):
            pass

    async def _keepalive(self) -> None:
        while True:
            await anyio.sleep(self._settings.ping_interval_s)
            self.server.broadcast(encode({"type": "ping", "timestamp": iso(self._now_ns())}))

    def _now_ns(self) -> int:
        return self._ctx.clock.now_ns() if self._ctx is not None else 0

    def _trading(self) -> TradingState:
        return self._ctx.trading.state if self._ctx is not None else TradingState.ACTIVE

    # --- what the server asks for (daemon.api.server.Views) --------------------------------------------

    def summary_bytes(self, kind: str | None) -> bytes:
        key = (self._version, self._trading())
        if key != self._cache_key:
            self._cache_key, self._cache, self._cache_body = key, {}, None
        data = self._cache.get(kind)
        if data is None:
            if self._cache_body is None:
                self._cache_body = summary(self.latest, self.board.state(), self._config, self._trading(), self.risk,
                                           self.tracker.last_changed_ns)
                # Every P&L figure traced to the books: the attribution of the closed hours, which sums exactly to
                # the NAV change over them (the perps' P&L above is the venues' view of the open positions only).
                self._cache_body["pnl_by_component"] = {k: str(v) for k, v in self._pnl().items()}
            data = self._cache[kind] = encode(self._cache_body if kind is None else {"type": kind,
                                                                                     **self._cache_body})
        return data

    def health(self) -> tuple[int, bytes]:
        ages = dict(self.latest.series_ages_s) if self.latest is not None else {}
        status, body = health(HealthInputs(
            records=self._records(), now_mono=time.monotonic(), heartbeat_timeout_s=self._heartbeat_timeout_s,
            trading=self._trading(), snapshot=self.latest,
            snapshot_age_s=time.monotonic() - self._snapshot_mono if self._snapshot_mono is not None else None,
            stale_series=stale_series(ages, self._limits()), reconciliation=self._reconciliation(),
            clients=len(self.server.clients), waiting_for=self._waiting_for(),
        ))
        body["api"] = {"port": self.port, "clients_cut_off": self.server.too_slow, "refused": self.server.refused,
                       "updates_streamed": self.updates_streamed}
        return status, encode(body)

    def pong(self) -> bytes:
        return encode({"type": "pong", "timestamp": iso(self._now_ns())})
