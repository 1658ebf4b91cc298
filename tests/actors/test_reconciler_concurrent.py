"""The reconciler actor under the real supervisor: the venues are read concurrently, a failure of one still fails the
run as before, and a transfer in transit is not called a drift."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

import anyio
import anyio.lowlevel
import pytest

from actors.reconciler import ReconcilerActor
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.ids import VenueId
from daemon.domain.ledger import ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import (
    AccountReport,
    BalancesChanged,
    OrderFilled,
    OrderStatusReport,
    PortfolioSnapshotted,
    SubmitOrder,
    TradingState,
)
from daemon.domain.reconcile import Tolerance
from daemon.domain.transit import Allowance, TransitBook
from daemon.errors import RetryableVenueError
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.telemetry import ReconciliationRecord
from daemon.trading import TradingStateCell

D = Decimal
MARKET = MarketState(0, {"ETH": D(3000)})
VENUES = ("binance", "bybit", "okx")


class Venue:
    """A venue whose account read waits until every venue's read has started: read one after another, the first
    would wait for ever (the test's `fail_after` then fails it); read concurrently, all return."""

    def __init__(self, name: str, usdt: Decimal, started: dict[str, anyio.Event], fail: bool = False) -> None:
        self.venue = VenueId(name)
        self.name, self.usdt, self._started, self.fail = name, usdt, started, fail
        self.reads = 0

    async def fetch_account(self) -> AccountReport:
        self._started[self.name].set()
        for event in self._started.values():
            await event.wait()
        self.reads += 1
        if self.fail:
            raise RetryableVenueError(f"{self.name}: not available")
        return AccountReport(self.name, (("USDT", self.usdt),), (), None, 0, 0)

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        raise NotImplementedError

    async def cancel_all_orders(self) -> int:
        return 0


@dataclass
class Rig:
    actor: ReconcilerActor
    snapshots: ConflatingChannel[PortfolioSnapshotted]
    books: LosslessChannel[OrderFilled | BalancesChanged]
    record: ReconciliationRecord
    venues: dict[str, Venue]


@asynccontextmanager
async def running(venues: dict[str, Venue], in_transit: list[Allowance] | None = None) -> AsyncIterator[Rig]:
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("reconciler.snapshots", 4, lambda s: s.key)
    books: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.reports", 16)
    record = ReconciliationRecord(0)
    moving = None if in_transit is None else (lambda now_ns: in_transit)
    actor = ReconcilerActor(snapshots, venues, None, books, lambda: MARKET, record, 3600, D(1000),
                            in_transit=moving)
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=TradingStateCell(), policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(actor, snapshots, books, record, venues)
        tg.cancel_scope.cancel()


def snapshot(ledger: Ledger) -> PortfolioSnapshotted:
    return PortfolioSnapshotted((), (), D(3000), D(0), D(0), 0, 1, 1, ledger=ledger.snapshot())


def books(**usdt: Decimal) -> Ledger:
    ledger = Ledger(VENUES)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(v, "USDT", a) for v, a in usdt.items())))
    return ledger


def venues(usdt: dict[str, Decimal], fail: str = "") -> dict[str, Venue]:
    started = {v: anyio.Event() for v in usdt}
    return {v: Venue(v, a, started, fail=v == fail) for v, a in usdt.items()}


async def reconciled(rig: Rig, ledger: Ledger) -> None:
    with anyio.fail_after(5):
        rig.actor.request()
        waiting = anyio.Event()

        async def wait() -> None:
            await rig.actor.next_run()
            waiting.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.lowlevel.checkpoint()
            rig.snapshots.publish(snapshot(ledger))
            await waiting.wait()


@pytest.mark.asyncio
async def test_every_venue_is_read_concurrently_and_books_that_agree_are_clean() -> None:
    usdt = {"binance": D(100), "bybit": D(200), "okx": D(300)}
    async with running(venues(usdt)) as rig:
        await reconciled(rig, books(**usdt))
        assert rig.actor.last is not None and rig.actor.last.clean
        assert rig.actor.last.accounts == VENUES  # in venue order, whatever order the reads finished in
        assert [v.reads for v in rig.venues.values()] == [1, 1, 1] and rig.record.runs == 1


@pytest.mark.asyncio
async def test_a_venue_that_fails_fails_the_run_after_every_read_has_finished() -> None:
    usdt = {"binance": D(100), "bybit": D(200), "okx": D(300)}
    async with running(venues(usdt, fail="bybit")) as rig:
        await reconciled(rig, books(**usdt))
        assert rig.record.failures == 1 and rig.record.runs == 0 and rig.actor.last is None
        assert [v.reads for v in rig.venues.values()] == [1, 1, 1]  # none left running, none cancelled


@pytest.mark.asyncio
async def test_a_transfer_in_transit_is_not_a_drift_and_is_never_corrected() -> None:
    # Binance debited 50 for a withdrawal to OKX our books have not booked yet; OKX already credited the 47.
    book = TransitBook()
    book.request("binance:w1", "USDT", "binance", "okx", D(50), D(50))
    async with running(venues({"binance": D(950), "okx": D(1047)}), list(book.allowances(0))) as rig:
        await reconciled(rig, books(binance=D(1000), okx=D(1000)))
        result = rig.actor.last
        assert result is not None and result.clean
        assert sorted((d.account, d.delta) for d in result.in_transit) == [("binance", D(-50)), ("okx", D(47))]
        assert rig.actor.corrections_sent == 0 and not len(rig.books)


