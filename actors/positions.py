"""Positions: the single writer of the ledger. Books fills as atomic change sets, keeps the market board,
and publishes valued snapshots (conflated: readers only ever need the latest)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio

from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.domain.booking import fill_change_set
from daemon.domain.exposure import compute_exposure, perp_asset
from daemon.domain.ids import InstrumentId
from daemon.domain.ledger import ChangeSet, Ledger, LedgerError
from daemon.domain.market import MarketBoard, MissingMarketData
from daemon.domain.messages import BalancesChanged, MarketData, OrderFilled, PortfolioSnapshotted, PositionView
from daemon.domain.pnl import nav_usd
from daemon.lifecycle import ActorContext, serve


class PositionsActor:
    name = "positions"

    def __init__(
        self,
        fills: LosslessChannel[OrderFilled | BalancesChanged],
        marks: ConflatingChannel[MarketData],
        snapshots: Fanout[PortfolioSnapshotted],
        ledger: Ledger,
        opening: Callable[[], Iterable[ChangeSet]],
    ) -> None:
        self.fills = fills
        self.marks = marks
        self._snapshots = snapshots
        # The ledger and board outlive restarts of this actor (they are the books, rebuilt from the journal
        # once persistence exists); `_booked` makes a redelivered fill harmless.
        self.ledger = ledger
        for change in opening():
            ledger.apply(change)
        self.board = MarketBoard()
        self._booked: set[str] = set()
        self.latest: PortfolioSnapshotted | None = None

    async def run(self, ctx: ActorContext) -> None:
        ledger, board = self.ledger, self.board

        def publish() -> None:
            market = board.state()
            snapshot = ledger.snapshot()
            try:
                nav = nav_usd(snapshot, market)
                exposure = compute_exposure(snapshot, market)
            except MissingMarketData:
                return  # not every series has arrived yet: nothing trustworthy to publish
            positions = []
            for p in snapshot.perps:
                if p.quantity == 0:
                    continue
                mark = market.mark(p.venue, perp_asset(p.instrument))
                instrument = InstrumentId(f"{p.venue}:Perp:{p.instrument}")
                positions.append(PositionView(instrument, p.quantity, p.entry_price, mark, p.realized_pnl,
                                              p.quantity * mark - p.cost))
            now = ctx.clock.now_ns()
            self.latest = PortfolioSnapshotted(
                positions=tuple(positions), cash=tuple((f"{a}:{t}", v) for a, t, v in snapshot.balances),
                eth_usd=market.price_usd("ETH"),
                net_delta_eth=exposure.net_delta("ETH"), nav_usd=nav, reports_booked=len(self._booked),
                ts_event=market.ts_ns, ts_recv=now, ledger=snapshot,
                series_ages_s=tuple(sorted(board.ages_s().items())),
            )
            self._snapshots.publish(self.latest)

        async def on_report(report: OrderFilled | BalancesChanged) -> None:
            if isinstance(report, OrderFilled):
                key, change = f"{report.venue}:{report.trade_id}", fill_change_set(report)
            else:
                key, change = f"{report.venue}:{report.report_id}", report.change
            if key in self._booked:
                return
            try:
                ledger.apply(change)
            except LedgerError as exc:
                # The venue says it happened and our books cannot hold it: they are wrong. Stop adding risk
                # until a human or the reconciler has looked.
                ctx.log.critical("report_not_booked", report=key, error=str(exc))
                ctx.trading.halt(f"{key} could not be booked: {exc}", source="positions")
                return
            self._booked.add(key)
            publish()

        async def on_mark(update: MarketData) -> None:
            board.update(update)
            publish()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.fills, on_report)
            tg.start_soon(serve, ctx, self.marks, on_mark)
