"""The emergency stop cannot be faked (issue 10 §1), shown by running the attack as `nobody` in forked children
of the (root) test process, against the real daemon and the real CLI in subprocesses.

The attack: with neither `control.socket` nor `runtime.state_dir` set the socket is under the temporary
directory, where any local user can create names. An impostor who takes the socket's directory (or its name)
answers `trading: HALTED` to `basisd halt` while the daemon trades on. So the daemon refuses a directory it did
not make (exit 78, naming the path, its owner and mode), and the CLI sends nothing to a peer it cannot trust
(exit 69, naming who listened).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.control import default_socket_path
from tests.integration.daemon_process import ROOT, DaemonProcess
from tests.integration.test_process import replay_config

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (the nobody account), as in CI"),
]

NOBODY = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
LIE = b'{"ok": true, "trading": "HALTED", "reason": "fat finger"}\n'


def start_as_nobody(work: Callable[[], int]) -> int:
    """Fork a child that runs `work` as `nobody` and exits with its result (never returning into pytest)."""
    assert NOBODY is not None
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            code = work()
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def as_nobody(work: Callable[[], int]) -> int:
    return exit_code(start_as_nobody(work))


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A private stand-in for /tmp (root-owned, mode 1777) that `nobody` can reach, unlike pytest's tmp_path."""
    outer = Path(tempfile.mkdtemp(prefix="basisd-attack-"))
    try:
        outer.chmod(0o755)
        tmp = outer / "tmp"
        tmp.mkdir()
        tmp.chmod(0o1777)
        yield tmp
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def default_socket(config: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The socket the daemon and the CLI resolve for `config` when $TMPDIR is `tmp`."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    path = default_socket_path(None, config)
    monkeypatch.undo()
    assert path.is_relative_to(tmp), path
    return path


def env_with(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "RUNTIME_DIRECTORY": "", "BASISD_METRICS__PORT": "0",
            "BASISD_API__PORT": "0"}


def basisd(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, env=env_with(tmp), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("mode", [0o777, 0o700])
def test_the_daemon_refuses_a_socket_directory_another_user_made(catalog: Path, shared_tmp: Path, mode: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = replay_config(catalog, runtime={"run_for_s": 20})
    sock = default_socket(config, shared_tmp, monkeypatch)

    def squat() -> int:
        os.mkdir(sock.parent)
        os.chmod(sock.parent, mode)
        return 0

    assert as_nobody(squat) == 0
    run = basisd(shared_tmp, "run", "--config", str(config))
    out = run.stdout + run.stderr
    assert run.returncode == 78, out[-3000:]
    assert f"{config}: control.socket: cannot listen on {sock}: the directory {sock.parent} is not owned by uid 0 " \
           f"(root): owner uid {NOBODY.pw_uid if NOBODY else -1} (nobody), mode {mode:04o}" in out, out[-3000:]
    assert "Traceback" not in out
    assert '"daemon_ready"' not in out and "order_filled" not in out  # it stopped before trading
    assert not sock.exists()


def impostor(sock: Path, connections: int, report: int, ready: int) -> Callable[[], int]:
    """As nobody: make the socket's directory (0700, its own), listen, tell the lie to each caller and report
    how many bytes each one sent before hanging up."""
    def work() -> int:
        os.mkdir(sock.parent, 0o700)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(sock))
            os.chmod(sock, 0o666)
            server.listen(connections)
            server.settimeout(30)
            os.write(ready, b"R")
            for _ in range(connections):
                conn, _ = server.accept()
                got = b""
                with conn, contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the CLI hung up at once
                    conn.settimeout(10)
                    conn.sendall(LIE)
                    while chunk := conn.recv(4096):
                        got += chunk
                os.write(report, f"{len(got)}\n".encode())
        return 0
    return work


def test_the_cli_sends_nothing_to_an_impostor_and_says_who_listened(catalog: Path, shared_tmp: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = replay_config(catalog)
    sock = default_socket(config, shared_tmp, monkeypatch)
    report_r, report_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = start_as_nobody(impostor(sock, 2, report_w, ready_w))
    os.close(report_w)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"R", "the impostor did not start"
        by_config = basisd(shared_tmp, "halt", "--config", str(config), "--reason", "fat finger")
        by_socket = basisd(shared_tmp, "halt", "--socket", str(sock), "--reason", "fat finger")
        for answer in (by_config, by_socket):
            assert answer.returncode == 69, answer.stdout + answer.stderr
            assert "HALTED" not in answer.stdout and "Traceback" not in answer.stderr
            assert answer.stderr.startswith(
                f"basisd halt: refusing to talk to {sock}: the process listening there (pid {pid}, uid "
                f"{NOBODY.pw_uid if NOBODY else -1}, nobody) is not root, not you"), answer.stderr
            assert "nothing was sent" in answer.stderr
    finally:
        with os.fdopen(report_r) as reports:
            received = reports.read().split()
        os.close(ready_r)
        code = exit_code(pid)
    assert received == ["0", "0"]  # the impostor heard nothing: no command, no reason
    assert code == 0


def test_another_user_cannot_take_a_running_daemons_socket_and_operators_find_it(
        catalog: Path, shared_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = replay_config(catalog)
    sock = default_socket(config, shared_tmp, monkeypatch)
    daemon = DaemonProcess(config, tmp_path, env={"TMPDIR": str(shared_tmp), "RUNTIME_DIRECTORY": ""})
    try:
        assert daemon.wait_for_event("control_listening")["path"] == str(sock)
        made = os.lstat(sock.parent)
        assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (0, 0o750)  # made by the daemon, 0750

        def take_over() -> int:
            attempts: list[Callable[[], None]] = [
                lambda: os.rename(sock.parent, shared_tmp / "moved"),  # sticky: not nobody's to move
                lambda: os.unlink(sock), lambda: os.rename(sock, shared_tmp / "moved.sock"),
                lambda: os.mkdir(sock.parent)]
            for attempt in attempts:
                try:
                    attempt()
                except (PermissionError, FileExistsError):
                    continue
                return 2
            return 0

        assert as_nobody(take_over) == 0
        status = basisd(shared_tmp, "status", "--config", str(config), "--json")  # the default path, from the config
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["trading"] == "ACTIVE"
    finally:
        daemon.close()
