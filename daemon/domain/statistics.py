"""Performance statistics of a run, on daily returns, as a quant computes them (pure).

Every figure here agrees with quantstats (0.0.86, `periods=365`, `rf=0`) fed the same daily returns; the
conventions below are the ones that make the daily returns, and they are stated because every tearsheet makes
them silently:

- **The day's close.** A NAV stamped `ts` (unix seconds, as in `hourly.csv`) is the book's value at that
  instant: the bar's open prices, its funding settled. A UTC day D closes at D+1 00:00, the daily mark of
  crypto venues, so the NAV stamped 00:00 is the close of the day before, and D's close is its last NAV in
  (D 00:00, D+1 00:00]: `resample("D", closed="right", label="left").last()` in pandas. The run's first NAV
  (its entry, at the start instant) opens the first day even when stamped 00:00. So the common history window
  (2024-05-12 01:00 → 2025-09-18 00:00, 11,856 hours) is 494 days, as many as it spans, and a window from
  00:00 to 00:00 as many days as it has: neither end makes a stub day.
- **The first day's return is from the initial capital**, so the entry costs and the first hours count; the
  capital is also the first high-water mark, so a run that starts by losing is in drawdown from its start.
- **Partial days count as days.** A window that starts at 01:00 has a 23-hour first day, one that stops
  before a 00:00 bar a shorter last day; each is one day of the calendar span, with whatever hours it had. A
  calendar day with no NAV inside the span (a gap in the data) carries the previous close: a zero return.
- **365 days a year**: crypto trades every calendar day, so a year is 365 daily returns (quantstats' default
  of 252 trading days would overstate a crypto book's volatility and understate nothing else honestly).
  Risk-free rate 0: a USDT or ETH share class has no agreed risk-free rate, and the lending benchmark is
  reported beside the run, not subtracted inside its ratios.
- **CAGR** over the calendar span: `(final / capital) ** (365 / days) - 1`, days counted first to last day
  inclusive (quantstats' `returns.count() / periods` on one return a day). A NAV at or below zero is −100 %.
- **Volatility** `std(daily, ddof=1) · √365`; **Sharpe** `mean / std · √365`; **Sortino** `mean / downside ·
  √365` with `downside = √(Σ r² over losing days / all days)` (quantstats, after Red Rock Capital's paper);
  **Calmar** `CAGR / max drawdown depth`.
- **Undefined is null, not 0.** A ratio whose denominator is zero (a flat NAV, no losing day, no drawdown) or
  that needs a dispersion from fewer than two days is `None` (`null` in `summary.json`): 0 would read as "no
  excess return", which a book that rose every day did not earn. quantstats gives NaN there. A standard
  deviation below `ZERO_STD` (float noise on a constant return) counts as zero.
- **Drawdowns** are episodes of closes below the running high-water mark, as quantstats' `drawdown_details`:
  `depth` is the fall from the peak as a positive fraction (0.02 = 2 % below), `peak` the date of the close
  that set the high-water mark (the first day's date when it is the initial capital), `trough` the lowest close
  (the first, if repeated), `recovery` the first close back at or above the peak (`None` while under water),
  `duration_days` the days under water (closes below the peak: quantstats' `days`; peak to recovery is one
  more). The worst five are the five deepest episodes, which never overlap by construction.
- **Win rate** is winning days over days with a non-zero return (quantstats: a flat day is neither).
- The hourly path's own worst peak-to-trough, which daily closes smooth away, is kept beside them as
  `max_drawdown_hourly` (the drawdown breaker acts on hourly NAV, so its levels compare with that one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAYS_PER_YEAR = 365  # crypto trades every calendar day
ZERO_STD = 1e-12  # a daily standard deviation below this is float noise on a constant return
WORST_DRAWDOWNS = 5
FRACTION_PLACES = 6  # returns, depths, CAGR, volatility in summary.json
RATIO_PLACES = 4  # Sharpe, Sortino, Calmar


class StatisticsError(ValueError):
    """Inputs that have no statistics: a non-positive capital, hours out of order."""


@dataclass(frozen=True, slots=True)
class Drawdown:
    depth: float  # fall from the peak, a positive fraction of it
    peak: date
    trough: date
    recovery: date | None  # first close back at or above the peak; None while still under water
    duration_days: int  # days under water (closes below the peak)

    def to_dict(self) -> dict[str, Any]:
        return {"depth": _round(self.depth, FRACTION_PLACES), "peak": self.peak.isoformat(),
                "trough": self.trough.isoformat(),
                "recovery": self.recovery.isoformat() if self.recovery else None,
                "duration_days": self.duration_days}


NO_DRAWDOWN: dict[str, Any] = {"depth": 0.0, "peak": None, "trough": None, "recovery": None, "duration_days": 0}


@dataclass(frozen=True, slots=True)
class HourlyDrawdown:
    depth: float
    peak: int  # unix seconds of the hour that set the high-water mark (the first hour's for the capital)
    trough: int

    def to_dict(self) -> dict[str, Any]:
        return {"depth": _round(self.depth, FRACTION_PLACES), "peak": _hour(self.peak), "trough": _hour(self.trough)}


@dataclass(frozen=True, slots=True)
class Statistics:
    days: int
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: Drawdown | None  # None when the NAV never closed below its high-water mark
    worst_drawdowns: tuple[Drawdown, ...]  # deepest first, at most WORST_DRAWDOWNS
    monthly_returns: dict[str, float]  # "YYYY-MM" → compounded daily returns of that month
    yearly_returns: dict[str, float]  # "YYYY" → likewise
    best_day: float | None
    worst_day: float | None
    win_rate_days: float | None
    max_drawdown_hourly: HourlyDrawdown | None

    def to_dict(self) -> dict[str, Any]:
        """The `statistics` object of summary.json: fractions (not %), ISO dates, null where undefined."""
        return {
            "days": self.days, "cagr": _round(self.cagr, FRACTION_PLACES),
            "volatility": _round(self.volatility, FRACTION_PLACES), "sharpe": _round(self.sharpe, RATIO_PLACES),
            "sortino": _round(self.sortino, RATIO_PLACES), "calmar": _round(self.calmar, RATIO_PLACES),
            "max_drawdown": self.max_drawdown.to_dict() if self.max_drawdown else dict(NO_DRAWDOWN),
            "worst_drawdowns": [d.to_dict() for d in self.worst_drawdowns],
            "monthly_returns": {k: _round(v, FRACTION_PLACES) for k, v in self.monthly_returns.items()},
            "yearly_returns": {k: _round(v, FRACTION_PLACES) for k, v in self.yearly_returns.items()},
            "best_day": _round(self.best_day, FRACTION_PLACES), "worst_day": _round(self.worst_day, FRACTION_PLACES),
            "win_rate_days": _round(self.win_rate_days, FRACTION_PLACES),
            "max_drawdown_hourly": self.max_drawdown_hourly.to_dict() if self.max_drawdown_hourly
            else {"depth": 0.0, "peak": None, "trough": None},
            "conventions": "daily closes at 00:00 UTC (the day's last NAV up to the next midnight), first "
                           "return from the capital, 365 days a year, risk-free rate 0",
        }


def daily_closes(hours: Sequence[tuple[int, float]]) -> list[tuple[date, float]]:
    """Each UTC calendar day of the span with its close: its last NAV up to and including the next 00:00, or
    the previous close for a day with none. `hours` are (unix seconds, NAV), strictly increasing in time."""
    closes: list[tuple[date, float]] = []
    previous_ts: int | None = None
    for ts, nav in hours:
        if previous_ts is not None and ts <= previous_ts:
            raise StatisticsError(f"hours out of order: {_hour(ts)} after {_hour(previous_ts)}")
        # A NAV at 00:00 closes the day before; the run's first opens its own day.
        day = datetime.fromtimestamp(ts if previous_ts is None else ts - 1, UTC).date()
        previous_ts = ts
        if closes and closes[-1][0] == day:
            closes[-1] = (day, nav)
            continue
        while closes and closes[-1][0] + timedelta(days=1) < day:  # a day without data: its close carries
            closes.append((closes[-1][0] + timedelta(days=1), closes[-1][1]))
        closes.append((day, nav))
    return closes


def daily_returns(hours: Sequence[tuple[int, float]], capital: float) -> list[tuple[date, float]]:
    """Each day's return from the previous close (the first day's from `capital`): the series every figure
    of `daily_statistics` is computed from, for charts that must agree with it."""
    return _returns(daily_closes(hours), capital)


def _returns(closes: Sequence[tuple[date, float]], capital: float) -> list[tuple[date, float]]:
    if not capital > 0:
        raise StatisticsError(f"capital must be positive, not {capital}")
    out: list[tuple[date, float]] = []
    previous = capital
    for day, close in closes:
        # A book at or below zero has nothing left to return on: its later days are flat.
        out.append((day, close / previous - 1 if previous > 0 else 0.0))
        previous = close
    return out


def daily_statistics(hours: Sequence[tuple[int, float]], capital: float) -> Statistics:
    """The run's statistics from its hourly NAVs ((unix seconds, NAV) pairs, as `hourly.csv`) and the capital
    it started with; see the module's docstring for every convention."""
    closes = daily_closes(hours)
    returns = _returns(closes, capital)
    n = len(returns)
    values = [r for _, r in returns]
    drawdowns = drawdown_episodes(closes, capital)
    # Deepest first; of two equally deep (to float noise), the earlier.
    deepest = sorted(drawdowns, key=lambda d: (-round(d.depth, 12), d.peak))[:WORST_DRAWDOWNS]
    worst = deepest[0] if deepest else None
    if n == 0:
        return Statistics(0, None, None, None, None, None, None, (), {}, {}, None, None, None, None)
    wealth = closes[-1][1] / capital
    cagr = wealth ** (DAYS_PER_YEAR / n) - 1 if wealth > 0 else -1.0
    mean = sum(values) / n
    volatility = sharpe = sortino = None
    if n >= 2:
        std = math.sqrt(sum((r - mean) ** 2 for r in values) / (n - 1))
        volatility = std * math.sqrt(DAYS_PER_YEAR)
        sharpe = mean / std * math.sqrt(DAYS_PER_YEAR) if std > ZERO_STD else None
        downside = math.sqrt(sum(r * r for r in values if r < 0) / n)
        sortino = mean / downside * math.sqrt(DAYS_PER_YEAR) if downside > ZERO_STD else None
    calmar = cagr / worst.depth if worst is not None else None
    non_zero = [r for r in values if r != 0]
    return Statistics(
        days=n, cagr=cagr, volatility=volatility, sharpe=sharpe, sortino=sortino, calmar=calmar,
        max_drawdown=worst, worst_drawdowns=tuple(deepest),
        monthly_returns=_compounded(returns, 7), yearly_returns=_compounded(returns, 4),
        best_day=max(values), worst_day=min(values),
        win_rate_days=sum(1 for r in non_zero if r > 0) / len(non_zero) if non_zero else None,
        max_drawdown_hourly=hourly_max_drawdown(hours, capital))


