"""The reconciler on the real daemon: the venues' books are the truth. A small unreported credit is found at
start-up, booked to the venue's figure and shows as reconciliation P&L; a large one halts trading before READY
is even sent. Hourly runs over a normal replay find nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemon_process import DaemonProcess, metric_value
from tests.integration.test_process import replay_config

pytestmark = pytest.mark.subprocess


def run(catalog: Path, tmp_path: Path, credits: dict[str, float]) -> DaemonProcess:
    config = replay_config(catalog, chaos={"unreported_usdt": credits})
    daemon = DaemonProcess(config, tmp_path)
    daemon.wait_ready()
    return daemon


def test_a_small_unreported_credit_is_booked_to_the_venues_figure_and_trading_goes_on(
        catalog: Path, tmp_path: Path) -> None:
    daemon = run(catalog, tmp_path, {"binance": 40.0})
    try:
        drifted = daemon.wait_for_event("balance_drifted")
        assert drifted["action"] == "booked to the venues' figures" and drifted["total_usd"] == "40.00"
        assert drifted["drifts"] == ["binance:USDT ours 0 venue 40.0 (40.00 USD)"]
        events = [e.get("event") for e in daemon.events()]
        assert events.index("balance_drifted") < events.index("daemon_ready")  # found before READY=1
        daemon.wait_for_event("order_filled")  # and the daemon trades on
        # The next hourly runs find the books and the venues in agreement, the correction included.
        daemon.wait_for(lambda: (metric_value(daemon.scrape(), "basisd_reconciliation_runs_total") or 0) >= 4, 10,
                        "three more hourly reconciliations")
        assert len([e for e in daemon.events() if e.get("event") == "balance_drifted"]) == 1
        scrape = daemon.scrape()
        assert metric_value(scrape, "basisd_trading_halted") == 0.0
        assert (metric_value(scrape, "basisd_reconciliation_runs_total") or 0) >= 3
        assert metric_value(scrape, "basisd_reconciliation_drift_usd", venue="binance") == 0.0  # the last run
        daemon.wait_for(lambda: metric_value(daemon.scrape(), "basisd_pnl", component="reconciliation") == 40.0, 5,
                        "the correction attributed as reconciliation P&L")
    finally:
        daemon.close()


def test_a_large_drift_halts_trading_before_the_daemon_reports_ready(catalog: Path, tmp_path: Path) -> None:
    daemon = run(catalog, tmp_path, {"okx": 500.0})
    try:
        drifted = daemon.wait_for_event("balance_drifted")
        assert drifted["action"] == "halt" and drifted["level"] == "critical"
        change = daemon.wait_for_event("trading_state_changed", current="HALTED")
        assert change["source"] == "reconciler" and "500.00 USD" in change["reason"]
        events = [e.get("event") for e in daemon.events()]
        assert events.index("trading_state_changed") < events.index("daemon_ready")
        assert not [e for e in daemon.events() if e.get("event") == "order_filled"]  # it never entered
    finally:
        daemon.close()


def test_basisd_reconcile_runs_one_now_and_prints_what_it_found(catalog: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.integration.daemon_process import ROOT

    sock = tmp_path / "control.sock"
    config = replay_config(catalog, control={"socket": str(sock)})
    daemon = DaemonProcess(config, tmp_path)
    try:
        daemon.wait_ready()
        daemon.wait_for_event("order_filled")
        runs = len([e for e in daemon.events() if e.get("event") == "reconciled"])
        done = subprocess.run([sys.executable, "-m", "daemon", "reconcile", "--socket", str(sock)], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "reconciled binance, bybit, okx, wallet: books and venues agree" in done.stdout
        assert len([e for e in daemon.events() if e.get("event") == "reconciled"]) > runs
    finally:
        daemon.close()
