"""Nothing is traded before the daemon can be stopped and knows what it holds (daemon.gate), on the real daemon."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_process import replay_config

pytestmark = pytest.mark.subprocess


def first(events: list[dict[str, object]], name: str) -> int:
    """Index of the first log event called `name` (the log is one ordered stream)."""
    for n, event in enumerate(events):
        if event.get("event") == name:
            return n
    raise AssertionError(f"no {name} in the log")


def test_no_instruction_is_issued_before_every_listener_is_up_and_the_books_are_reconciled(
        catalog: Path, tmp_path: Path) -> None:
    proc = DaemonProcess(replay_config(catalog), tmp_path)
    try:
        proc.wait_ready()
        proc.wait_for_event("instruction_finished", timeout_s=15)
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=10) == 0
        events = proc.events()
    finally:
        proc.close()
    issued = first(events, "instruction_issued")
    for before in ("control_listening", "metrics_listening", "api_listening", "reconciled", "start_gate_opened",
                   "daemon_ready"):
        assert first(events, before) < issued, f"{before} came after the first instruction"
    # The strategy waited instead of deciding on unchecked books: nothing was refused for being early.
    assert not [e for e in events if "start-up" in str(e.get("reason", "")) and e.get("event") != "holding"]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process is listening on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("key", ["api.port", "metrics.port"])
def test_a_listener_port_in_use_is_a_config_error_before_anything_trades(
        catalog: Path, tmp_path: Path, held_port: int, key: str) -> None:
    env = {f"BASISD_{key.split('.')[0].upper()}__PORT": str(held_port)}
    proc = DaemonProcess(replay_config(catalog), tmp_path, env=env)
    try:
        code = proc.wait_exit(timeout_s=20)
        output = proc.output()
    finally:
        proc.close()
    assert code == 78, output
    assert key in output and str(held_port) in output
    assert "instruction_issued" not in output and "Traceback" not in output
    assert not any("READY=1" in n for n in proc.notifications)


def test_status_and_the_api_say_why_trading_waits_while_the_start_up_reconciliation_cannot_run(
        catalog: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys
    import urllib.request

    from tests.integration.daemon_process import ROOT

    # An exchange whose account cannot be read: the start-up reconciliation cannot run, so the gate stays closed
    # (until reconcile.startup_timeout_s, when the daemon comes up HALTED).
    path = replay_config(catalog, reconcile={"startup_timeout_s": 60}, chaos={"unreachable_accounts": ["okx"]})
    proc = DaemonProcess(path, tmp_path)
    try:
        port = int(proc.wait_for_event("api_listening")["port"])
        proc.wait_for_event("reconciliation_failed")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/positions/health", timeout=5) as response:
            health = json.loads(response.read())
        status = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path), "--json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=20)
        text = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=20)
        issued = [e for e in proc.events() if e.get("event") == "instruction_issued"]
        ready = any("READY=1" in n for n in proc.notifications)
    finally:
        proc.close()
    assert "start-up reconciliation" in health["trading_waits_for"]
    assert any("start-up reconciliation" in r for r in health["reasons"])
    assert status.returncode == 0, status.stderr
    assert "start-up reconciliation" in json.loads(status.stdout)["status"]["trading"]["waiting_for"]
    assert "start-up reconciliation" in text.stdout, text.stdout
    assert not issued and not ready