def drawdown_episodes(closes: Sequence[tuple[date, float]], capital: float) -> list[Drawdown]:
    """Every episode of closes below the running high-water mark (which starts at `capital`), in time order."""
    episodes: list[Drawdown] = []
    if not closes:
        return episodes
    peak, peak_day = capital, closes[0][0]
    trough = trough_day = start = None
    for day, close in closes:
        if close >= peak:
            if start is not None and trough is not None and trough_day is not None:
                episodes.append(Drawdown(1 - trough / peak, peak_day, trough_day, day, (day - start).days))
                start = trough = trough_day = None
            peak, peak_day = close, day
        elif start is None:
            start, trough, trough_day = day, close, day
        elif trough is not None and close < trough:
            trough, trough_day = close, day
    if start is not None and trough is not None and trough_day is not None:  # still under water at the end
        episodes.append(Drawdown(1 - trough / peak, peak_day, trough_day, None, (closes[-1][0] - start).days + 1))
    return episodes


def hourly_max_drawdown(hours: Sequence[tuple[int, float]], capital: float) -> HourlyDrawdown | None:
    """The worst fall of the hourly NAV from its running peak (the capital first), or None if it never fell."""
    if not hours:
        return None
    peak, peak_ts = capital, hours[0][0]
    worst: HourlyDrawdown | None = None
    for ts, nav in hours:
        if nav >= peak:
            peak, peak_ts = nav, ts
        elif peak > 0 and (worst is None or 1 - nav / peak > worst.depth):
            worst = HourlyDrawdown(1 - nav / peak, peak_ts, ts)
    return worst


def _compounded(returns: Sequence[tuple[date, float]], key_length: int) -> dict[str, float]:
    """Daily returns compounded within each period named by the first `key_length` characters of the ISO date."""
    growth: dict[str, float] = {}
    for day, r in returns:
        key = day.isoformat()[:key_length]
        growth[key] = growth.get(key, 1.0) * (1 + r)
    return {k: g - 1 for k, g in growth.items()}


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places) + 0.0  # + 0.0: no "-0.0" in the summary


def _hour(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
