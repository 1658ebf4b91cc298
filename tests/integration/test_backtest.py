"""`basisd backtest` through the real CLI: the report, determinism, the entry the issue specifies."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
LAMBDA = Decimal("0.93") * (1 - Decimal("0.0225"))


def backtest(out: Path, *args: str, config: str = "configs/replay.yaml") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", config, "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_synthetic_backtest_writes_a_consistent_report_and_is_deterministic(tmp_path: Path) -> None:
    window = ("--start", "2024-06-01T00:00:00Z", "--end", "2024-06-05T00:00:00Z")
    first = backtest(tmp_path / "a", *window)
    assert first.returncode == 0, first.stderr
    second = backtest(tmp_path / "b", *window)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["mode"] == "usdt_market_neutral" and summary["stopped"] == "replay finished"
    assert summary["failed_instructions"] == 0 and summary["instructions"] >= 1
    assert Decimal(summary["pnl_residual_max_abs"]) < Decimal("1e-12")
    total = sum(Decimal(v) for v in summary["pnl_by_component"].values())
    assert abs(total - Decimal(summary["total_pnl"])) < Decimal("0.0001")
    hourly = list(csv.DictReader((tmp_path / "a" / "hourly.csv").read_text().splitlines()))
    assert len(hourly) == summary["window"]["hours"] >= 90
    assert hourly[-1]["nav"] == summary["final_nav"]
    events = [json.loads(line) for line in (tmp_path / "a" / "events.jsonl").read_text().splitlines()]
    assert events[0]["reason"] == "INITIAL_CAPITAL" and events[0]["n"] == 1
    reasons = {e["reason"] for e in events}
    assert {"VENUE_TRANSFER", "TRADE_EXECUTED", "SPOT_TRADE", "ATOMIC_LEVERAGE_EXECUTION"} <= reasons
    assert "final NAV" in first.stdout
    # The balance sheet is the books themselves: its values at the last hour add up to that hour's NAV.
    sheet = list(csv.DictReader((tmp_path / "a" / "balance_sheet.csv").read_text().splitlines()))
    last = [r for r in sheet if r["ts"] == hourly[-1]["ts"]]
    assert abs(sum(Decimal(r["value_usd"]) for r in last) - Decimal(hourly[-1]["nav"])) < Decimal("0.0001") * 20
    assert {r["holding"] for r in last} >= {"aWeETH", "variableDebtWETH", "USDT", "perp:ETHUSDT"}
    # The charts: one page each, offline (plotly's script written once beside them).
    out = tmp_path / "a"
    for chart in ("cumulative_pnl", "pnl_components", "delta", "margin_ratios", "hf_ltv"):
        page = (out / f"{chart}.html").read_text()
        assert 'src="plotly.min.js"' in page and "Plotly.newPlot" in page
    assert "maintenance" in (out / "margin_ratios.html").read_text()  # the thresholds are drawn
    assert (out / "plotly.min.js").stat().st_size > 1_000_000


@pytest.mark.parametrize("args", [("--start", "2024-06-05T00:00:00Z", "--end", "2024-06-01T00:00:00Z"),
                                  ("--start", "June first",)])
def test_bad_backtest_arguments_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = backtest(tmp_path, *args)
    assert result.returncode == 64, result.stderr
    assert "--end must be after --start" in result.stderr or "is not an ISO date-time" in result.stderr


@pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")
def test_on_history_the_entry_levers_to_lambda_and_shorts_the_aave_net_eth_at_each_venues_price(
        tmp_path: Path) -> None:
    result = backtest(tmp_path, "--data", str(DATA), "--start", "2024-08-01T00:00:00Z", "--end",
                      "2024-08-04T00:00:00Z", config="configs/history.yaml")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["initial_positions"]
    assert abs(Decimal(entry["ltv"]) - LAMBDA) < Decimal("1e-6")
    assert abs(Decimal(entry["health_factor"]) - Decimal("0.95") / LAMBDA) < Decimal("1e-5")
    aave_net = Decimal(entry["aave_collateral_eth"]) - Decimal(entry["aave_debt_eth"])
    shorts = sum(-Decimal(p["size"]) for p in entry["perps"].values())
    assert abs(aave_net - shorts) <= Decimal("0.003")  # within the lot size on each of three venues
    entries = {v: Decimal(p["entry"]) for v, p in entry["perps"].items()}
    assert len(set(entries.values())) == 3  # each venue filled at its own price, not an average
    assert Decimal(summary["pnl_residual_max_abs"]) < Decimal("1e-12")


@pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")
def test_on_history_each_funding_row_is_paid_at_its_settlement_and_attributed_to_that_hour(tmp_path: Path) -> None:
    result = backtest(tmp_path, "--data", str(DATA), "--start", "2024-07-01T00:00:00Z", "--end",
                      "2024-07-15T00:00:00Z", config="configs/history.yaml")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    payments = [e for e in events if e["reason"] == "FUNDING_PAYMENT"]
    assert len(payments) >= 3 * 3 * 13  # three venues, three settlements a day
    rates = {}  # the Binance file's rate at each settlement
    for line in next(DATA.glob("cex/funding_rates/binance_ETHUSDT_*.csv")).read_text().splitlines()[1:]:
        stamp, rate = line.split(",")[:2]
        rates[stamp[:16].replace("T", " ")] = Decimal(rate)
    hourly = {r["ts"]: r for r in csv.DictReader((tmp_path / "balance_sheet.csv").read_text().splitlines())
              if r["account"] == "binance" and r["holding"] == "perp:ETHUSDT"}
    checked = 0
    for payment in payments:
        settled_ns = int(payment["ref"].rsplit("-", 1)[1])
        settled = datetime.fromtimestamp(settled_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
        assert payment["ts"] == settled  # booked in the hour of the settlement, never the one before
        ((account, _, amount),) = payment["tokens"]
        if account == "binance" and settled in rates and settled in hourly:
            # amount = −size × mark × rate with this settlement's own rate: the implied mark is ETH's price
            # then (July 2024: 2,800–3,600). The previous settlement's rate would imply anything.
            size = Decimal(hourly[settled]["amount"])
            implied_mark = Decimal(amount) / (-size * rates[settled])
            assert 2_800 < implied_mark < 3_600, (settled, amount, rates[settled], implied_mark)
            checked += 1
    assert checked >= 35
