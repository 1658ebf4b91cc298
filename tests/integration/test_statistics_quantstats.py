"""summary.json's daily statistics agree with quantstats, computed independently from the run's own hourly.csv.

The reference reads `hourly.csv` by column name with pandas and makes the daily closes as the statistics define
them (a UTC day closes at the next 00:00: its last NAV in (D 00:00, D+1 00:00]; the run's first NAV opens its own
day; an empty day carries the previous close), the first day's return from the summary's capital; it hands the
returns to quantstats with `periods=365` (crypto trades every day; its default is 252) and `rf=0`. Nothing of the
daemon's statistics code is used on this side. Figures agree within the summary's rounding (6 places for
fractions, 4 for ratios)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import quantstats as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.statistics import daily_statistics
from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
PERIODS = 365
FRACTION = 6e-7  # half a unit in the 6th place, and a little float
RATIO = 6e-5  # likewise in the 4th


def reference_returns(hours: pd.DataFrame, capital: float) -> pd.Series:
    """Daily returns from (ts, nav) rows: each UTC day closes at the next 00:00 (its last NAV in (D, D+1]), the
    first NAV opens its own day, the first return is from the capital."""
    when = pd.to_datetime(hours["ts"], utc=True)
    nav = pd.Series(hours["nav"].to_numpy(dtype=float), index=when)
    day = (when - pd.Timedelta(seconds=1)).dt.floor("D")
    day.iloc[0] = when.iloc[0].floor("D")
    closes = nav.groupby(day.to_numpy()).last()
    closes = closes.reindex(pd.date_range(closes.index[0], closes.index[-1], freq="D")).ffill()
    returns = closes / closes.shift(1) - 1
    returns.iloc[0] = closes.iloc[0] / capital - 1
    returns.index = returns.index.tz_localize(None)
    return returns


def quantstats_figures(returns: pd.Series) -> dict[str, Any]:
    """The summary's `statistics`, as quantstats computes each figure (drawdowns mapped to its fields)."""
    with warnings.catch_warnings():  # its own 0/0 on a flat path, "no non-zero returns": NaN is the answer
        warnings.simplefilter("ignore")
        return _quantstats_figures(returns)


def _quantstats_figures(returns: pd.Series) -> dict[str, Any]:
    # quantstats leaves some functions unannotated.
    dd = qs.stats.to_drawdown_series(returns)  # type: ignore[no-untyped-call]
    details = qs.stats.drawdown_details(dd)  # type: ignore[no-untyped-call]
    details = details.sort_values("max drawdown", kind="stable").head(5)
    last = returns.index[-1]
    episodes = []
    for _, row in details.iterrows():
        start, end = pd.Timestamp(row["start"]), pd.Timestamp(row["end"])
        open_at_end = end == last and dd.iloc[-1] < 0
        # quantstats names the first day under water; the peak is the close before it (the capital, for day 1).
        peak = start if start == returns.index[0] else start - timedelta(days=1)
        episodes.append({"depth": -row["max drawdown"] / 100, "peak": peak.date().isoformat(),
                         "trough": row["valley"], "recovery": None if open_at_end else
                         (end + timedelta(days=1)).date().isoformat(), "duration_days": int(row["days"])})
    first = returns.index[0].date().isoformat()
    if dd.iloc[0] < 0 and first not in {e["peak"] for e in episodes}:
        # quantstats' drawdown_details misses an episode under water from the first day (a run that opens by
        # paying its entry costs) when no other episode starts after a day at the peak: its start detection
        # needs a day at the peak before. That episode, read off quantstats' own drawdown series.
        recovered = dd[dd == 0]
        under = dd[: recovered.index[0]] if len(recovered) else dd
        under = under[under < 0]
        episodes = sorted([*episodes, {
            "depth": -under.min(), "peak": first, "trough": under.idxmin().date().isoformat(),
            "recovery": recovered.index[0].date().isoformat() if len(recovered) else None,
            "duration_days": len(under)}], key=lambda e: -e["depth"])[:5]
    monthly = qs.stats.monthly_returns(returns)  # type: ignore[no-untyped-call]
    months = {f"{year}-{m:02d}": float(monthly.loc[year].iloc[m - 1]) for year in monthly.index for m in range(1, 13)}
    return {
        "days": len(returns), "cagr": qs.stats.cagr(returns, periods=PERIODS),
        "volatility": qs.stats.volatility(returns, periods=PERIODS),
        "sharpe": qs.stats.sharpe(returns, periods=PERIODS), "sortino": qs.stats.sortino(returns, periods=PERIODS),
        "calmar": qs.stats.calmar(returns, periods=PERIODS), "max_drawdown": -qs.stats.max_drawdown(returns),
        "worst_drawdowns": episodes, "monthly": months,
        "yearly": {str(year): float(monthly.loc[year, "EOY"]) for year in monthly.index},
        "best_day": qs.stats.best(returns), "worst_day": qs.stats.worst(returns),
        "win_rate_days": qs.stats.win_rate(returns),
    }


