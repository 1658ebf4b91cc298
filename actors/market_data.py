"""Market data: pulls each instant's updates from the market feed (on the injected clock) and publishes them
as one `MarketUpdated`, conflated (a reader that falls behind gets the latest value of every series).

A failing feed fails the run: whatever the feed raises reaches the supervisor as a `FatalError`, never as a
failure to restart from, since a restarted reader of a dead feed would take its silence for the end of the
replay. `exhausted` is set only when the feed says it has reached its end."""

from __future__ import annotations

from typing import Protocol

import anyio

from daemon.bus import Fanout
from daemon.domain.messages import MarketData, MarketUpdated
from daemon.errors import FatalError, FeedError
from daemon.failures import describe
from daemon.lifecycle import ActorContext


class MarketFeed(Protocol):
    async def next_batch(self) -> list[MarketData] | None:
        """The next instant's updates, once the clock reaches it; None when the feed is exhausted."""
        ...


class MarketDataActor:
    name = "market_data"

    def __init__(self, feed: MarketFeed, out: Fanout[MarketUpdated]) -> None:
        self._feed = feed
        self._out = out
        self.batches = 0
        self.exhausted = anyio.Event()

    async def run(self, ctx: ActorContext) -> None:
        ctx.started()
        while True:
            ctx.beat()
            batch = await self._next()
            if batch is None:
                ctx.log.info("market_feed_exhausted", batches=self.batches)
                self.exhausted.set()
                return
            if batch:
                self._out.publish(MarketUpdated(tuple(batch), batch[-1].ts_event, batch[-1].ts_recv))
            ctx.record.handled += 1
            self.batches += 1

    async def _next(self) -> list[MarketData] | None:
        try:
            return await self._feed.next_batch()
        except FatalError:
            raise
        except Exception as exc:
            raise FeedError(f"the market feed failed: {describe(exc)}") from exc
