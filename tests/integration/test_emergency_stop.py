"""The emergency stop on the real daemon in a child process: `basisd halt` and SIGUSR1 halt trading within a
second everywhere it shows, cancel the simulated venues' open orders, and the halt survives a restart until
`basisd resume`. The control socket refuses what it should, changing nothing."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT, DaemonProcess, metric_value
from tests.integration.test_process import replay_config

pytestmark = pytest.mark.subprocess


def start(catalog: Path, tmp_path: Path, name: str, sock: Path | None = None) -> tuple[DaemonProcess, Path]:
    state, sock = tmp_path / "state", sock or tmp_path / "control.sock"
    config = replay_config(catalog, runtime={"state_dir": str(state)}, control={"socket": str(sock)},
                           chaos={"resting_orders_per_venue": 2})
    run_dir = tmp_path / name
    run_dir.mkdir()
    daemon = DaemonProcess(config, run_dir)
    daemon.wait_ready()
    daemon.wait_for_event("control_listening")
    return daemon, sock


def basisd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def api_trading_state(daemon: DaemonProcess) -> str:
    port = int(daemon.wait_for_event("api_listening")["port"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/positions/summary", timeout=5) as response:
        return str(json.loads(response.read())["trading"]["state"])


def halted_everywhere(daemon: DaemonProcess, within_s: float) -> None:
    """HALTED in the log, the metrics, the positions API and systemd's STATUS within `within_s` of the request."""
    deadline = time.monotonic() + within_s
    daemon.wait_for_event("trading_state_changed", current="HALTED", timeout_s=within_s)
    daemon.wait_for(lambda: any("STATUS=trading HALTED" in n for n in daemon.notifications),
                    max(0.05, deadline - time.monotonic()), "STATUS=trading HALTED")
    assert metric_value(daemon.scrape(), "basisd_trading_halted") == 1.0
    assert api_trading_state(daemon) == "HALTED"
    assert time.monotonic() <= deadline + 0.5  # the scrape itself may take a moment on a loaded machine


def test_basisd_halt_stops_trading_cancels_orders_and_survives_a_restart_until_resume(
        catalog: Path, tmp_path: Path) -> None:
    daemon, sock = start(catalog, tmp_path, "first")
    try:
        daemon.wait_for_event("order_filled")
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 0.0
        halt = basisd("halt", "--socket", str(sock), "--reason", "drill: fat finger on okx")
        assert halt.returncode == 0, halt.stderr
        assert "HALTED" in halt.stdout
        halted_everywhere(daemon, within_s=1.0)
        change = daemon.wait_for_event("trading_state_changed", current="HALTED")
        assert change["source"] == "operator" and "fat finger" in change["reason"]
        daemon.wait_for(lambda: len([e for e in daemon.events() if e.get("event") == "open_orders_cancelled"]) == 3,
                        1.0, "open orders cancelled on three venues")
        cancelled = {e["venue"]: e["count"] for e in daemon.events() if e.get("event") == "open_orders_cancelled"}
        assert cancelled == {"binance": 2, "bybit": 2, "okx": 2}
        assert metric_value(daemon.scrape(), "basisd_orders_cancelled_total") == 6.0

        status = basisd("status", "--socket", str(sock), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["trading"] == "HALTED" and report["status"]["open_orders_cancelled"] == 6
        assert set(report["status"]["actors"]) >= {"positions", "risk", "strategy", "execution"}
        assert report["status"]["portfolio"]["positions"]  # the hedges are still held: a halt is not an unwind
        balances = report["status"]["portfolio"]["balances"]  # every balance of the books, exactly
        assert {k.split(":")[0] for k in balances} >= {"binance", "bybit", "okx"}
        assert all(Decimal(v) for v in balances.values())
        assert report["status"]["reconciliation"]["runs"] >= 1 and report["status"]["journal"]["records"] > 0
        human = basisd("status", "--socket", str(sock))
        assert human.returncode == 0 and "trading: HALTED" in human.stdout and "reconciled: " in human.stdout
        assert "journal: " in human.stdout and "actor positions" in human.stdout

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout_s=10) == 0
    finally:
        daemon.close()
    record = (tmp_path / "state" / "trading_halt.json").read_bytes()
    since = json.loads(record)["since"]

    # A restart comes back halted, says why (the original halt, once), and sends nothing.
    daemon, sock = start(catalog, tmp_path, "second")
    try:
        change = daemon.wait_for_event("trading_state_changed", current="HALTED")
        assert change["source"] == "persisted"
        assert change["reason"] == (f"halted since {since} by operator: operator: drill: fat finger on okx; "
                                    "`basisd resume` lifts it")
        assert (tmp_path / "state" / "trading_halt.json").read_bytes() == record  # not re-wrapped on a restart
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 1.0
        time.sleep(1.0)  # ten market hours
        assert not [e for e in daemon.events() if e.get("event") == "order_filled"]
        resume = basisd("resume", "--socket", str(sock), "--reason", "checked the books")
        assert resume.returncode == 0, resume.stderr
        daemon.wait_for_event("trading_state_changed", current="ACTIVE", previous="HALTED")
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 0.0
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout_s=10) == 0
    finally:
        daemon.close()

    # Resumed is resumed for good: the next start is ACTIVE.
    daemon, _ = start(catalog, tmp_path, "third")
    try:
        daemon.wait_for_event("order_filled")  # nothing holds it back: it trades (entering afresh on replay)
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 0.0
    finally:
        daemon.close()


