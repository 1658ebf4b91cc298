"""Reconciler: at start-up and every `interval_s` of market time, our books against the venues' own view.

The venues are the truth (the exchanges' accounts, the chain's wallet). A comparison is made only once our books
have booked every report the venues have issued: otherwise a fill still in flight would look like a drift. Two
ways of counting, one per world:
- simulated (replay, backtest): in total, the venues' `reports_sent` summed against the snapshot's
  `reports_booked` (with the reconciler's own corrections);
- live (`per_account`): per account, within the run (a restart is a new run: both sides count from zero). The live
  adapters count every report they publish under each ledger account it touches (`daemon.domain.reconcile.
  ReportCount`, one shared by a run's exchanges, funding pollers, transfer desk, chain and liquidation watch) and
  each account report carries its account's count; the positions actor counts what it has booked the same way
  (`PortfolioSnapshotted.booked_by_account`). An account is compared once its books have booked at least that
  many (plus our corrections of it). The count covers a report from its publication to its booking, and the
  chain's wallet is read under the lock its adapter holds from sending a transaction to publishing its report: so
  a reconciliation run during an operation waits for its reports rather than calling a drift that the late report
  would then book on top of the correction. (Not covered: a trade the venue made that the exchange adapter has not
  read yet.)
If the books do not catch up within `max_deferrals` snapshots (a report the books refused, or a venue that cannot
count), the comparison is made anyway.

A drift is logged (`balance_drifted`) and exported; token drifts are booked to the venues' figures as one
RECONCILIATION change set through the books' own inbox, so the books follow the truth and the difference shows in
the P&L's `reconciliation` component. A drift worth more than `halt_above_usd`, one that cannot be valued, or a
perp whose size differs halts trading: the books were wrong by more than bookkeeping may settle, and a human
must find out why. A difference inside `tolerance` (dust per asset, or a fraction of the venue's figure) is no
drift: booked to the venues' figures all the same, logged at info, never halting.

The venues are read concurrently, so a reconciliation takes as long as the slowest venue, not their sum. A
transfer still moving between accounts (`in_transit`, from the transfers' `TransitBook`) explains a difference on
its source or destination: that is logged as in transit, never a drift, and never corrected (its own legs book it).

With `positions_interval_s`, the exchanges' perp positions are also compared between full runs, every that many
seconds of market time (a perp size that differs halts trading; balances wait for the next full run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal

import anyio

from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.ids import VenueId
from daemon.domain.market import MarketState, MissingMarketData
from daemon.domain.messages import AccountReport, BalancesChanged, OrderFilled, PortfolioSnapshotted
from daemon.domain.reconcile import (
    EXACT,
    Reconciliation,
    Tolerance,
    accounts_behind,
    correction,
    must_halt,
    reconcile,
    reports_expected,
    summarize,
)
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
        per_account: bool | None = None,
        tolerance: Tolerance = EXACT,
        positions_interval_s: float | None = None,
    ) -> None:
        """`in_transit(now_ns)`: what transfers still moving explain (`TransitBook.allowances`); None: nothing.
        `per_account`: the venues count their reports per account within the run (live), not in total (simulated);
        None: as `read_concurrently` (the live world reads concurrently, the simulated one does not)."""
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
        self._per_account = read_concurrently if per_account is None else per_account
        self._tolerance = tolerance
        self._positions_interval_ns = None if positions_interval_s is None else int(positions_interval_s * NS_PER_S)
        # Kept across restarts of the actor, like the books it checks.
        self.last_ts: int | None = None
        self.corrections_sent = 0
        self._corrected: dict[str, int] = {}  # per account, our corrections that touch it (live counting)
        self.last_positions_ts: int | None = None
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
            if snapshot.ledger is None:
                return
            due = self._requested or self.last_ts is None or snapshot.ts_event - self.last_ts >= self._interval_ns
            if due:
                await self._reconcile(ctx, snapshot)
            elif self._positions_due(snapshot.ts_event):
                await self._reconcile(ctx, snapshot, positions_only=True)

        await serve(ctx, self.snapshots, on_snapshot)

    def _positions_due(self, ts: int) -> bool:
        # Live only: the simulated venues count their reports in total, a positions run reads the exchanges alone.
        if self._positions_interval_ns is None or self.last_ts is None or not self._per_account:
            return False
        last = max(self.last_ts, self.last_positions_ts or self.last_ts)
        return ts - last >= self._positions_interval_ns

    async def _reconcile(self, ctx: ActorContext, snapshot: PortfolioSnapshotted, positions_only: bool = False) -> None:
        assert snapshot.ledger is not None
        # What transfers still moving explain, taken before the venues are read: a transfer that lands meanwhile
        # is then either still excused, or its landing was published before the read ended and is waited for.
        moving = () if self._in_transit is None else tuple(self._in_transit(ctx.clock.now_ns()))
        try:
            reports = await self._fetch(exchanges_only=positions_only)
        except VenueError as exc:
            self._record.failed()
            ctx.log.error("reconciliation_failed", error=str(exc), error_type=type(exc).__name__)
            self._finished()
            return  # due still: the next snapshot tries again
        if not self._caught_up(ctx, snapshot, reports):
            return  # reports in flight: compare once the books have caught up
        try:
            result = reconcile(snapshot.ledger, reports, self._market(), moving, self._tolerance,
                               tokens=not positions_only)
        except MissingMarketData:
            return  # no market yet to value a drift with: the next snapshot
        if positions_only:
            self.last_positions_ts = snapshot.ts_event
            await self._positions_checked(ctx, snapshot, result)
            return
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
                **({"in_transit": summarize(result.in_transit)} if result.in_transit else {}),
                **({"within_tolerance": summarize(result.tolerated)} if result.tolerated else {}))
        await self._settle(ctx, snapshot, result)
        self.first_done.set()
        self._finished()

    def _caught_up(self, ctx: ActorContext, snapshot: PortfolioSnapshotted, reports: list[AccountReport]) -> bool:
        """Whether the books have booked every report the venues published (else a deferral, up to
        `max_deferrals`: past them the comparison is made anyway, with a warning)."""
        if self._per_account:
            behind = accounts_behind(reports, dict(snapshot.booked_by_account), self._corrected)
            if not behind:
                self.deferrals = 0
                return True
            self.deferrals += 1
            if self.deferrals < self._max_deferrals:
                return False
            ctx.log.warning("reconciliation_not_caught_up", deferrals=self.deferrals,
                            behind={a: {"booked": b, "venue_sent": e} for a, (b, e) in sorted(behind.items())})
            self.deferrals = 0
            return True
        expected = reports_expected(reports)
        if expected is not None and expected + self.corrections_sent != snapshot.reports_booked:
            self.deferrals += 1
            if self.deferrals < self._max_deferrals:
                return False
            ctx.log.warning("reconciliation_not_caught_up", booked=snapshot.reports_booked,
                            venues_sent=expected + self.corrections_sent, deferrals=self.deferrals)
        self.deferrals = 0
        return True

    async def _positions_checked(self, ctx: ActorContext, snapshot: PortfolioSnapshotted,
                                 result: Reconciliation) -> None:
        """A positions-only run: journaled; a perp size that differs halts as in a full run (nothing is booked)."""
        if self._journal is not None:
            self._journal.record_reconciliation(ctx.clock.now_ns(), snapshot.ts_event, result.clean,
                                                result.total_usd(), summarize(result.drifts))
        if result.clean:
            ctx.log.debug("positions_reconciled", accounts=list(result.accounts))
            return
        await self._settle(ctx, snapshot, result)

    async def _fetch(self, exchanges_only: bool = False) -> list[AccountReport]:
        """Every venue's account, read concurrently; if any read fails, the first failure in venue order is raised
        (as the sequential reads did), once every read has finished: none is left running."""
        reads: list[Callable[[], Awaitable[AccountReport]]] = [e.fetch_account for e in self._exchanges.values()]
        if self._chain is not None and not exchanges_only:
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
        """Log a drift, book the token differences (drifts and those inside the tolerance) to the venues' figures,
        and halt if the drift is beyond what bookkeeping may settle."""
        halt = must_halt(result, self._halt_above)
        if not result.clean:
            log = ctx.log.critical if halt else ctx.log.warning
            log("balance_drifted", drifts=summarize(result.drifts), total_usd=f"{result.total_usd():.2f}",
                action="halt" if halt else "booked to the venues' figures")
        change = correction(result, ctx.clock.now_ns(), ref=f"reconcile-{self.corrections_sent + 1}")
        if change is not None:
            # Through the books' own inbox, in order with the venues' reports: the positions actor books it.
            self.corrections_sent += 1
            for account in {t.account for t in change.tokens}:
                self._corrected[account] = self._corrected.get(account, 0) + 1
            now = ctx.clock.now_ns()
            # Unique across runs (the journal's run in it), and journaled as any report: the books a restart
            # rebuilds from the journal (daemon.journal_books) hold the correction too.
            run = f"{self._journal.run}-" if self._journal is not None else ""
            report = BalancesChanged(RECONCILER, f"correction-{run}{self.corrections_sent}", change, now, now)
            if self._journal is not None:
                self._journal.record_report(now, RECONCILER, f"{RECONCILER}:{report.report_id}", "BalancesChanged",
                                            report)
            await self._books.send(report)
        if halt:
            ctx.trading.halt(f"reconciliation: {halt}", source="reconciler")
