"""The channels that feed the positions API: they copy, stamp and conflate, and never make a producer wait.

* `ReportTap` is the books' own inbox (`positions.reports`, lossless, unchanged for its two ends) that also
  hands the API a numbered copy of everything enqueued, on a channel that drops the oldest on overflow.
* `SnapshotTap` subscribes the API to the positions and risk fan-outs and stamps each snapshot with how many
  reports the books had taken when it was published: the positions actor books a report and publishes its
  snapshot in one step, so the stamp says exactly which reports a snapshot contains (`daemon.api.tracker`).

Both stamp the wall clock (`time.time_ns`) as well: the only use of it is to measure how long a fill takes to
reach a WebSocket client, which a benchmark in another process compares with its own wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.api.tracker import TappedReport
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.messages import BalancesChanged, OrderFilled, PortfolioSnapshotted, RiskAssessed

Report = OrderFilled | BalancesChanged
Snapshot = PortfolioSnapshotted | RiskAssessed


@dataclass(frozen=True, slots=True)
class Stamped:
    item: Snapshot
    books_taken: int  # reports the books had taken off their inbox when `item` was published
    wall_ns: int

    @property
    def key(self) -> str:
        return self.item.key


def _report_key(report: TappedReport) -> int:
    return report.key


def _stamped_key(stamped: Stamped) -> str:
    return stamped.key


class ReportTap(LosslessChannel[Report]):
    """A lossless channel that publishes a numbered copy of each item it enqueues (never waiting on it)."""

    __slots__ = ("_copies", "enqueued")

    def __init__(self, name: str, capacity: int, copies: ConflatingChannel[TappedReport]) -> None:
        super().__init__(name, capacity)
        self._copies = copies
        self.enqueued = 0

    def send_nowait(self, item: Report) -> None:
        super().send_nowait(item)  # raises when full or closed: then nothing was enqueued, nothing is copied
        self.enqueued += 1
        self._copies.publish(TappedReport(self.enqueued, item, time.time_ns()))


class SnapshotTap(ConflatingChannel[Stamped]):
    """A fan-out subscriber that stamps what it is given (the latest per key wins, as for every reader)."""

    __slots__ = ("_books_taken",)

    def __init__(self, name: str, capacity: int, books_taken: Callable[[], int]) -> None:
        super().__init__(name, capacity, _stamped_key)
        self._books_taken = books_taken

    def publish(self, item: object) -> None:
        if not isinstance(item, Stamped):
            if not isinstance(item, PortfolioSnapshotted | RiskAssessed):
                raise TypeError(f"{self.name} takes portfolio snapshots and risk assessments, not "
                                f"{type(item).__name__}")
            item = Stamped(item, self._books_taken(), time.time_ns())
        super().publish(item)

    send_nowait = publish


class ApiTaps:
    """The API's inboxes, wired by the composition root: `tap` replaces the books' inbox, `snapshots` joins
    the positions and risk fan-outs, `market` the market data fan-out."""

    def __init__(self, reports_capacity: int, snapshot_keys: int, market: ConflatingChannel[Any]) -> None:
        self.reports = ConflatingChannel[TappedReport]("api.reports", reports_capacity, _report_key)
        self.snapshots = SnapshotTap("api.snapshots", snapshot_keys, self._books_taken)
        self.market = market
        self.books: ReportTap | None = None

    def tap(self, books: LosslessChannel[Report]) -> ReportTap:
        """A channel of the same name and capacity as `books`, to be used in its place by both its ends."""
        stats = books.statistics()
        self.books = ReportTap(stats.name, stats.capacity, self.reports)
        return self.books

    def _books_taken(self) -> int:
        return self.books.statistics().received if self.books is not None else 0

    def channels(self) -> dict[str, Any]:
        """Every channel made here, by name, for the metrics (the tapped books' inbox included)."""
        out: dict[str, Any] = {c.name: c for c in (self.reports, self.snapshots, self.market)}
        if self.books is not None:
            out[self.books.name] = self.books
        return out
