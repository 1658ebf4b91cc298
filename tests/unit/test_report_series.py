"""The report's series (daemon.report.series): thinning keeps what each chart is for, and the daily, monthly and
rolling figures agree with the NAV they come from. And the off-terminal progress events (daemon.progress)."""

from __future__ import annotations

import io
import math
import statistics
from datetime import UTC, datetime, timedelta

import structlog
from hypothesis import given
from hypothesis import strategies as st

from daemon.progress import BacktestProgress
from daemon.report import series as S

values = st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=30_000)


@given(values)
def test_thinning_keeps_the_extremes_and_the_last_value_in_at_most_max_points(v: list[float | None]) -> None:
    size = S.bucket_size(len(v))
    lows, highs, lasts = S.thin_min(v, size), S.thin_max(v, size), S.thin_last(v, size)
    assert len(lows) == len(highs) == len(lasts) == len(S.thin_ts([str(i) for i in range(len(v))], size))
    assert len(lows) <= S.MAX_POINTS
    present = [x for x in v if x is not None]
    if present:
        assert min(x for x in lows if x is not None) == min(present)
        assert max(x for x in highs if x is not None) == max(present)
        tail = [x for x in v[(len(lows) - 1) * size:] if x is not None]
        assert lasts[-1] == (tail[-1] if tail else None)


def hourly_from(navs: list[float], start: datetime) -> S.Hourly:
    ts = [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M") for i in range(len(navs))]
    return S.Hourly(ts, {"nav": list[float | None](navs)})


@given(st.lists(st.floats(0.97, 1.03), min_size=2, max_size=24 * 120), st.integers(0, 23))
def test_daily_and_monthly_returns_compound_to_the_runs_return(moves: list[float], hour: int) -> None:
    capital, navs = 1000.0, []
    nav = capital
    for m in moves:
        nav *= m
        navs.append(nav)
    days = S.daily(hourly_from(navs, datetime(2024, 1, 30, hour, tzinfo=UTC)), capital)
    assert days.navs[-1] == navs[-1]
    assert math.prod(1 + r for r in days.returns) == _close(navs[-1] / capital)
    monthly = S.monthly_returns(days, capital)
    assert math.prod(1 + r for r in monthly.values()) == _close(navs[-1] / capital)
    assert list(monthly) == sorted(monthly)


def _close(x: float) -> object:
    import pytest

    return pytest.approx(x, rel=1e-9)


@given(st.lists(st.floats(-0.05, 0.05), min_size=S.ROLLING_DAYS, max_size=90))
def test_rolling_volatility_and_sharpe_are_the_windows_own(returns: list[float]) -> None:
    vols, sharpes = S.rolling(returns)
    assert all(v is None for v in vols[:S.ROLLING_DAYS - 1])
    window = returns[-S.ROLLING_DAYS:]
    sd = statistics.stdev(window)
    assert vols[-1] == _close(sd * math.sqrt(365))
    if sd > 1e-12:
        assert sharpes[-1] == _close(statistics.fmean(window) / sd * math.sqrt(365))


@given(st.lists(st.floats(1, 1e6), min_size=1, max_size=500))
def test_drawdown_is_zero_at_each_new_peak_and_never_positive(navs: list[float]) -> None:
    dd = S.drawdown(list[float | None](navs))
    peak = 0.0
    for nav, d in zip(navs, dd, strict=True):
        assert d is not None and d <= 0
        if nav >= peak:
            peak = nav
            assert d == 0
        else:
            assert d == _close(nav / peak - 1)


def test_off_a_terminal_each_ten_percent_is_logged_once_in_order_even_when_a_poll_skips_some() -> None:
    done = [0]
    progress = BacktestProgress(200, lambda: done[0], lambda: 1_717_200_000 * 10**9, io.StringIO(), tty=False)
    with structlog.testing.capture_logs() as logs, progress:
        for hours in (5, 70, 70, 199, 200):
            done[0] = hours
            progress.update()
        progress.finish()
    events = [e for e in logs if e["event"] == "backtest_progress"]
    assert [e["percent"] for e in events] == list(range(10, 101, 10))
    assert [e["hours_done"] for e in events] == [70, 70, 70, 199, 199, 199, 199, 199, 199, 200]
    assert {e["market_date"] for e in events} == {"2024-06-01 00:00"} and {e["log_level"] for e in events} == {"info"}
