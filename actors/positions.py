"""Positions: the single writer of the book. Applies fills and marks, publishes snapshots (conflated)."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.domain.book import ZERO, Book
from daemon.domain.messages import MarketData, OrderFilled, PortfolioSnapshotted, PriceTicked
from daemon.lifecycle import ActorContext, serve


class PositionsActor:
    name = "positions"

    def __init__(
        self,
        fills: LosslessChannel[OrderFilled],
        marks: ConflatingChannel[MarketData],
        snapshots: Fanout[PortfolioSnapshotted],
        seed_book: Callable[[], Book],
    ) -> None:
        self.fills = fills
        self.marks = marks
        self._snapshots = snapshots
        self._seed_book = seed_book
        self.book = seed_book()
        self._applied: set[str] = set()

    async def run(self, ctx: ActorContext) -> None:
        book = self.book

        def publish() -> None:
            now = ctx.clock.now_ns()
            self._snapshots.publish(PortfolioSnapshotted(
                positions=book.positions(),
                cash=tuple(sorted((f"{acct}:{asset}", v) for (acct, asset), v in book.cash.items())),
                eth_usd=book.marks.get("spot:ETH", ZERO),
                net_delta_eth=book.net_delta("ETH"), nav_usd=book.nav_usd(),
                fills_applied=book.fills_applied, ts_event=now, ts_recv=now,
            ))

        async def on_fill(fill: OrderFilled) -> None:
            if fill.trade_id in self._applied:
                return
            book.apply_fill(fill)
            self._applied.add(fill.trade_id)
            publish()

        async def on_mark(update: MarketData) -> None:
            if isinstance(update, PriceTicked):
                _, kind, _ = update.instrument_id.split(":")
                book.mark("spot:ETH" if kind == "Spot" else update.instrument_id, update.price)
                publish()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.fills, on_fill)
            tg.start_soon(serve, ctx, self.marks, on_mark)
