"""`basisd backtest` through the real CLI: the report, determinism, the entry the issue specifies."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.integration.daemon_process import ROOT
from tests.integration.synthetic_history import HOURS, history_file, replace_line, write_config, write_history

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
    # One page, self-contained (plotly.js inline, once), named by the CLI's last line; the single-chart pages
    # are gone. (tests/integration/test_report.py checks what the page shows.)
    out = tmp_path / "a"
    assert first.stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    page = (out / "report.html").read_text()
    assert page.count("<script>") == 2 and not re.search(r"<script[^>]*\ssrc=", page)  # plotly.js; the charts
    assert page.count("plotly.js v") == 1 and "Plotly.newPlot" in page
    assert not list(out.glob("*.js")) and [p.name for p in out.glob("*.html")] == ["report.html"]
    assert (out / "report.html").read_bytes() == (tmp_path / "b" / "report.html").read_bytes()  # deterministic


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


# --- issue 10 §3: the exit code tells the truth about the report -------------------------------------------------


def history_backtest(tmp_path: Path, config: Path, *args: str, cache: Path | None = None
                     ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASISD_CACHE_DIR": str(cache or tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out",
                           str(tmp_path / "out"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


def refused(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """Exit `code`, every fragment in stderr, no traceback, and no report that could be taken for a run."""
    assert result.returncode == code, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_a_bad_timestamp_in_a_history_file_fails_the_backtest_naming_file_line_and_value(
        tmp_path: Path, catalog: Path) -> None:
    data = write_history(tmp_path / "data")
    gas = history_file(data, "gas:gwei")
    line = replace_line(gas, "2024-08-01T05:00:00Z", "2024-08-01T05:00:00QQ,5.0")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")  # a previous run's: it must not pass for this one's
    result = history_backtest(tmp_path, write_config(catalog, data))
    refused(result, 65, f"{gas}:{line}: timestamp: unrecognized timestamp '2024-08-01T05:00:00QQ'", "gas:gwei")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_bar_cache_written_by_another_version_is_rebuilt_never_replayed(tmp_path: Path, catalog: Path) -> None:
    config = write_config(catalog, write_history(tmp_path / "data"))
    first = history_backtest(tmp_path, config)
    assert first.returncode == 0, first.stderr
    full = json.loads((tmp_path / "out" / "summary.json").read_text())
    entries = list((tmp_path / "cache").glob("*.bars"))
    assert entries
    for entry in entries:  # bars as another version stored them: not this version's MarketBar
        entry.write_bytes(pickle.dumps([({"ts_ns": 0}, ())] * HOURS))
    second = history_backtest(tmp_path, config)
    assert second.returncode == 0, second.stderr
    assert "cache_entry_unreadable" in second.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == full


def test_missing_data_without_a_proxy_is_exit_65_naming_the_series_and_the_gap(tmp_path: Path,
                                                                              catalog: Path) -> None:
    data = write_history(tmp_path / "data")
    okx = history_file(data, "perp:okx:ETH")
    lines = okx.read_text().splitlines()
    okx.write_text("\n".join(line for line in lines if not line.startswith("2024-08-01T1")) + "\n")  # 10:00–19:00
    result = history_backtest(tmp_path, write_config(catalog, data, proxies={}))
    refused(result, 65, "perp:okx:ETH: no value at 2024-08-01 12:00 within 2 h (last value at 2024-08-01 09:00)",
            "no proxy is configured for perp:okx:ETH")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_window_outside_the_history_is_exit_65_saying_where_the_history_ends(tmp_path: Path,
                                                                              catalog: Path) -> None:
    config = write_config(catalog, write_history(tmp_path / "data"))
    result = history_backtest(tmp_path, config, "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-02T00:00:00Z")
    refused(result, 65, "spot:ETH: no value at 2025-01-01 00:00", "where its history ends")


@pytest.mark.parametrize("out", ["file/report", "file"])
def test_an_unwritable_out_is_refused_before_the_run_with_exit_73(tmp_path: Path, catalog: Path, out: str) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    config = write_config(catalog, write_history(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out",
                             str(tmp_path / out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    refused(result, 73, f"--out {tmp_path / out}: cannot write the report there")
    assert "actor_restarting" not in result.stderr  # checked before anything ran


@pytest.mark.parametrize("empty", [False, True])
def test_a_data_directory_that_is_absent_or_holds_no_history_is_exit_66(tmp_path: Path, catalog: Path,
                                                                       empty: bool) -> None:
    config = write_config(catalog, write_history(tmp_path / "data"))
    target = tmp_path / "nothing-here"
    if empty:
        target.mkdir()
        (target / "notes.txt").write_text("not history")
    result = history_backtest(tmp_path, config, "--data", str(target))
    refused(result, 66, f"--data {target}: " + ("holds no history files" if empty else "no such directory"))


def test_a_backtest_that_stops_before_the_end_of_its_window_fails(tmp_path: Path, catalog: Path) -> None:
    """`runtime.run_for_s` stops a run on the wall clock: far too early for a year of replay, and the report of
    the hours it did replay would pass for the year's."""
    config = catalog / "short.yaml"
    settings = yaml.safe_load((catalog / "replay.yaml").read_text())
    settings["runtime"]["run_for_s"] = 0.5
    settings["replay"]["hours"] = 24 * 365
    config.write_text(yaml.safe_dump(settings))
    result = backtest(tmp_path / "out", config=str(config))
    refused(result, 70, "of the 8760 hours of its window", "stopped: run_for_s=0.5 elapsed")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_end_alone_ends_the_configs_own_window(tmp_path: Path) -> None:
    """`--end` without `--start` was ignored: the whole year of the config ran instead of two days."""
    result = backtest(tmp_path, "--end", "2024-06-03T00:00:00Z")  # configs/replay.yaml starts 2024-06-01
    assert result.returncode == 0, result.stderr
    hourly = (tmp_path / "hourly.csv").read_text().splitlines()
    assert len(hourly) - 1 == json.loads((tmp_path / "summary.json").read_text())["window"]["hours"] == 48
