"""`report.html`: what the one page shows, read back from the figures it embeds and checked against the run's own
files and config; and the page in a real headless Chromium (it renders, no console errors, no network)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_config
from daemon.mode_spec import mode_spec
from daemon.report import build_page, report_context
from daemon.report.series import MAX_POINTS
from tests.integration.daemon_process import ROOT

pytestmark = pytest.mark.timeout(180)  # a real backtest each, on 2 shared cores
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; "
                                                              ".ci/run installs it)")
HOURS = 24 * 100  # past MAX_POINTS hours, so every hourly chart is thinned; past 30 days, so rolling figures exist
# Levels unlike the defaults: the page must draw these, read from the config.
RISK = {"delta_warn_fraction": 0.03, "delta_act_fraction": 0.06, "margin_warning_ratio": 0.25,
        "margin_urgent_ratio": 0.18, "margin_maintenance_ratio": 0.12, "ltv_warn_above_target": 0.015,
        "ltv_act_above_target": 0.025}
BAND = 0.025  # the mode's position_deviation_threshold
LAMBDA = 0.93 * (1 - 0.0225)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic backtest with the levels above, through the real CLI; its --out directory."""
    base = tmp_path_factory.mktemp("report")
    shutil.copytree(ROOT / "configs", base / "configs")
    settings = yaml.safe_load((base / "configs" / "replay.yaml").read_text())
    settings["replay"]["hours"] = HOURS
    settings["risk"] = RISK
    settings["strategy"]["params"] = {"position_deviation_threshold": BAND}
    config = base / "configs" / "report.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = base / "out"
    result = subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    return out


def figures(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="basisd-figures">(.*?)</script>', page, re.S)
    assert match, "the page embeds its figures"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def levels(figure: dict[str, Any], yref: str = "y") -> set[float]:
    return {round(s["y0"], 6) for s in figure["layout"].get("shapes", []) if s["yref"] == yref}


def trace(figure: dict[str, Any], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in figure["data"] if t.get("name", "").startswith(prefix))
    return found


def hourly_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "hourly.csv").read_text().splitlines()))


def test_the_page_has_every_chart_and_draws_the_configs_levels(run: Path) -> None:
    figs = figures((run / "report.html").read_text())
    assert set(figs) == {"equity", "underwater", "monthly", "distribution", "rolling", "attribution",
                         "attribution_totals", "delta", "health", "margin", "funding"}
    pct = {round(x * 100, 6) for x in (BAND, RISK["delta_warn_fraction"], RISK["delta_act_fraction"])}
    assert levels(figs["delta"]) == pct | {-x for x in pct}
    venues = {yaml.safe_load((ROOT / "configs" / "venues" / f"{v}.yaml").read_text())["maintenance_margin_ratio"]
              for v in ("binance", "bybit", "okx")}  # each venue's own liquidation line, beside risk's levels
    assert levels(figs["margin"]) == {RISK["margin_warning_ratio"], RISK["margin_urgent_ratio"],
                                      RISK["margin_maintenance_ratio"], *venues}
    warn, act = LAMBDA + RISK["ltv_warn_above_target"], LAMBDA + RISK["ltv_act_above_target"]
    assert levels(figs["health"]) == {1.0, round(0.95 / act, 6), round(0.95 / warn, 6), round(0.95 / LAMBDA, 6)}
    assert levels(figs["health"], "y2") == {round(LAMBDA, 6), round(warn, 6), round(act, 6), 0.95}
    for figure in figs.values():  # thinned: no trace carries every hour of a long run
        for t in figure["data"]:
            assert len(t.get("x", [])) <= MAX_POINTS


