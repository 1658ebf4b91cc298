"""Plain records that the metrics collector (`daemon.metrics`) reads at scrape time.

Nothing here imports prometheus-client, so the hot path and the actors may write to these freely: the venue
ports' round-trip times and errors (kept by thin wrappers the composition root puts around the ports), and
the reconciler's record of its runs.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from daemon.domain.messages import AccountReport, OrderStatusReport, SubmitOrder
from daemon.errors import FatalVenueError, NonRetryableVenueError, RetryableVenueError, VenueError
from daemon.ports import ChainVenue, ExchangeVenue

T = TypeVar("T")

# Venue round trips, seconds: from 50 µs (a simulated venue) to 30 s (a REST call running into its timeout).
VENUE_LATENCY_BUCKETS_S: tuple[float, ...] = (
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# An order the venue refused is `rejected`; the others are the project's venue error tree (daemon.errors).
ERROR_KINDS: tuple[str, ...] = ("rejected", "retryable", "non_retryable", "fatal", "other")
CHAIN_VENUE = "chain"


@dataclass(slots=True)
class LatencyRecord:
    """A histogram kept as plain counts: one per bucket of `VENUE_LATENCY_BUCKETS_S`, then +Inf."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(VENUE_LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.sum_s += seconds
        self.counts[bisect_left(VENUE_LATENCY_BUCKETS_S, seconds)] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)


def error_kind(exc: VenueError) -> str:
    if isinstance(exc, RetryableVenueError):
        return "retryable"
    if isinstance(exc, NonRetryableVenueError):
        return "non_retryable"
    if isinstance(exc, FatalVenueError):
        return "fatal"
    return "other"


class VenueStats:
    """Order and chain-call latency, and venue errors by kind, for every port wrapped through it."""

    def __init__(self) -> None:
        self.order_latency: dict[str, LatencyRecord] = {}  # exchange venue → submit_order round trips
        self.chain_latency: dict[str, LatencyRecord] = {}  # chain operation → transaction round trips
        self.errors: Counter[tuple[str, str]] = Counter()  # (venue, kind) → count

    def exchanges(self, venues: Mapping[str, ExchangeVenue]) -> dict[str, ExchangeVenue]:
        """The same exchange ports, each timed; every (venue, kind) starts at 0 so `increase()` sees the first."""
        for name in venues:
            self._known(name)
            self.order_latency.setdefault(name, LatencyRecord())
        return {name: TimedExchange(venue, self) for name, venue in venues.items()}

    def chain(self, chain: ChainVenue) -> ChainVenue:
        self._known(CHAIN_VENUE)
        return TimedChain(chain, self)

    def _known(self, venue: str) -> None:
        for kind in ERROR_KINDS:
            self.errors[(venue, kind)] += 0

    async def timed(self, record: LatencyRecord, venue: str, call: Awaitable[T]) -> T:
        """Await `call`, recording its duration and, if the venue raised, the kind of error."""
        started = time.perf_counter()
        try:
            result = await call
        except VenueError as exc:
            record.observe(time.perf_counter() - started)
            self.errors[(venue, error_kind(exc))] += 1
            raise
        record.observe(time.perf_counter() - started)
        return result


class TimedExchange:
    """An `ExchangeVenue` that records each order's round trip (submit to the venue's answer) and refusals."""

    def __init__(self, inner: ExchangeVenue, stats: VenueStats) -> None:
        self.venue = inner.venue
        self._inner = inner
        self._stats = stats
        self._latency = stats.order_latency.setdefault(inner.venue, LatencyRecord())

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        report = await self._stats.timed(self._latency, self.venue, self._inner.submit_order(order))
        if report.status == "rejected":
            self._stats.errors[(self.venue, "rejected")] += 1
        return report

    async def cancel_all_orders(self) -> int:
        return await self._inner.cancel_all_orders()

    async def fetch_account(self) -> AccountReport:
        return await self._inner.fetch_account()


