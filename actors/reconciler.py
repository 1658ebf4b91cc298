"""Reconciler: at start-up and every `interval_s` of market time, our books against the venues' own view.

The venues are the truth (the exchanges' accounts, the chain's wallet). A comparison is made only once our books
have booked every report the venues have issued (their `reports_sent` against the snapshot's `reports_booked`):
otherwise a fill still in flight would look like a drift. If the books do not catch up within `max_deferrals`
snapshots (a report the books refused, or a venue that cannot count), the comparison is made anyway.

A drift is logged (`balance_drifted`) and exported; token drifts are booked to the venues' figures as one
RECONCILIATION change set through the books' own inbox, so the books follow the truth and the difference shows in
the P&L's `reconciliation` component. A drift worth more than `halt_above_usd`, one that cannot be valued, or a
perp whose size differs halts trading: the books were wrong by more than bookkeeping may settle, and a human
must find out why.

The venues are read concurrently, so a reconciliation takes as long as the slowest venue, not their sum. A
transfer still moving between accounts (`in_transit`, from the transfers' `TransitBook`) explains a difference on
its source or destination: that is logged as in transit, never a drift, and never corrected (its own legs book it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal

import anyio

from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.ids import VenueId
from daemon.domain.market import MarketState, MissingMarketData
from daemon.domain.messages import AccountReport, BalancesChanged, OrderFilled, PortfolioSnapshotted
from daemon.domain.reconcile import Reconciliation, correction, must_halt, reconcile, reports_expected, summarize
from daemon.domain.transit import Allowance
from daemon.errors import VenueError
from daemon.journal import Journal
from daemon.lifecycle import ActorContext, serve
from daemon.ports import ChainVenue, ExchangeVenue
from daemon.telemetry import ReconciliationRecord

NS_PER_S = 1_000_000_000
RECONCILER = VenueId("reconciler")


class ReconcilerActor:
    name = "reconciler"

    def __init__(
        self,
        snapshots: ConflatingChannel[PortfolioSnapshotted],
        exchanges: Mapping[str, ExchangeVenue],
        chain: ChainVenue | None,
        books: LosslessChannel[OrderFilled | BalancesChanged],
        market: Callable[[], MarketState],
        record: ReconciliationRecord,
        interval_s: float,
        halt_above_usd: Decimal,
        max_deferrals: int = 10,
        journal: Journal | None = None,
        in_transit: Callable[[int], Iterable[Allowance]] | None = None,
        read_concurrently: bool = True,
    ) -> None:
        """`in_transit(now_ns)`: what transfers still moving explain (`TransitBook.allowances`); None: nothing."""
        self.snapshots = snapshots
        self._exchanges = exchanges
        self._chain = chain
        self._books = books
        self._market = market
        self._record = record
        self._interval_ns = int(interval_s * NS_PER_S)
        self._halt_above = halt_above_usd
        self._max_deferrals = max_deferrals
        self._journal = journal
        self._in_transit = in_transit
        # Real venues are read at once (a run takes the slowest venue's time, not their sum). Simulated ones answer
        # without waiting: a task per read would only cost a backtest four tasks a market hour.
        self._concurrently = read_concurrently
        # Kept across restarts of the actor, like the books it checks.
        self.last_ts: int | None = None
        self.corrections_sent = 0
        self.deferrals = 0
        self.last: Reconciliation | None = None
        self.first_done = anyio.Event()
        self._ran: anyio.Event | None = None  # made by whoever waits for the next run; set after it
        self._requested = False

    def request(self) -> None:
        """Reconcile on the next snapshot, whatever the interval (`basisd reconcile`)."""
        self._requested = True

    async def next_run(self) -> None:
        """Return once the next reconciliation has completed or failed."""
        if self._ran is None:
            self._ran = anyio.Event()
        await self._ran.wait()

    def _finished(self) -> None:
        # An event only when someone waits: making one per run cost 2 % of a backtest.
        if self._ran is not None:
            self._ran.set()
            self._ran = None

    async def run(self, ctx: ActorContext) -> None:
        async def on_snapshot(snapshot: PortfolioSnapshotted) -> None:
            due = self._requested or self.last_ts is None or snapshot.ts_event - self.last_ts >= self._interval_ns
            if due and snapshot.ledger is not None:
                await self._reconcile(ctx, snapshot)

        await serve(ctx, self.snapshots, on_snapshot)

    async def _reconcile(self, ctx: ActorContext, snapshot: PortfolioSnapshotted) -> None:
        assert snapshot.ledger is not None
        try:
            reports = await self._fetch()
        except VenueError as exc:
            self._record.failed()
            ctx.log.error("reconciliation_failed", error=str(exc), error_type=type(exc).__name__)
            self._finished()
            return  # due still: the next snapshot tries again
        expected = reports_expected(reports)
        if expected is not None and expected + self.corrections_sent != snapshot.reports_booked:
            self.deferrals += 1
            if self.deferrals < self._max_deferrals:
                return  # reports in flight: compare once the books have caught up
            ctx.log.warning("reconciliation_not_caught_up", booked=snapshot.reports_booked,
                            venues_sent=expected + self.corrections_sent, deferrals=self.deferrals)
        self.deferrals = 0
        moving = () if self._in_transit is None else tuple(self._in_transit(ctx.clock.now_ns()))
        try:
            result = reconcile(snapshot.ledger, reports, self._market(), moving)
        except MissingMarketData:
            return  # no market yet to value a drift with: the next snapshot
        requested, first = self._requested, self.last_ts is None
        self._requested = False
        self.last_ts = snapshot.ts_event
        self.last = result
        self._record.completed(snapshot.ts_event, sorted(result.drift_usd().items()))
        if self._journal is not None:
            self._journal.record_reconciliation(ctx.clock.now_ns(), snapshot.ts_event, result.clean,
                                                result.total_usd(), summarize(result.drifts))
        if result.clean:
            # The start-up run and one asked for are news; an hourly run that finds nothing is not (the metrics
            # count them): at a replay's hour a second it would drown the status line.
            log = ctx.log.info if first or requested else ctx.log.debug
            log("reconciled", accounts=list(result.accounts), reports_booked=snapshot.reports_booked,
                **({"in_transit": summarize(result.in_transit)} if result.in_transit else {}))
        else:
            await self._settle(ctx, snapshot, result)
        self.first_done.set()
        self._finished()

    async def _fetch(self) -> list[AccountReport]:
        """Every venue's account, read concurrently; if any read fails, the first failure in venue order is raised
        (as the sequential reads did), once every read has finished: none is left running."""
        reads: list[Callable[[], Awaitable[AccountReport]]] = [e.fetch_account for e in self._exchanges.values()]
        if self._chain is not None:
            reads.append(self._chain.fetch_wallet)
        if not self._concurrently:
            return [await read() for read in reads]
        answers: list[AccountReport | Exception | None] = [None] * len(reads)

        async def read(i: int) -> None:
            try:
                answers[i] = await reads[i]()
            except Exception as exc:  # kept, and raised below in venue order
                answers[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(len(reads)):
                tg.start_soon(read, i)
        reports = []
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
            assert answer is not None
            reports.append(answer)
        return reports

    async def _settle(self, ctx: ActorContext, snapshot: PortfolioSnapshotted, result: Reconciliation) -> None:
        halt = must_halt(result, self._halt_above)
        log = ctx.log.critical if halt else ctx.log.warning
        log("balance_drifted", drifts=summarize(result.drifts), total_usd=f"{result.total_usd():.2f}",
            action="halt" if halt else "booked to the venues' figures")
        change = correction(result, ctx.clock.now_ns(), ref=f"reconcile-{self.corrections_sent + 1}")
        if change is not None:
            # Through the books' own inbox, in order with the venues' reports: the positions actor books it.
            self.corrections_sent += 1
            now = ctx.clock.now_ns()
            await self._books.send(BalancesChanged(RECONCILER, f"correction-{self.corrections_sent}", change, now,
                                                   now))
        if halt:
            ctx.trading.halt(f"reconciliation: {halt}", source="reconciler")
