"""A time series with the only lookup a backtest may use: the last value at or before t, within a maximum age.

Never a later row (the seed project's `asof` fell back to the first row, which gave the OKX bug and a one-hour
look-ahead on the LST oracle). A value too old, or no value yet, raises `StaleData` naming the series, the
instant and the last value's time: the caller decides, explicitly, whether that is fatal or a proxy applies.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.data.timeparse import NS


class StaleData(LookupError):
    """No value for `series` at or before `t_ns` within the allowed age."""

    def __init__(self, series: str, t_ns: int, last_ns: int | None, max_age_s: float, *,
                 first_ns: int | None = None, at_end: bool = False) -> None:
        self.series, self.t_ns, self.last_ns, self.max_age_s = series, t_ns, last_ns, max_age_s
        if last_ns is not None:
            # Past the last row the instant is outside the recorded history, not inside a gap: say which.
            last = f"last value at {iso(last_ns)}" + (", where its history ends" if at_end else "")
        else:
            last = "no value before it" + (f": its history begins at {iso(first_ns)}" if first_ns is not None else "")
        super().__init__(f"{series}: no value at {iso(t_ns)} within {max_age_s / 3600:g} h ({last})")


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class Gap:
    start_ns: int  # the last timestamp before the gap
    end_ns: int  # the first timestamp after it

    @property
    def hours(self) -> float:
        return (self.end_ns - self.start_ns) / NS / 3600


class Series:
    """Sorted, de-duplicated values by time. Of a timestamp's duplicated rows the first wins and the rest are
    counted; where they disagree, every distinct value is also kept in `conflicts` (timestamp → values in file
    order) so that the reader can decide which is right (`daemon.data.bars`: OKX's duplicated funding rows)."""

    __slots__ = ("conflicts", "duplicates", "name", "ts", "values")

    def __init__(self, name: str, rows: Iterable[tuple[int, float]]) -> None:
        self.name = name
        ordered = sorted(rows, key=lambda r: r[0])
        self.ts = array("q")
        self.values = array("d")
        self.duplicates = 0
        self.conflicts: dict[int, tuple[float, ...]] = {}
        for t, v in ordered:
            if self.ts and self.ts[-1] == t:
                self.duplicates += 1
                seen = self.conflicts.get(t, (self.values[-1],))
                if v not in seen:
                    self.conflicts[t] = (*seen, v)
                continue
            self.ts.append(t)
            self.values.append(v)

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def first_ns(self) -> int:
        return self.ts[0]

    @property
    def last_ns(self) -> int:
        return self.ts[-1]

    def at(self, t_ns: int, max_age_s: float) -> float:
        """The last value at or before `t_ns`, if it is at most `max_age_s` old; else `StaleData`."""
        i = bisect_right(self.ts, t_ns) - 1
        if i < 0:
            raise StaleData(self.name, t_ns, None, max_age_s, first_ns=self.ts[0] if self.ts else None)
        if t_ns - self.ts[i] > max_age_s * NS:
            raise StaleData(self.name, t_ns, self.ts[i], max_age_s, at_end=i == len(self.ts) - 1)
        return self.values[i]

    def gaps(self, step_s: float) -> list[Gap]:
        """Intervals longer than the series' cadence `step_s` with no row."""
        limit = step_s * NS * 1.5
        return [Gap(a, b) for a, b in zip(self.ts, self.ts[1:], strict=False) if b - a > limit]
