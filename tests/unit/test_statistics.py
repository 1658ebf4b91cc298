"""Daily statistics on NAV paths whose figures can be worked out by hand, and properties of any path."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.statistics import (
    DAYS_PER_YEAR,
    WORST_DRAWDOWNS,
    StatisticsError,
    daily_closes,
    daily_returns,
    daily_statistics,
)


def at(day: str, hour: int = 23) -> int:
    return int(datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=UTC).timestamp())


def daily(*closes: float, start: str = "2024-01-30") -> list[tuple[int, float]]:
    """One NAV at 23:00 of each consecutive day from `start`."""
    first = at(start)
    return [(first + i * 86_400, c) for i, c in enumerate(closes)]


def test_a_day_closes_at_the_next_midnight_and_the_first_nav_opens_its_own_day() -> None:
    hours = [(at("2024-01-30", 1), 101.0), (at("2024-01-30", 23), 102.0), (at("2024-01-31", 0), 99.0),
             (at("2024-01-31", 12), 103.0)]
    # 00:00 on the 31st is the 30th's close (the daily mark); the 31st has only what came after it.
    assert daily_closes(hours) == [(date(2024, 1, 30), 99.0), (date(2024, 1, 31), 103.0)]
    # The first day's return is from the capital, the next from the first close.
    returns = daily_returns(hours, 100.0)
    assert [d for d, _ in returns] == [date(2024, 1, 30), date(2024, 1, 31)]
    assert [r for _, r in returns] == pytest.approx([-0.01, 103 / 99 - 1])
    # A run that starts at 00:00 and stops at the next 00:00 is one day, not a stub before it and one after.
    whole_day = [(at("2024-01-30", 0) + h * 3600, 100.0 + h) for h in range(25)]
    assert daily_closes(whole_day) == [(date(2024, 1, 30), 124.0)]


def test_a_day_without_data_carries_the_previous_close() -> None:
    hours = [(at("2024-01-30"), 110.0), (at("2024-02-01"), 121.0)]
    assert daily_closes(hours) == [(date(2024, 1, 30), 110.0), (date(2024, 1, 31), 110.0),
                                   (date(2024, 2, 1), 121.0)]
    stats = daily_statistics(hours, 100.0)
    assert stats.days == 3 and stats.win_rate_days == 1.0  # the flat day is neither a win nor a loss


def test_hand_computed_ratios_monthly_and_yearly_returns() -> None:
    # Returns +2 %, −1 %, +2 %, −1 % across a month end: mean 0.005, sample std √0.0003, downside √0.00005.
    stats = daily_statistics(daily(102.0, 100.98, 102.9996, 101.969604), 100.0)
    root = math.sqrt(DAYS_PER_YEAR)
    assert stats.days == 4
    assert stats.cagr == pytest.approx(1.01969604 ** (DAYS_PER_YEAR / 4) - 1)
    assert stats.volatility == pytest.approx(math.sqrt(0.0003) * root)
    assert stats.sharpe == pytest.approx(0.005 / math.sqrt(0.0003) * root)
    assert stats.sortino == pytest.approx(0.005 / math.sqrt(0.00005) * root)
    assert stats.best_day == pytest.approx(0.02) and stats.worst_day == pytest.approx(-0.01)
    assert stats.win_rate_days == 0.5
    assert stats.monthly_returns == {"2024-01": pytest.approx(0.0098), "2024-02": pytest.approx(0.0098)}
    assert stats.yearly_returns == {"2024": pytest.approx(0.01969604)}
    # Two 1 % episodes: one recovered the next day, one still open at the end.
    assert stats.max_drawdown is not None and stats.max_drawdown.depth == pytest.approx(0.01)
    assert stats.cagr is not None and stats.calmar == pytest.approx(stats.cagr / 0.01)
    first, second = sorted(stats.worst_drawdowns, key=lambda d: d.peak)
    assert (first.peak, first.trough, first.recovery, first.duration_days) == (
        date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1), 1)
    assert (second.peak, second.trough, second.recovery, second.duration_days) == (
        date(2024, 2, 1), date(2024, 2, 2), None, 1)


def test_a_known_drawdown_with_its_dates_recovery_and_duration() -> None:
    # Peak 110 on the 30th; 99, then the trough 88 (−20 %); back to exactly 110 on 2 Feb; then higher.
    # An intraday dip to 77 on the 31st is no daily close: the daily drawdown ignores it, the hourly one not.
    hours = [(at("2024-01-30"), 110.0), (at("2024-01-31", 3), 77.0), (at("2024-01-31"), 99.0),
             (at("2024-02-01"), 88.0), (at("2024-02-02"), 110.0), (at("2024-02-03"), 121.0)]
    stats = daily_statistics(hours, 100.0)
    dd = stats.max_drawdown
    assert dd is not None
    assert dd.depth == pytest.approx(0.2)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration_days) == (
        date(2024, 1, 30), date(2024, 2, 1), date(2024, 2, 2), 2)
    assert stats.worst_drawdowns == (dd,)
    assert stats.cagr == pytest.approx(1.21 ** (DAYS_PER_YEAR / 5) - 1)
    assert stats.cagr is not None and stats.calmar == pytest.approx(stats.cagr / 0.2)
    hourly = stats.max_drawdown_hourly
    assert hourly is not None and hourly.depth == pytest.approx(0.3)
    assert (hourly.peak, hourly.trough) == (at("2024-01-30"), at("2024-01-31", 3))
    assert stats.to_dict()["max_drawdown"] == {"depth": 0.2, "peak": "2024-01-30", "trough": "2024-02-01",
                                               "recovery": "2024-02-02", "duration_days": 2}


def test_a_drawdown_that_never_recovers_lasts_to_the_last_day() -> None:
    stats = daily_statistics(daily(105.0, 95.0, 90.0, 94.5), 100.0)
    dd = stats.max_drawdown
    assert dd is not None and dd.depth == pytest.approx(15 / 105)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration_days) == (
        date(2024, 1, 30), date(2024, 2, 1), None, 3)
    assert stats.to_dict()["max_drawdown"]["recovery"] is None


def test_a_run_that_starts_by_losing_is_in_drawdown_from_the_capital() -> None:
    stats = daily_statistics(daily(98.0, 97.0, 100.0), 100.0)
    dd = stats.max_drawdown
    assert dd is not None and dd.depth == pytest.approx(0.03)
    assert (dd.peak, dd.trough, dd.recovery, dd.duration_days) == (
        date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1), 2)


def test_one_day() -> None:
    stats = daily_statistics([(at("2024-01-30", 5), 100.1)], 100.0)
    assert stats.days == 1
    assert stats.cagr == pytest.approx(1.001 ** DAYS_PER_YEAR - 1)
    # One return has no dispersion: volatility and the ratios built on it are undefined, not 0.
    assert stats.volatility is None and stats.sharpe is None and stats.sortino is None
    assert stats.best_day == stats.worst_day == pytest.approx(0.001)
    assert stats.max_drawdown is None and stats.calmar is None


def test_a_flat_nav_has_zero_volatility_and_undefined_ratios() -> None:
    stats = daily_statistics(daily(100.0, 100.0, 100.0), 100.0)
    assert stats.cagr == 0 and stats.volatility == 0
    assert stats.sharpe is None and stats.sortino is None and stats.calmar is None
    assert stats.win_rate_days is None and stats.max_drawdown is None and stats.max_drawdown_hourly is None
    out = stats.to_dict()
    assert out["sharpe"] is None
    assert out["max_drawdown"] == {"depth": 0.0, "peak": None, "trough": None, "recovery": None,
                                   "duration_days": 0}
    json.dumps(out, allow_nan=False)


def test_the_worst_five_are_the_deepest_episodes_deepest_first_and_never_overlap() -> None:
    closes: list[float] = []
    nav = 100.0
    for depth in (0.01, 0.05, 0.02, 0.07, 0.03, 0.06, 0.04):  # seven episodes, each recovered to a new high
        closes += [nav * (1 - depth), nav * 1.01]
        nav *= 1.01
    stats = daily_statistics(daily(*closes), 100.0)
    depths = [d.depth for d in stats.worst_drawdowns]
    assert len(depths) == WORST_DRAWDOWNS
    assert depths == pytest.approx([0.07, 0.06, 0.05, 0.04, 0.03])
    assert stats.max_drawdown == stats.worst_drawdowns[0]
    spans = sorted((d.peak, d.recovery) for d in stats.worst_drawdowns)
    for (_, recovery), (next_peak, _) in itertools.pairwise(spans):
        assert recovery is not None and recovery <= next_peak


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(StatisticsError, match="capital"):
        daily_statistics(daily(100.0), 0.0)
    with pytest.raises(StatisticsError, match="out of order"):
        daily_statistics([(at("2024-01-31"), 100.0), (at("2024-01-30"), 100.0)], 100.0)
    empty = daily_statistics([], 100.0)
    assert empty.days == 0 and empty.cagr is None
    json.dumps(empty.to_dict(), allow_nan=False)


# --- properties ----------------------------------------------------------------------------------------------

# Hourly moves: flat, or at least 0.001 % either way (so that a ratio is not float noise over float noise).
moves_st = st.one_of(st.just(0.0), st.floats(min_value=1e-5, max_value=0.03),
                     st.floats(min_value=-0.03, max_value=-1e-5))
hourly_paths = st.lists(moves_st, min_size=1, max_size=24 * 20)


def path(moves: list[float], capital: float = 1000.0, start_hour: int = 0) -> list[tuple[int, float]]:
    first, nav, hours = at("2024-02-25", start_hour), capital, []
    for i, m in enumerate(moves):
        nav *= 1 + m
        hours.append((first + i * 3600, nav))
    return hours


@settings(max_examples=80, deadline=None)
@given(hourly_paths, st.floats(min_value=1e-3, max_value=1e6), st.integers(0, 23))
def test_scaling_the_nav_and_the_capital_leaves_every_figure_unchanged(moves: list[float], k: float,
                                                                       start_hour: int) -> None:
    base = daily_statistics(path(moves, start_hour=start_hour), 1000.0)
    scaled = daily_statistics([(t, n * k) for t, n in path(moves, start_hour=start_hour)], 1000.0 * k)
    assert scaled.days == base.days
    for name in ("cagr", "volatility", "sharpe", "sortino", "best_day", "worst_day", "win_rate_days"):
        a, b = getattr(base, name), getattr(scaled, name)
        assert (a is None) == (b is None), name
        if a is not None and b is not None:
            assert b == pytest.approx(a, rel=1e-6, abs=1e-9), name
    assert scaled.monthly_returns == pytest.approx(base.monthly_returns, rel=1e-6, abs=1e-12)
    # A fall of a few ulps can appear or vanish when every NAV is multiplied; a real one is the same fall.
    if base.max_drawdown is not None and base.max_drawdown.depth > 1e-9:
        assert scaled.max_drawdown is not None and scaled.calmar is not None and base.calmar is not None
        assert scaled.max_drawdown.depth == pytest.approx(base.max_drawdown.depth, rel=1e-6)
        assert scaled.calmar == pytest.approx(base.calmar, rel=1e-6, abs=1e-9)
        assert (scaled.max_drawdown.peak, scaled.max_drawdown.trough) == (base.max_drawdown.peak,
                                                                         base.max_drawdown.trough)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=0.02, allow_nan=False), min_size=1, max_size=24 * 20))
def test_a_nav_that_never_falls_has_no_drawdown(moves: list[float]) -> None:
    stats = daily_statistics(path(moves), 1000.0)
    assert stats.max_drawdown is None and stats.worst_drawdowns == () and stats.calmar is None
    assert stats.max_drawdown_hourly is None
    assert stats.worst_day is not None and stats.worst_day >= 0 and stats.sortino is None


@settings(max_examples=80, deadline=None)
@given(hourly_paths, st.integers(0, 23))
def test_periods_compound_to_the_total_and_daily_drawdowns_are_no_deeper_than_hourly(moves: list[float],
                                                                                     start_hour: int) -> None:
    hours = path(moves, start_hour=start_hour)
    stats = daily_statistics(hours, 1000.0)
    total = hours[-1][1] / 1000.0
    assert math.prod(1 + r for r in stats.monthly_returns.values()) == pytest.approx(total, rel=1e-9)
    assert math.prod(1 + r for r in stats.yearly_returns.values()) == pytest.approx(total, rel=1e-9)
    assert stats.days == len(daily_closes(hours))
    # Daily closes are some of the hourly NAVs: their worst fall cannot exceed the hourly path's.
    daily_depth = stats.max_drawdown.depth if stats.max_drawdown else 0.0
    hourly_depth = stats.max_drawdown_hourly.depth if stats.max_drawdown_hourly else 0.0
    assert daily_depth <= hourly_depth + 1e-12
    for dd in stats.worst_drawdowns:  # each episode's dates are in order, its duration the days under water
        assert dd.peak <= dd.trough and (dd.recovery is None or dd.trough < dd.recovery)
        assert dd.duration_days >= 1
    json.dumps(stats.to_dict(), allow_nan=False)
