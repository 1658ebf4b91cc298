from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from daemon.systemd import Notifier, watchdog_interval_s


def test_notifications_arrive_as_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier(path)
        notifier.ready("running")
        notifier.stopping("bye")
        first = server.recv(4096).decode().split("\n")
        assert first == ["READY=1", "STATUS=running", f"MAINPID={os.getpid()}"]
        assert server.recv(4096).decode() == "STOPPING=1\nSTATUS=bye"
        notifier.close()


def test_a_systemd_that_does_not_read_never_blocks_the_daemon(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)  # bound, never read: its queue fills after a few datagrams
        notifier = Notifier(path)
        started = time.monotonic()
        for i in range(2_000):
            notifier.status(f"tick {i}")
        assert time.monotonic() - started < 2  # a blocking socket would hang here for good
        assert 0 < len(notifier.sent) <= 50
        notifier.close()


def test_without_notify_socket_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")
    assert notifier.sent == []


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None  # the watchdog is meant for another process
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s() is None