def assert_agree(stats: dict[str, Any], ref: dict[str, Any]) -> None:
    assert stats["days"] == ref["days"]
    for name, tol in (("cagr", FRACTION), ("volatility", FRACTION), ("sharpe", RATIO), ("sortino", RATIO),
                      ("calmar", RATIO), ("best_day", FRACTION), ("worst_day", FRACTION)):
        ours, theirs = stats[name], float(ref[name])
        if ours is None:  # undefined here; quantstats gives NaN or ±inf for the same zero denominator
            # ... except on a single day, where it still divides by that one day's downside.
            assert not math.isfinite(theirs) or (name == "sortino" and stats["days"] == 1), (name, theirs)
        else:
            assert ours == pytest.approx(theirs, rel=1e-9, abs=tol), name
    assert stats["max_drawdown"]["depth"] == pytest.approx(ref["max_drawdown"], abs=FRACTION)
    if stats["win_rate_days"] is not None:
        assert stats["win_rate_days"] == pytest.approx(ref["win_rate_days"], abs=FRACTION)
    assert set(stats["monthly_returns"]) <= set(ref["monthly"])
    for month, r in ref["monthly"].items():  # quantstats fills the months outside the run with 0
        assert stats["monthly_returns"].get(month, 0.0) == pytest.approx(r, abs=FRACTION), month
    assert stats["yearly_returns"].keys() == ref["yearly"].keys()
    for year, r in ref["yearly"].items():
        assert stats["yearly_returns"][year] == pytest.approx(r, abs=FRACTION), year
    ours_dd = sorted(stats["worst_drawdowns"], key=lambda d: (-d["depth"], d["peak"]))
    theirs_dd = sorted(ref["worst_drawdowns"], key=lambda d: (-round(d["depth"], 6), d["peak"]))
    assert len(ours_dd) == len(theirs_dd)
    for a, b in zip(ours_dd, theirs_dd, strict=True):
        assert a["depth"] == pytest.approx(b["depth"], abs=FRACTION)
        assert {k: a[k] for k in ("peak", "trough", "recovery", "duration_days")} == \
            {k: b[k] for k in ("peak", "trough", "recovery", "duration_days")}
    if ours_dd:  # the deepest (of equally deep ones, at the summary's rounding, any)
        assert stats["max_drawdown"] in ours_dd and stats["max_drawdown"]["depth"] == ours_dd[0]["depth"]


def backtest(out: Path, config: Path | str, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out",
                             str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    stats = summary["statistics"]
    # The CLI's last line prints the daily figures, not the hourly ones the summary used to carry.
    assert f"max drawdown {stats['max_drawdown']['depth']:.2%}" in result.stdout
    assert not {"apr", "sharpe", "volatility", "max_drawdown"} & summary.keys()
    return summary


def check_run(out: Path, summary: dict[str, Any]) -> None:
    hours = pd.read_csv(out / "hourly.csv", usecols=["ts", "nav"])
    returns = reference_returns(hours, float(summary["capital"]))
    assert_agree(summary["statistics"], quantstats_figures(returns))


def test_a_synthetic_backtest_agrees_with_quantstats(tmp_path: Path) -> None:
    # From 01:00 to the 00:00 bar, as the full history: a 23-hour first day, the last NAV the last day's close.
    summary = backtest(tmp_path / "out", "configs/replay.yaml", "--start", "2024-06-01T01:00:00Z",
                       "--end", "2024-06-11T01:00:00Z")
    stats = summary["statistics"]
    assert stats["days"] == 10 and stats["volatility"] is not None and stats["volatility"] > 0
    check_run(tmp_path / "out", summary)


@pytest.mark.timeout(300)
@pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")
def test_the_full_history_agrees_with_quantstats(tmp_path: Path) -> None:
    summary = backtest(tmp_path / "out", "configs/history.yaml", "--data", str(DATA))
    stats = summary["statistics"]
    assert stats["days"] >= 490 and len(stats["worst_drawdowns"]) == 5
    assert set(stats["yearly_returns"]) == {"2024", "2025"}
    check_run(tmp_path / "out", summary)


# Random NAV paths straight into daily_statistics, against quantstats on the same hours: every branch
# (recovered and open drawdowns, a first day under water, flat days, gaps) meets the reference, not just a run's.
nav_moves = st.one_of(st.just(0.0), st.floats(min_value=-0.04, max_value=0.04, allow_nan=False))


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(nav_moves, st.integers(1, 30)), min_size=2, max_size=120), st.integers(0, 23))
def test_random_paths_agree_with_quantstats(steps: list[tuple[float, int]], start_hour: int) -> None:
    capital, nav = 1000.0, 1000.0
    ts = int(datetime(2024, 12, 20, start_hour, tzinfo=UTC).timestamp())
    hours: list[tuple[int, float]] = []
    for move, gap_h in steps:  # gaps of up to 30 hours: some days have no hour at all
        nav = round(nav * (1 + move), 6)
        hours.append((ts, nav))
        ts += gap_h * 3600
    stats = daily_statistics(hours, capital).to_dict()
    frame = pd.DataFrame({"ts": [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t, _ in hours],
                          "nav": [n for _, n in hours]})
    returns = reference_returns(frame, capital)
    assert_agree(stats, quantstats_figures(returns))
    assert date.fromisoformat(next(iter(stats["monthly_returns"])) + "-01") == date(2024, 12, 1)