@pytest.mark.asyncio
async def test_a_difference_beyond_what_is_in_transit_is_still_a_drift() -> None:
    book = TransitBook()
    book.request("binance:w1", "USDT", "binance", "okx", D(50), D(50))
    async with running(venues({"binance": D(940), "okx": D(1000)}), list(book.allowances(0))) as rig:
        await reconciled(rig, books(binance=D(1000), okx=D(1000)))
        result = rig.actor.last
        assert result is not None and [(d.account, d.delta) for d in result.drifts] == [("binance", D(-60))]
        assert rig.actor.corrections_sent == 1


# --- live counting, tolerance and the positions cadence -------------------------------------------------------------


class CountingVenue:
    """A live venue as the reconciler reads it: its account and how many reports touching it were published."""

    def __init__(self, name: str, usdt: Decimal, perp: Decimal = Decimal(0), sent: int = 0) -> None:
        self.venue = VenueId(name)
        self.name, self.usdt, self.perp, self.sent = name, usdt, perp, sent
        self.reads = 0

    async def fetch_account(self) -> AccountReport:
        self.reads += 1
        return AccountReport(self.name, (("USDT", self.usdt),), (("ETHUSDT", self.perp),) if self.perp else (),
                             self.sent, 0, 0)


@asynccontextmanager
async def live(venues: dict[str, CountingVenue], **kwargs: object) -> AsyncIterator[tuple[Rig, TradingStateCell]]:
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("reconciler.snapshots", 4, lambda s: s.key)
    books: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.reports", 16)
    record = ReconciliationRecord(0)
    actor = ReconcilerActor(snapshots, venues, None, books, lambda: MARKET, record, 3600, D(1000),  # type: ignore[arg-type]
                            **kwargs)  # type: ignore[arg-type]
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=trading, policy=RestartPolicy(),
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(actor, snapshots, books, record, {}), trading
        tg.cancel_scope.cancel()


def counted(ledger: Ledger, ts_s: int, booked: dict[str, int]) -> PortfolioSnapshotted:
    return PortfolioSnapshotted((), (), D(3000), D(0), D(0), sum(booked.values()), ts_s * 10**9, 1,
                                ledger=ledger.snapshot(), booked_by_account=tuple(sorted(booked.items())))


async def settled(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0.005)


@pytest.mark.asyncio
async def test_an_account_is_compared_once_its_reports_and_our_own_correction_are_booked() -> None:
    venue = CountingVenue("binance", D(1040), sent=2)
    ledger = books(binance=D(1000))
    async with live({"binance": venue}) as (rig, _):
        rig.snapshots.publish(counted(ledger, 1, {"binance": 1}))  # one of the venue's two reports in flight
        await settled(lambda: rig.actor.deferrals == 1)
        assert rig.record.runs == 0
        rig.snapshots.publish(counted(ledger, 2, {"binance": 2}))
        await settled(lambda: rig.record.runs == 1)
        assert rig.actor.last is not None and [(d.holding, d.delta) for d in rig.actor.last.drifts] == [("USDT", D(40))]
        assert rig.actor.corrections_sent == 1 and len(rig.books) == 1
        # Asked again before the correction is booked: the run waits for it, rather than correcting twice.
        rig.actor.request()
        rig.snapshots.publish(counted(ledger, 3, {"binance": 2}))
        await settled(lambda: rig.actor.deferrals == 1)
        ledger.apply(rig.books.receive_nowait().change)  # type: ignore[union-attr]
        rig.snapshots.publish(counted(ledger, 4, {"binance": 3}))
        await settled(lambda: rig.record.runs == 2)
        assert rig.actor.last.clean and rig.actor.corrections_sent == 1


@pytest.mark.asyncio
async def test_a_difference_inside_the_tolerance_is_booked_without_a_drift() -> None:
    venue = CountingVenue("binance", D("1000.3"))
    async with live({"binance": venue}, tolerance=Tolerance({"USDT": D(1)}, D(0))) as (rig, trading):
        rig.snapshots.publish(counted(books(binance=D(1000)), 1, {}))
        await settled(lambda: rig.record.runs == 1)
        result = rig.actor.last
        assert result is not None and result.clean and [d.delta for d in result.tolerated] == [D("0.3")]
        assert rig.record.drift_usd == {"binance": 0} and trading.state is TradingState.ACTIVE
        change = rig.books.receive_nowait()
        assert isinstance(change, BalancesChanged) and change.change.tokens == (TokenChange("binance", "USDT",
                                                                                            D("0.3")),)


@pytest.mark.asyncio
async def test_positions_are_compared_between_full_runs_and_a_perp_that_differs_halts() -> None:
    venue = CountingVenue("binance", D(1000), perp=D(-1))
    ledger = books(binance=D(1000))
    ledger.apply(ChangeSet(Reason.TRADE_EXECUTED, 0, (), (PerpChange("binance", "ETHUSDT", D(-1), D(3000)),)))
    async with live({"binance": venue}, positions_interval_s=60) as (rig, trading):
        rig.snapshots.publish(counted(ledger, 1, {}))  # the start-up run
        await settled(lambda: rig.record.runs == 1)
        venue.usdt = D(990)  # a balance drift waits for the next full run...
        rig.snapshots.publish(counted(ledger, 30, {}))
        rig.snapshots.publish(counted(ledger, 61, {}))
        await settled(lambda: venue.reads == 2)
        assert rig.actor.last_positions_ts == 61 * 10**9 and rig.record.runs == 1 and rig.actor.corrections_sent == 0
        venue.perp = D("-0.9")  # ...a perp size that differs does not
        rig.snapshots.publish(counted(ledger, 125, {}))
        await settled(lambda: trading.state is TradingState.HALTED)
        assert "perp size differs" in trading.reason and rig.actor.corrections_sent == 0 and venue.reads == 3
