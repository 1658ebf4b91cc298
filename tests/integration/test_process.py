"""The process contract, tested on the real daemon in a child process."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.daemon_process import DaemonProcess, metric_value

pytestmark = pytest.mark.subprocess


def replay_config(catalog: Path, **sections: dict[str, object]) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["runtime"]["status_interval_s"] = 0.5
    data["replay"]["speed"] = 36_000  # ten market hours a second: trades happen within the test
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = catalog / "test_run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def daemon(catalog: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(replay_config(catalog), tmp_path)
    yield proc
    proc.close()


def test_ready_arrives_on_the_notify_socket_and_sigterm_exits_0(daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    ready = next(n for n in daemon.notifications if "READY=1" in n)
    assert "STATUS=running usdt_market_neutral on replay" in ready
    assert f"MAINPID={daemon.proc.pid}" in ready
    # READY only once every actor had started and the books had been reconciled with the venues
    started = daemon.wait_for_event("daemon_ready")
    assert set(started["actors"]) == {"positions", "fills", "execution", "risk", "strategy", "market_data", "status",
                                      "api", "reconciler"}
    events = [e.get("event") for e in daemon.events()]
    assert events.index("reconciled") < events.index("daemon_ready")
    # The strategy manager's entry runs through every actor and both simulated venues.
    entry = daemon.wait_for_event("instruction_finished", type="ENTRY")
    assert entry["completed"] is True and entry["steps_done"] == entry["steps"] == 9, entry
    status = daemon.wait_for_event("status")
    assert status["trading"] == "ACTIVE" and int(status["booked"]) >= 9
    assert abs(float(status["delta_eth"])) < 0.05  # hedged: perp shorts match the AAVE net ETH
    assert 99_000 < float(status["nav_usd"]) < 101_000  # 100,000 less fees, slippage and gas
    t0 = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout_s=5) == 0
    assert time.monotonic() - t0 < 5
    assert any("STOPPING=1" in n for n in daemon.notifications)
    assert daemon.wait_for_event("daemon_stopped")["reason"] == "signal SIGTERM"


def test_sigint_is_a_graceful_stop_too(daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(timeout_s=5) == 0


def test_sigusr1_halts_trading_visibly_in_logs_metrics_and_status(daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    daemon.wait_for_event("order_filled")
    before = daemon.scrape()
    assert metric_value(before, "basisd_trading_state", state="ACTIVE") == 1.0
    assert metric_value(before, "basisd_trading_halted") == 0.0

    daemon.signal(signal.SIGUSR1)
    change = daemon.wait_for_event("trading_state_changed", current="HALTED", timeout_s=5)
    assert change["source"] == "operator" and "SIGUSR1" in change["reason"]
    after = daemon.scrape()
    assert metric_value(after, "basisd_trading_state", state="HALTED") == 1.0
    assert metric_value(after, "basisd_trading_state", state="ACTIVE") == 0.0
    assert metric_value(after, "basisd_trading_halted") == 1.0
    daemon.wait_for(lambda: any("STATUS=trading HALTED" in n for n in daemon.notifications), 5, "halt STATUS")

    # No order reaches a venue after the halt, while the market keeps moving.
    fills_at_halt = len([e for e in daemon.events() if e.get("event") == "order_filled"])
    time.sleep(2.0)  # twenty market hours
    assert len([e for e in daemon.events() if e.get("event") == "order_filled"]) == fills_at_halt
    assert daemon.proc.poll() is None  # halted is not stopped: the daemon keeps reporting
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout_s=5) == 0


def test_metrics_export_the_runtime_figures(daemon: DaemonProcess) -> None:
    daemon.wait_ready()
    daemon.wait_for_event("status")
    text = daemon.scrape()
    for actor in ("positions", "fills", "execution", "risk", "strategy", "market_data", "status"):
        assert metric_value(text, "basisd_actor_restarts_total", actor=actor) == 0.0
        assert metric_value(text, "basisd_actor_heartbeat_age_seconds", actor=actor) is not None
        assert metric_value(text, "basisd_actor_handler_latency_seconds_count", actor=actor) is not None
    assert metric_value(text, "basisd_actor_queue_depth", actor="fills") is not None
    handled = metric_value(text, "basisd_actor_messages_handled_total", actor="positions")
    assert handled is not None and handled > 0
    assert metric_value(text, "basisd_channel_conflated_total", channel="strategy.market",
                        policy="conflating") is not None
    assert metric_value(text, "basisd_channel_dropped_total", channel="fills.reports", policy="lossless") == 0.0
    assert 'basisd_build_info{' in text and 'runtime_mode="replay"' in text
    assert metric_value(text, "process_resident_memory_bytes") is not None
    nav = metric_value(text, "basisd_nav_usd", currency="USD")
    assert nav is not None and 90_000 < nav < 110_000


def test_sighup_reloads_thresholds_and_logs_what_changed(catalog: Path, tmp_path: Path) -> None:
    path = replay_config(catalog)
    proc = DaemonProcess(path, tmp_path)
    try:
        proc.wait_ready()
        data = yaml.safe_load(path.read_text())
        data["risk"] = {"delta_act_fraction": 0.07}
        data["channels"] = {"commands_capacity": 2048}
        path.write_text(yaml.safe_dump(data))
        proc.signal(signal.SIGHUP)
        changed = proc.wait_for_event("threshold_reloaded", timeout_s=5)
        assert (changed["key"], changed["previous"], changed["current"]) == ("risk.delta_act_fraction", 0.05, 0.07)
        assert proc.wait_for_event("reload_needs_restart")["sections"] == ["channels"]
        # A broken file on reload is refused and the daemon keeps running on what it had.
        path.write_text("risk: {delta_act_fraction: lots}\n" + yaml.safe_dump({"strategy": data["strategy"]}))
        proc.signal(signal.SIGHUP)
        rejected = proc.wait_for_event("reload_rejected", timeout_s=5)
        assert any("risk.delta_act_fraction" in p for p in rejected["problems"])
        assert proc.proc.poll() is None
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=5) == 0
    finally:
        proc.close()


def test_an_actor_that_keeps_failing_exhausts_the_budget_halts_and_exits_non_zero(
    catalog: Path, tmp_path: Path
) -> None:
    path = replay_config(
        catalog,
        chaos={"fail_actor": "strategy", "fail_after_s": 0.05},
        supervisor={"restart_backoff_initial_s": 0.02, "restart_backoff_max_s": 0.05, "restart_budget_count": 3},
    )
    proc = DaemonProcess(path, tmp_path)
    try:
        code = proc.wait_exit(timeout_s=20)
        assert code == 70, proc.output()[-3000:]
        restarts = [e for e in proc.events() if e.get("event") == "actor_restarting"]
        assert len(restarts) == 3 and all(e["actor"] == "strategy" for e in restarts)
        escalation = proc.wait_for_event("restart_budget_exceeded")
        assert escalation["failures"] == 4
        halt = proc.wait_for_event("trading_state_changed", current="HALTED")
        assert halt["source"] == "supervisor"
        assert proc.wait_for_event("daemon_failed")["exit_code"] == 70
        assert any("STATUS=FAILED" in n for n in proc.notifications)
    finally:
        proc.close()


SECRET = "sk-live-DO-NOT-PRINT-8f3a9c"


def test_secret_values_never_appear_in_the_daemons_output(catalog: Path, tmp_path: Path) -> None:
    proc = DaemonProcess(replay_config(catalog), tmp_path,
                         env={"BASISD_CREDENTIALS__BINANCE__API_SECRET": SECRET,
                              "BASISD_CREDENTIALS__RPC_URL": f"https://eth.example/v2/{SECRET}"})
    try:
        proc.wait_ready()
        proc.wait_for_event("status")
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=5) == 0
        assert SECRET not in proc.output()
    finally:
        proc.close()


def test_a_badly_typed_secret_is_reported_without_its_value(catalog: Path, tmp_path: Path) -> None:
    path = replay_config(catalog, credentials={"binance": {"api_key": [SECRET]}})
    proc = DaemonProcess(path, tmp_path, args=["check-config", str(path)])
    try:
        assert proc.wait_exit(timeout_s=10) == 78
        assert "credentials.binance.api_key" in proc.output()
        assert SECRET not in proc.output()
    finally:
        proc.close()


def test_watchdog_pings_only_while_every_heartbeat_is_fresh(catalog: Path, tmp_path: Path) -> None:
    path = replay_config(
        catalog,
        chaos={"fail_actor": "risk", "fail_after_s": 2.0, "fault": "hang"},
        supervisor={"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 0.5},
    )
    proc = DaemonProcess(path, tmp_path, env={"WATCHDOG_USEC": "200000"})  # ping every 0.1 s
    try:
        proc.wait_ready()
        proc.wait_for(lambda: proc.notifications.count("WATCHDOG=1") >= 5, 5, "watchdog pings while healthy")
        proc.wait_for_event("chaos_hang", timeout_s=5)
        proc.wait_for_event("watchdog_withheld", timeout_s=5, stale_actors=["risk"])
        pings = proc.notifications.count("WATCHDOG=1")
        time.sleep(1.0)
        proc.poll_notifications()
        assert proc.notifications.count("WATCHDOG=1") == pings  # no ping while `risk` is stale
        assert any("STATUS=degraded: stale heartbeat from risk" in n for n in proc.notifications)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=5) == 0  # a hung actor does not block the stop
    finally:
        proc.close()
