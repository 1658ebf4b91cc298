"""The run's own files as the report's series: `hourly.csv` read by column name (a column a run does not write
is simply absent), `instructions.csv`, and what the charts derive from them — daily closes and returns,
rolling figures, month-end returns, and hourly series thinned to a few thousand points.

Thinning keeps what matters in each chart rather than every n-th hour: a level (NAV, a cumulative P&L) keeps its
last value in each bucket; a risk reading keeps its worst (the lowest health factor or margin ratio, the highest
LTV); a band chart (delta) keeps each bucket's low and high. A 16-month run is 11,856 hours: drawn raw, the page
would carry 10^5 points and take seconds to open.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon.domain.statistics import daily_closes, daily_returns

MAX_POINTS = 2000  # per trace: enough for a 1,600-pixel-wide chart, and a page that opens at once
DAYS_PER_YEAR = 365  # crypto trades every day: daily figures annualise over 365 days, not 252
ROLLING_DAYS = 30

Column = list[float | None]


@dataclass(frozen=True, slots=True)
class Hourly:
    """`hourly.csv` by column: `ts` as written ("YYYY-MM-DD HH:MM", each hour's close), every other column as
    floats (None where empty or infinite)."""

    ts: list[str]
    columns: dict[str, Column]

    def has(self, name: str) -> bool:
        return name in self.columns and any(v is not None for v in self.columns[name])

    def col(self, name: str) -> Column:
        return self.columns.get(name) or [None] * len(self.ts)

    def prefixed(self, prefix: str) -> dict[str, Column]:
        """Columns named prefix + suffix (one per venue), by suffix, those with at least one value."""
        return {k.removeprefix(prefix): v for k, v in self.columns.items()
                if k.startswith(prefix) and any(x is not None for x in v)}


def read_hourly(path: Path) -> Hourly:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return Hourly([], {})
        rows = list(reader)
    if not rows:
        return Hourly([], {name: [] for name in header[1:]})
    # Column by column (the recorder writes every row in full): a comprehension per column, without a call per
    # cell, is what keeps 11,856 hours × 30 columns to a fraction of a second.
    cells = list(zip(*rows, strict=True))
    columns = {name: [None if c == "" or c == "inf" else float(c) for c in column]
               for name, column in zip(header[1:], cells[1:], strict=True)}
    return Hourly(list(cells[0]), columns)


@dataclass(frozen=True, slots=True)
class InstructionRow:
    ts: str  # the hour it was issued in, as `hourly.csv` labels it
    instruction_id: str
    change: str
    type: str
    venue: str
    amount_usd: float
    reason: str


def read_instructions(path: Path) -> list[InstructionRow]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [InstructionRow(r["ts"], r["instruction_id"], r["change"], r["type"], r["venue"],
                               float(r["amount_usd"] or 0), r["reason"]) for r in csv.DictReader(f)]


# --- thinning -------------------------------------------------------------------------------------------


def bucket_size(n: int, max_points: int = MAX_POINTS) -> int:
    return max(1, math.ceil(n / max_points))


def _buckets(n: int, size: int) -> range:
    return range(0, n, size)


def thin_ts(ts: Sequence[str], size: int) -> list[str]:
    """Each bucket's label: its last hour (the value a level holds at that time)."""
    return [ts[min(i + size, len(ts)) - 1] for i in _buckets(len(ts), size)]


def _reduce(values: Sequence[float | None], size: int, pick: Callable[[list[float]], float]) -> Column:
    out: Column = []
    for i in _buckets(len(values), size):
        chunk = [v for v in values[i:i + size] if v is not None]
        out.append(pick(chunk) if chunk else None)
    return out


def thin_last(values: Sequence[float | None], size: int) -> Column:
    return _reduce(values, size, lambda c: c[-1])


def thin_min(values: Sequence[float | None], size: int) -> Column:
    return _reduce(values, size, min)


def thin_max(values: Sequence[float | None], size: int) -> Column:
    return _reduce(values, size, max)


def cumulative(values: Sequence[float | None]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v or 0.0
        out.append(total)
    return out


def drawdown(navs: Sequence[float | None]) -> Column:
    """Fraction below the running peak (≤ 0), hour by hour."""
    peak, out = -math.inf, list[float | None]()
    for v in navs:
        if v is None:
            out.append(None)
            continue
        peak = max(peak, v)
        out.append(v / peak - 1 if peak > 0 else 0.0)
    return out


# --- daily --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Daily:
    """Each UTC day's last NAV (hours labelled by their close, as a daily resample of `hourly.csv` groups
    them) and its return on the day before; the first day's on the initial capital."""

    dates: list[str]
    navs: list[float]
    returns: list[float]


def daily(hourly: Hourly, capital: float) -> Daily:
    """Daily closes and returns by the statistics' own convention (`daemon.domain.statistics.daily_closes`: a
    NAV at 00:00 closes the day before), so the page's daily charts and its statistics table agree."""
    hours = [(_unix(ts), nav) for ts, nav in zip(hourly.ts, hourly.col("nav"), strict=True) if nav is not None]
    if not hours:
        return Daily([], [], [])
    closes = daily_closes(hours)
    returns = daily_returns(hours, capital)
    return Daily([d.isoformat() for d, _ in closes], [n for _, n in closes], [r for _, r in returns])


def _unix(ts: str) -> int:
    """`hourly.csv`'s "YYYY-MM-DD HH:MM" (UTC) as unix seconds."""
    return int(datetime.fromisoformat(ts[:16]).replace(tzinfo=UTC).timestamp())  # strptime: 5× slower


def rolling(returns: Sequence[float], window: int = ROLLING_DAYS) -> tuple[Column, Column]:
    """(annualised volatility, annualised Sharpe at a zero risk-free rate) over each trailing `window` days;
    None until a full window is in."""
    vols: Column = []
    sharpes: Column = []
    for i in range(len(returns)):
        if i + 1 < window:
            vols.append(None)
            sharpes.append(None)
            continue
        chunk = returns[i + 1 - window:i + 1]
        mean = sum(chunk) / window
        sd = math.sqrt(sum((r - mean) ** 2 for r in chunk) / (window - 1))
        vols.append(sd * math.sqrt(DAYS_PER_YEAR))
        sharpes.append(mean / sd * math.sqrt(DAYS_PER_YEAR) if sd > 0 else None)
    return vols, sharpes


def monthly_returns(days: Daily, capital: float) -> dict[str, float]:
    """"YYYY-MM" → the month's return, month-end NAV on the previous month-end's (the first on the capital)."""
    ends: dict[str, float] = {}
    for date, nav in zip(days.dates, days.navs, strict=True):
        ends[date[:7]] = nav
    out, previous = {}, capital
    for month, nav in ends.items():
        out[month] = nav / previous - 1 if previous else 0.0
        previous = nav
    return out


def trailing_sum(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total)
    return out
