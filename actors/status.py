"""Status: a compact line every few seconds (real time) saying what the daemon is doing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

from daemon.bus import ConflatingChannel, WouldBlock
from daemon.domain.messages import PortfolioSnapshotted, RiskAssessed
from daemon.lifecycle import ActorContext


class StatusActor:
    name = "status"

    def __init__(
        self,
        snapshots: ConflatingChannel[PortfolioSnapshotted | RiskAssessed],
        interval_s: float,
        extra: Callable[[], dict[str, object]],
        on_status: Callable[[str], None],
    ) -> None:
        self.snapshots = snapshots
        self._interval_s = interval_s
        self._extra = extra
        self._on_status = on_status
        self.latest: PortfolioSnapshotted | None = None
        self.risk: RiskAssessed | None = None

    async def run(self, ctx: ActorContext) -> None:
        ctx.started()
        next_at = time.monotonic() + self._interval_s
        while True:
            ctx.beat()
            await anyio.sleep(min(ctx.heartbeat_interval_s, max(0.0, next_at - time.monotonic())))
            while True:
                try:
                    update = self.snapshots.receive_nowait()
                except WouldBlock:
                    break
                if isinstance(update, RiskAssessed):
                    self.risk = update
                else:
                    self.latest = update
            if time.monotonic() >= next_at:
                next_at += self._interval_s
                self._report(ctx)

    def _report(self, ctx: ActorContext) -> None:
        snap = self.latest
        market_time = datetime.fromtimestamp(ctx.clock.now_ns() / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
        fields: dict[str, object] = {"market_time": market_time, "trading": ctx.trading.state.value}
        if snap is not None:
            shorts = " ".join(f"{p.instrument_id.split(':')[0]}={p.quantity}" for p in snap.positions)
            fields.update(eth_usd=str(snap.eth_usd), nav_usd=f"{snap.nav_usd:.2f}",
                          delta_eth=f"{snap.net_delta_eth:.3f}", shorts=shorts or "-", booked=snap.reports_booked)
        if self.risk is not None and self.risk.margin_ratios:
            fields.update(min_margin=f"{min(r for _, r in self.risk.margin_ratios):.3f}",
                          drawdown=f"{self.risk.drawdown:.2%}")
        fields.update(self._extra())
        ctx.log.info("status", **fields)
        self._on_status(" ".join(f"{k}={v}" for k, v in fields.items() if k != "shorts"))