def test_sigusr1_is_the_same_emergency_stop(catalog: Path, tmp_path: Path) -> None:
    daemon, _ = start(catalog, tmp_path, "run")
    try:
        daemon.signal(signal.SIGUSR1)
        halted_everywhere(daemon, within_s=1.0)
        daemon.wait_for(lambda: len([e for e in daemon.events() if e.get("event") == "open_orders_cancelled"]) == 3,
                        2, "orders cancelled on three venues")
        assert json.loads((tmp_path / "state" / "trading_halt.json").read_text())["state"] == "HALTED"
    finally:
        daemon.close()


def test_the_control_socket_refuses_bad_requests_and_changes_nothing(catalog: Path, tmp_path: Path) -> None:
    daemon, sock = start(catalog, tmp_path, "run")
    try:
        for raw in (b"not json\n", b'["halt"]\n', b'{"command": "liquidate"}\n', b'{"command": "halt", "reason": 7}\n',
                    b"{" + b" " * 5000 + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                client.connect(str(sock))
                client.sendall(raw)
                answer = json.loads(client.makefile().readline())
            assert answer["ok"] is False and answer["error"], raw
        unknown = basisd("halt", "--socket", str(tmp_path / "nobody-here.sock"))
        assert unknown.returncode == 69 and "no daemon is listening" in unknown.stderr
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 0.0
        assert not [e for e in daemon.events() if e.get("event") == "trading_state_changed"]
        assert not (tmp_path / "state" / "trading_halt.json").exists()
    finally:
        daemon.close()


def as_nobody_halt(sock: Path) -> int:
    """In a child process running as `nobody`: 3 if the socket could not be opened, 4 if the daemon refused,
    0 if it obeyed."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, and leave without running anything of pytest's
        code = 1
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(5)
                try:
                    client.connect(str(sock))
                except PermissionError:
                    code = 3
                else:
                    # The daemon may answer and hang up before reading: the answer is what counts.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        client.sendall(b'{"command": "halt", "reason": "not mine"}\n')
                    answer = json.loads(client.makefile().readline())
                    code = 0 if answer.get("ok") else 4 if "permission denied" in answer.get("error", "") else 5
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user (the nobody account)")
def test_another_user_cannot_halt_the_daemon(catalog: Path, tmp_path: Path) -> None:
    # A directory nobody can traverse (pytest's own are private to root): the socket's mode must stop it.
    reachable = Path(tempfile.mkdtemp(prefix="basisd-control-"))
    reachable.chmod(0o755)
    daemon, sock = start(catalog, tmp_path, "run", reachable / "control.sock")
    try:
        assert as_nobody_halt(sock) == 3
        sock.chmod(0o666)  # a careless chmod: the daemon still checks who is asking (SO_PEERCRED)
        assert as_nobody_halt(sock) == 4
        daemon.wait_for_event("control_refused", peer_uid=pwd.getpwnam("nobody").pw_uid)
        assert metric_value(daemon.scrape(), "basisd_trading_halted") == 0.0
    finally:
        daemon.close()
        shutil.rmtree(reachable, ignore_errors=True)


def test_halt_with_flatten_unwinds_every_position_while_trading_stays_halted(catalog: Path, tmp_path: Path) -> None:
    daemon, sock = start(catalog, tmp_path, "run")
    try:
        daemon.wait_for_event("instruction_finished", type="ENTRY", completed=True)
        assert json.loads(basisd("status", "--socket", str(sock), "--json").stdout)["status"]["portfolio"]["positions"]
        halt = basisd("flatten", "--socket", str(sock), "--reason", "get out")  # = halt --flatten
        assert halt.returncode == 0, halt.stderr
        assert "HALTED" in halt.stdout and "flatten: flatten-" in halt.stdout and "REDUCE_PERP_SHORT" in halt.stdout
        halted_everywhere(daemon, within_s=1.0)
        done = daemon.wait_for_event("instruction_finished", type="UNWIND", timeout_s=10)
        assert done["completed"] is True, done
        time.sleep(1.0)  # ten market hours: the strategy must not build anything back
        report = json.loads(basisd("status", "--socket", str(sock), "--json").stdout)
        assert report["trading"] == "HALTED"
        assert report["status"]["portfolio"]["positions"] == []  # every perp closed
        # The long leg is sold too: what delta is left is the gas owed in ETH (the USDT class runs gas debt).
        assert -0.05 < float(report["status"]["portfolio"]["net_delta_eth"]) <= 0
        # A second flatten in the same halt is refused: it would be sized from books the first one changed.
        again = basisd("halt", "--socket", str(sock), "--flatten")
        assert again.returncode == 0 and "already sent" in again.stdout
    finally:
        daemon.close()


def test_after_flatten_and_resume_the_strategy_enters_again(catalog: Path, tmp_path: Path) -> None:
    # Found as a hostile operator: after `basisd flatten` then `basisd resume` the daemon held nothing and logged
    # `holding reason='within every band'` forever (the USDT left on the venues read as "invested").
    daemon, sock = start(catalog, tmp_path, "run")
    try:
        daemon.wait_for_event("instruction_finished", type="ENTRY", completed=True)
        assert basisd("flatten", "--socket", str(sock), "--reason", "get out").returncode == 0
        assert daemon.wait_for_event("instruction_finished", type="UNWIND", timeout_s=10)["completed"] is True
        daemon.wait_for(lambda: json.loads(basisd("status", "--socket", str(sock), "--json").stdout)
                        ["status"]["portfolio"]["positions"] == [], 5, "every perp closed")
        def entries() -> list[dict[str, object]]:
            return [e for e in daemon.events() if e.get("event") == "instruction_finished" and e.get("type") == "ENTRY"]

        assert len(entries()) == 1  # halted and flat: nothing was built back
        resume = basisd("resume", "--socket", str(sock), "--reason", "back in")
        assert resume.returncode == 0, resume.stderr
        daemon.wait_for(lambda: len(entries()) == 2, 10, "a second ENTRY")  # a few market hours at replay speed
        assert entries()[-1]["completed"] is True, entries()[-1]
        report = json.loads(basisd("status", "--socket", str(sock), "--json").stdout)
        assert report["trading"] == "ACTIVE"
        assert len(report["status"]["portfolio"]["positions"]) == 3  # the three perp shorts, back
        assert abs(float(report["status"]["portfolio"]["net_delta_eth"])) < 0.05  # hedged again
        assert not [e for e in daemon.events() if e.get("event") == "holding" and e.get("reason") == "within every band"
                    and e.get("flat")]
    finally:
        daemon.close()