def test_the_charts_are_the_runs_own_numbers(run: Path) -> None:
    """Benchmarks from the market columns of hourly.csv, markers from instructions.csv, the attribution's total
    and the thinned risk readings against the books."""
    figs = figures((run / "report.html").read_text())
    summary = json.loads((run / "summary.json").read_text())
    rows = hourly_rows(run)
    capital = float(summary["capital"])
    equity = figs["equity"]
    first, last = rows[0], rows[-1]
    assert trace(equity, "hold ETH")["y"][-1] == pytest.approx(
        capital * float(last["eth_usd"]) / float(first["eth_usd"]), rel=1e-6)
    assert trace(equity, "pure lending")["y"][-1] == pytest.approx(
        capital * float(last["supply_index_usdt"]) / float(first["supply_index_usdt"]), rel=1e-6)
    assert trace(equity, "NAV")["y"][-1] == pytest.approx(float(summary["final_nav"]), abs=1e-3)
    instructions = list(csv.DictReader((run / "instructions.csv").read_text().splitlines()))
    markers = [t for t in equity["data"] if t["mode"] == "markers"]
    assert len(instructions) == summary["instructions"] == sum(len(t["x"]) for t in markers) >= 1
    assert {t["name"].split(" (")[0] for t in markers} == {r["change"] for r in instructions}
    assert trace(figs["attribution"], "total")["y"][-1] == pytest.approx(float(summary["total_pnl"]), abs=0.01)
    for venue in ("binance", "bybit", "okx"):  # the worst reading survives the thinning
        lowest = min(float(r[f"margin_ratio_{venue}"]) for r in rows if r[f"margin_ratio_{venue}"])
        assert min(y for y in trace(figs["margin"], venue)["y"] if y is not None) == pytest.approx(lowest, abs=1e-5)
    # The delta is the strategy's (book_delta, and its drift over the hedge), its extremes kept by the thinning.
    drifts = [math.copysign(float(r["delta_drift"]), float(r["book_delta"])) for r in rows if r["delta_drift"]]
    high = trace(figs["delta"], "net delta / hedge")["y"]
    assert max(y for y in high if y is not None) == pytest.approx(max(drifts) * 100, abs=1e-4)
    funding = trace(figs["funding"], "binance")
    assert any(y for y in funding["y"] if y is not None)


def test_the_header_and_the_statistics_table_come_from_the_summary(run: Path) -> None:
    page = (run / "report.html").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "usdt_market_neutral" in page and "share class usdt" in page
    assert f"{Decimal(summary['final_nav']):,.2f} USDT" in page and "100,000.00 USDT" in page
    stats = summary.get("statistics")
    if stats:  # written by build_summary since issue 11 (daemon.domain.statistics)
        for key in ("cagr", "volatility"):
            assert f"{stats[key] * 100:.2f} %" in page
        assert f"{stats['sharpe']:.2f}" in page
        assert stats["max_drawdown"]["peak"] in page


def test_a_summary_without_statistics_or_later_keys_still_makes_a_page(run: Path) -> None:
    """Render what is there: a summary from before `statistics` (or with its keys missing) gives a page that says
    so, never a crash; a key the page does not know is listed as it is."""
    summary = json.loads((run / "summary.json").read_text())
    config = load_config(str(run.parent / "configs" / "report.yaml"))
    ctx = report_context(config, mode_spec(config))
    bare = {k: v for k, v in summary.items() if k not in ("statistics", "delta_bands", "liquidations")}
    page = build_page(run, bare, ctx, plotly_js=lambda: "")
    assert "has no <code>statistics</code>" in page and "Liquidations" not in page
    partial = {**summary, "statistics": {"sharpe": 1.5}, "a_later_check": {"venue_x": {"hours": 3}}}
    page = build_page(run, partial, ctx, plotly_js=lambda: "")
    assert "1.50" in page and "a_later_check" in page and "venue_x" in page


@needs_chromium
def test_the_page_renders_in_headless_chromium_without_console_errors_or_network(run: Path) -> None:
    from playwright.sync_api import Route, sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            def only_files(route: Route) -> None:  # the page needs no network: anything else is recorded, refused
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    requests.append(route.request.url)
                    route.abort()

            page.route("**/*", only_files)
            page.goto((run / "report.html").as_uri())
            page.wait_for_function("document.querySelectorAll('.chart').length > 0 && "
                                   "document.querySelectorAll('.chart .main-svg').length >= "
                                   "document.querySelectorAll('.chart').length", timeout=60_000)
            charts = page.evaluate("document.querySelectorAll('.chart').length")
            drawn = page.evaluate("[...document.querySelectorAll('.chart')].filter(c => "
                                  "c.querySelector('.main-svg') && c.getBoundingClientRect().height > 100).length")
            heading = page.inner_text("h1")
        finally:
            browser.close()
    assert charts == drawn == 11
    assert "usdt_market_neutral" in heading
    assert errors == [] and requests == []
