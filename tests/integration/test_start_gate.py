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
