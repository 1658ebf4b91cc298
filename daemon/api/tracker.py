"""Which position updates to stream, from the books' reports and snapshots. Pure state, no I/O.

The positions actor books each venue report and then publishes a snapshot; the API receives both, each on
its own non-blocking tap (`daemon.api.taps`): the report numbered by its place in the books' inbox, the
snapshot stamped with how many of those the books had taken when it was published. So a report is streamed
with the first snapshot that contains it — the position a client sees always includes the fill it is shown
with. For every holding (see `daemon.api.views`):

* a report that moved it → one `fill` (a trade) or `position_change` (any other balance change) per report;
* a change in what the books hold without a report seen (a report dropped on overload) → `position_change`;
* otherwise a price-only move → `price_update`, but only once the unrealized P&L has moved more than the
  threshold since the last update sent for it (a slow drift therefore still gets through).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from daemon.api.views import Holding, Json, change_json, fill_json, iso, position_json, report_symbols
from daemon.domain.messages import BalancesChanged, OrderFilled

FILL, CHANGE, PRICE = "fill", "position_change", "price_update"
MAX_PENDING = 10_000  # reports waiting for a snapshot; beyond this (books that stopped publishing) the oldest go


@dataclass(frozen=True, slots=True)
class TappedReport:
    """A copy of what the books were sent: `seq` is its place in their inbox (1-based), `wall_ns` when."""

    seq: int
    report: OrderFilled | BalancesChanged
    wall_ns: int

    @property
    def key(self) -> int:
        return self.seq  # distinct per report: the tap's channel only ever drops, on overflow, never merges


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    event_type: str  # fill | position_change | price_update
    symbol: str
    holding: Holding | None  # None: the position is gone
    report: TappedReport | None
    ts_ns: int  # market time: the report's, or the snapshot's
    origin_wall_ns: int  # when the daemon saw the cause (the report, or the snapshot): for latency

    def to_json(self, last_updated_ns: int | None) -> Json:
        report = self.report.report if self.report is not None else None
        return {
            "type": "position_update", "event_type": self.event_type, "symbol": self.symbol,
            "timestamp": iso(self.ts_ns),
            "position": position_json(self.holding, last_updated_ns) if self.holding is not None else None,
            "fill": fill_json(report) if isinstance(report, OrderFilled) else None,
            "change": change_json(report) if isinstance(report, BalancesChanged) else None,
            "origin_ns": self.origin_wall_ns,
        }


class PositionTracker:
    """Remembers what was last streamed per holding, and the reports not yet seen in a snapshot."""

    def __init__(self, price_threshold: Decimal, lending_venue: str) -> None:
        self._threshold = price_threshold
        self._lending_venue = lending_venue
        self._sent: dict[str, Holding] = {}
        self._pending: list[TappedReport] = []
        self.last_changed_ns: dict[str, int] = {}  # symbol → market time of its last position change

    def add(self, report: TappedReport) -> None:
        if len(self._pending) >= MAX_PENDING:
            del self._pending[0]
        self._pending.append(report)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def update(self, current: Mapping[str, Holding], books_taken: int, ts_ns: int, wall_ns: int
               ) -> list[PositionUpdate]:
        """The updates a snapshot brings: `current` its holdings, `books_taken` its stamp."""
        included = [r for r in self._pending if r.seq <= books_taken]
        self._pending = [r for r in self._pending if r.seq > books_taken]
        moved_by: dict[str, list[TappedReport]] = {}
        for r in included:
            for symbol in report_symbols(r.report, self._lending_venue):
                moved_by.setdefault(symbol, []).append(r)
        updates: list[PositionUpdate] = []
        for symbol in dict.fromkeys([*self._sent, *current, *moved_by]):
            old, new = self._sent.get(symbol), current.get(symbol)
            reports = moved_by.get(symbol, [])
            if reports or _booked(old) != _booked(new):
                self.last_changed_ns[symbol] = max((r.report.ts_event for r in reports), default=ts_ns)
                updates += [PositionUpdate(FILL if isinstance(r.report, OrderFilled) else CHANGE, symbol, new, r,
                                           r.report.ts_event, r.wall_ns) for r in reports] \
                    or [PositionUpdate(CHANGE, symbol, new, None, ts_ns, wall_ns)]
            elif not self._moved(old, new):
                continue
            else:
                updates.append(PositionUpdate(PRICE, symbol, new, None, ts_ns, wall_ns))
            if new is None:
                self._sent.pop(symbol, None)
                self.last_changed_ns.pop(symbol, None)
            else:
                self._sent[symbol] = new
        return updates

    def _moved(self, old: Holding | None, new: Holding | None) -> bool:
        if old is None or new is None:
            return False
        if old.unrealized_pnl is None or new.unrealized_pnl is None:
            return (old.unrealized_pnl is None) != (new.unrealized_pnl is None)  # a mark arrived, or was lost
        return abs(new.unrealized_pnl - old.unrealized_pnl) > self._threshold


def _booked(h: Holding | None) -> tuple[Decimal, ...] | None:
    return h.booked if h is not None else None
