"""Performance statistics of an hourly NAV path (pure)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

HOURS_PER_YEAR = 24 * 365


@dataclass(frozen=True, slots=True)
class Performance:
    apr: float  # simple annualized return on the capital
    volatility: float  # annualized, from hourly returns
    sharpe: float  # APR / volatility (risk-free rate 0); 0 when volatility is 0
    max_drawdown: float  # largest peak-to-trough fall of NAV, as a fraction of the peak


def performance(capital: float, navs: Sequence[float]) -> Performance:
    """From the hourly NAVs (after each hour) of a run that started with `capital`."""
    if not navs or capital <= 0:
        return Performance(0.0, 0.0, 0.0, 0.0)
    years = len(navs) / HOURS_PER_YEAR
    apr = (navs[-1] / capital - 1) / years
    path = [capital, *navs]
    returns = [b / a - 1 for a, b in itertools.pairwise(path) if a > 0]
    mean = sum(returns) / len(returns)
    var = sum((r - mean) ** 2 for r in returns) / max(1, len(returns) - 1)
    vol = math.sqrt(var) * math.sqrt(HOURS_PER_YEAR)
    peak, worst = path[0], 0.0
    for value in path:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return Performance(apr, vol, apr / vol if vol > 0 else 0.0, worst)
