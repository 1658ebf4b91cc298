"""Positions: the single writer of the ledger. Books every venue report as an atomic change set, keeps the
market board, publishes valued snapshots (conflated: readers only ever need the latest), and at each market
hour attributes the hour's P&L exactly (`PnlAttributed`, lossless)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import partial

import anyio

from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.clock import Clock
from daemon.domain.booking import fill_change_set
from daemon.domain.exposure import compute_exposure, perp_asset
from daemon.domain.ids import InstrumentId
from daemon.domain.ledger import ChangeSet, Ledger, LedgerError, LedgerSnapshot, Reason
from daemon.domain.market import MarketBoard, MarketState, MissingMarketData
from daemon.domain.messages import (
    BalancesChanged,
    MarketUpdated,
    OrderFilled,
    PnlAttributed,
    PortfolioSnapshotted,
    PositionView,
)
from daemon.domain.pnl import COMPONENTS, attribute_step, nav_usd
from daemon.domain.reconcile import accounts_touched
from daemon.lifecycle import ActorContext, serve

HOUR_NS = 3_600 * 1_000_000_000


class PositionsActor:
    name = "positions"

    def __init__(
        self,
        fills: LosslessChannel[OrderFilled | BalancesChanged],
        marks: ConflatingChannel[MarketUpdated],
        snapshots: Fanout[PortfolioSnapshotted],
        ledger: Ledger,
        opening: Callable[[], Iterable[ChangeSet]],
        currency: str = "USDT",
        attributions: LosslessChannel[PnlAttributed] | None = None,
    ) -> None:
        self.fills = fills
        self.marks = marks
        self._snapshots = snapshots
        # The ledger, board and attribution state outlive restarts of this actor (they are the books, rebuilt
        # from the journal once persistence exists); `_booked` makes a redelivered report harmless.
        self.ledger = ledger
        self._opening_snapshot = ledger.snapshot()  # empty books: the opening capital is the first flow
        self._step_changes: list[ChangeSet] = []
        self._booked: set[str] = set()
        for change in opening():
            self.book_opening(change)
        self.board = MarketBoard()
        # Per account, the reports booked that touch it: the reconciler's "have the books caught up" (the tuple is
        # what snapshots carry, remade only when a report is booked).
        self._booked_by_account: dict[str, int] = {}
        self._booked_by_account_view: tuple[tuple[str, int], ...] = ()
        self.latest: PortfolioSnapshotted | None = None
        self._currency = currency
        self._attributions = attributions
        self._step_start: tuple[LedgerSnapshot, MarketState] | None = None
        self.pnl_totals: dict[str, Decimal] = dict.fromkeys(COMPONENTS, Decimal(0))
        self.max_abs_residual = Decimal(0)
        self.hours_attributed = 0
        self._open_hour = -1  # the market hour whose changes are being gathered

    def book_opening(self, change: ChangeSet, key: str | None = None) -> None:
        """Book the run's opening capital (before the actor runs): the first flow of the first hour. A live run
        books it once the venues have been read (daemon.live_accounts); `key`: its journal key (booked once)."""
        self.ledger.apply(change)
        self._step_changes.append(change)
        if key is not None:
            self._booked.add(key)

    def book_history(self, changes: Iterable[tuple[str, ChangeSet]]) -> None:
        """Before the actor runs: the books an earlier live run left, as the journal holds them (daemon.journal_books),
        each under its report key — a venue's report of one of them again (a backstop re-reading an old trade, a
        transfer's leg published again after the kill) is booked no more. They are not this run's flows: the first
        hour starts from the books they make."""
        for key, change in changes:
            self.ledger.apply(change)
            self._booked.add(key)
        self._opening_snapshot = self.ledger.snapshot()

    async def run(self, ctx: ActorContext) -> None:
        async def on_report(report: OrderFilled | BalancesChanged) -> None:
            await self._book(ctx, report)

        async def on_mark(batch: MarketUpdated) -> None:
            # The first market of a new hour closes the previous one (its market is complete by then: the
            # feed delivers an hour's updates together, and flat out the clock waits for the pipeline).
            await self._close_hour_before(ctx, batch.ts_event)
            for update in batch.updates:
                self.board.update(update)
            if not len(self.marks):
                # Value the books once the inbox is drained: readers conflate to the latest anyway, and
                # valuing is the costly part.
                self._publish(ctx)

        async with anyio.create_task_group() as tg:
            # A report's booking is idempotent (booked once by its key): one cancelled mid-way — the marks' loop
            # failed while it waited — is offered again after the restart rather than lost.
            tg.start_soon(partial(serve, ctx, self.fills, on_report, redeliver_if_cancelled=True))
            tg.start_soon(serve, ctx, self.marks, on_mark)

    async def _book(self, ctx: ActorContext, report: OrderFilled | BalancesChanged) -> None:
        if isinstance(report, OrderFilled):
            key, change = f"{report.venue}:{report.trade_id}", fill_change_set(report)
        else:
            key, change = f"{report.venue}:{report.report_id}", report.change
        if key in self._booked:
            return
        # A venue report of the next hour (a settlement, a liquidation) can arrive before that hour's first
        # market message, on the other inbox: it closes the hour just ended, so it is attributed to its own.
        await self._close_hour_before(ctx, change.ts_ns)
        try:
            self.ledger.apply(change)
        except LedgerError as exc:
            # The venue says it happened and our books cannot hold it: they are wrong. Stop adding risk until
            # a human or the reconciler has looked.
            ctx.log.critical("report_not_booked", report=key, error=str(exc))
            ctx.trading.halt(f"{key} could not be booked: {exc}", source="positions")
            return
        self._booked.add(key)
        for account in accounts_touched(report):
            self._booked_by_account[account] = self._booked_by_account.get(account, 0) + 1
        self._booked_by_account_view = tuple(sorted(self._booked_by_account.items()))
        self._step_changes.append(change)
        if change.reason is Reason.LIQUIDATION:
            # The venue acted on its own: the books follow, and trading stops. A liquidation means the risk
            # limits failed to hold, and what is left (a long leg without its hedge, or a hedge without its
            # collateral) is a position nobody designed: a human decides what comes next (`basisd resume`).
            ctx.log.critical("liquidated", venue=report.venue, report=key,
                             perps=[f"{p.instrument} {p.delta_qty} @ {p.price}" for p in change.perps],
                             tokens=[f"{t.account}:{t.token} {t.delta}" for t in change.tokens])
            ctx.trading.halt(f"liquidated on {report.venue} ({key})", source="positions")
        self._publish(ctx)

    def _publish(self, ctx: ActorContext) -> None:
        market = self.board.state()
        snapshot = self.ledger.snapshot()
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
            positions.append(PositionView(InstrumentId(f"{p.venue}:Perp:{p.instrument}"), p.quantity,
                                          p.entry_price, mark, p.realized_pnl, p.quantity * mark - p.cost))
        self.latest = PortfolioSnapshotted(
            positions=tuple(positions), cash=tuple((f"{a}:{t}", v) for a, t, v in snapshot.balances),
            eth_usd=market.price_usd("ETH"), net_delta_eth=exposure.net_delta("ETH"), nav_usd=nav,
            reports_booked=len(self._booked), ts_event=market.ts_ns, ts_recv=ctx.clock.now_ns(), ledger=snapshot,
            series_ages_s=tuple(sorted(self.board.ages_s().items())), booked_by_account=self._booked_by_account_view,
        )
        self._snapshots.publish(self.latest)

    async def _close_hour_before(self, ctx: ActorContext, ts_ns: int) -> None:
        hour = ts_ns // HOUR_NS
        if self._open_hour < 0:
            self._open_hour = hour
        elif hour > self._open_hour and self.board.ts_ns:
            self._open_hour = hour
            await self._close_hour(ctx.clock)

    async def close_final_hour(self, clock: Clock) -> None:
        """Close the hour the replay's last bar opened: no next market will (without this the window's last
        bar was never attributed nor recorded: 11,855 of 11,856 hours)."""
        if self._open_hour >= 0 and self.board.ts_ns:
            self._open_hour = self.board.ts_ns // HOUR_NS + 1  # anything later belongs to an hour not replayed
            await self._close_hour(clock)

    async def _close_hour(self, clock: Clock) -> None:
        """Attribute the hour just completed: from the last close to the books and market now."""
        market, snapshot = self.board.state(), self.ledger.snapshot()
        # The first hour starts from empty books at the first market: the opening capital is its flow.
        start = self._step_start or (self._opening_snapshot, market)
        try:
            step = attribute_step(start[0], start[1], snapshot, market, self._step_changes, self._currency)
        except MissingMarketData:
            return  # the first hour is not complete yet
        for name, value in step.components.items():
            self.pnl_totals[name] += value
        self.max_abs_residual = max(self.max_abs_residual, abs(step.residual))
        self.hours_attributed += 1
        # Start the next hour before the await below: a report booked while the send waits belongs to it.
        changes, self._step_changes = self._step_changes, []
        self._step_start = (snapshot, market)
        if self._attributions is not None:
            await self._attributions.send(PnlAttributed(
                market.ts_ns, self._currency, step.nav_before, step.nav_after, step.flows,
                tuple(step.components.items()), step.residual, tuple(changes), clock.now_ns(), snapshot, market))