class TimedChain:
    """A `ChainVenue` that records each transaction's round trip by operation, and the errors it raised."""

    def __init__(self, inner: ChainVenue, stats: VenueStats) -> None:
        self._inner = inner
        self._stats = stats

    def _timed(self, operation: str, call: Awaitable[T]) -> Awaitable[T]:
        record = self._stats.chain_latency.setdefault(operation, LatencyRecord())
        return self._stats.timed(record, CHAIN_VENUE, call)

    @property
    def transactions(self) -> int:
        return self._inner.transactions

    def oracle_rate(self) -> Decimal:
        return self._inner.oracle_rate()

    async def fetch_wallet(self) -> AccountReport:
        return await self._inner.fetch_wallet()

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None:
        await self._timed("transfer_usdt_to_cex", self._inner.transfer_usdt_to_cex(venue, amount, ref))

    async def transfer_eth_to_cex(self, venue: str, amount_eth: Decimal, ref: str) -> None:
        await self._timed("transfer_eth_to_cex", self._inner.transfer_eth_to_cex(venue, amount_eth, ref))

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal | None:
        return await self._timed("withdraw_eth_from_cex", self._inner.withdraw_eth_from_cex(venue, amount_eth, ref))

    async def withdraw_usdt_from_cex(self, venue: str, amount: Decimal, ref: str) -> Decimal | None:
        return await self._timed("withdraw_usdt_from_cex", self._inner.withdraw_usdt_from_cex(venue, amount, ref))

    async def stake(self, amount_eth: Decimal, ref: str) -> None:
        await self._timed("stake", self._inner.stake(amount_eth, ref))

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        await self._timed("atomic_leverage_entry",
                          self._inner.atomic_leverage_entry(equity_eth, supply_eth, borrow_eth, ref))

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        return await self._timed("atomic_deleverage",
                                 self._inner.atomic_deleverage(repay_eth, withdraw_eth, ref, free_eth))

    async def atomic_reduce_debt(self, repay_eth: Decimal, ref: str) -> None:
        await self._timed("atomic_reduce_debt", self._inner.atomic_reduce_debt(repay_eth, ref))

    async def sequential_leverage_entry(self, equity_eth: Decimal, target_ltv: Decimal, min_borrow_eth: Decimal,
                                        max_iterations: int | None, ref: str) -> int:
        return await self._timed("sequential_leverage_entry", self._inner.sequential_leverage_entry(
            equity_eth, target_ltv, min_borrow_eth, max_iterations, ref))

    async def sequential_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                    redeem: bool = False) -> Decimal:
        return await self._timed("sequential_deleverage",
                                 self._inner.sequential_deleverage(repay_eth, withdraw_eth, ref, redeem))

    async def supply(self, asset: str, amount: Decimal, ref: str) -> None:
        await self._timed("supply", self._inner.supply(asset, amount, ref))

    async def withdraw(self, asset: str, amount: Decimal, ref: str) -> None:
        await self._timed("withdraw", self._inner.withdraw(asset, amount, ref))

    async def swap_lst_to_eth(self, amount_lst: Decimal, ref: str) -> Decimal:
        return await self._timed("swap_lst_to_eth", self._inner.swap_lst_to_eth(amount_lst, ref))

    async def redeem_lst(self, amount_lst: Decimal, ref: str) -> Decimal:
        return await self._timed("redeem_lst", self._inner.redeem_lst(amount_lst, ref))

    async def swap_eth_to_usdt(self, amount_eth: Decimal, ref: str) -> None:
        await self._timed("swap_eth_to_usdt", self._inner.swap_eth_to_usdt(amount_eth, ref))


@dataclass(slots=True)
class ReconciliationRecord:
    """What the reconciler records after each run: our books against the venues' own balances.

    Until the first run completes, `runs` is 0 and the exported age counts from `started_ns` (start-up), so an
    alert on the age says, truthfully, that the books were never checked.
    """

    started_ns: int
    runs: int = 0
    failures: int = 0
    last_ns: int | None = None
    drift_usd: dict[str, Decimal] = field(default_factory=dict)  # venue → |books − venue| in USD, last run

    def completed(self, ts_ns: int, drift_usd: Iterable[tuple[str, Decimal]]) -> None:
        self.runs += 1
        self.last_ns = ts_ns
        self.drift_usd = dict(drift_usd)

    def failed(self) -> None:
        self.failures += 1

    def age_s(self, now_ns: int) -> float:
        return (now_ns - (self.last_ns if self.last_ns is not None else self.started_ns)) / 1e9
