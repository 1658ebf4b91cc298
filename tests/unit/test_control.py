"""The control socket: what a request may say and what is refused, where it lives, which directory the daemon
will use, and to whom the CLI will talk."""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from daemon.control import (
    MAX_REQUEST_BYTES,
    ControlError,
    daemon_problem,
    default_socket_path,
    directory_problem,
    parse_request,
    request,
    serve_control,
)


def test_a_request_is_one_json_object_with_a_known_command() -> None:
    assert parse_request(b'{"command": "halt", "reason": "drill", "flatten": true}') == (
        "halt", {"reason": "drill", "flatten": True})
    assert parse_request(b'{"command": "status"}') == ("status", {"reason": "", "flatten": None})


@pytest.mark.parametrize(("raw", "why"), [
    (b"halt", "not a JSON object"),
    (b'["halt"]', "not a JSON object"),
    (b'{"command": "liquidate"}', "unknown command 'liquidate'"),
    (b'{"command": "halt", "reason": 7}', "reason must be a string"),
    (b'{"command": "halt", "reason": "' + b"x" * 600 + b'"}', "at most 500"),
    (b'{"command": "resume", "flatten": true}', "only with halt"),
    (b'{"command": "halt", "flatten": "yes"}', "true or false"),
    (b"\xff\xfe", "not a JSON object"),
    (b"{" + b" " * MAX_REQUEST_BYTES + b"}", "longer than"),
])
def test_a_bad_request_is_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_request(raw)


def test_the_socket_is_found_where_systemd_or_the_config_puts_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/basisd/acct1")
    assert default_socket_path("/var/lib/basisd", tmp_path / "a.yaml") == Path("/run/basisd/acct1/control.sock")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert default_socket_path("/var/lib/basisd", tmp_path / "a.yaml") == Path("/var/lib/basisd/control.sock")
    one, other = default_socket_path(None, tmp_path / "a.yaml"), default_socket_path(None, tmp_path / "b.yaml")
    assert one != other and one == default_socket_path(None, tmp_path / "a.yaml")  # one per config, stable


# --- where it lives: the same path for every user of one config ---------------------------------------------


def in_child_as_nobody(work: Callable[[], int]) -> int:
    """Run `work` in a forked child as `nobody` (when root, as in CI) and return its exit code; the child
    never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            code = work()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (the nobody account)")
def test_the_default_socket_is_found_from_the_config_alone_whoever_asks(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = tmp_path / "a.yaml"
    mine = default_socket_path(None, config)
    assert mine.parent.parent == Path(tempfile.gettempdir())
    # An operator of another uid (in the daemon's group) naming the same config finds the same socket.
    assert in_child_as_nobody(lambda: 0 if default_socket_path(None, config) == mine else 2) == 0


# --- the directory: the daemon's own, or nothing --------------------------------------------------------------


def test_a_private_directory_of_ones_own_is_safe(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o750)
    assert directory_problem(tmp_path / "run", os.geteuid()) is None


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_a_directory_others_can_write_is_refused_naming_its_owner_and_mode(tmp_path: Path, mode: int) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    me = os.geteuid()
    assert directory_problem(run, me) == (f"the directory {run} is writable by its group or others: owner uid "
                                          f"{me} ({pwd.getpwuid(me).pw_name}), mode {mode:04o}")


def test_a_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    problem = directory_problem(tmp_path / "run", os.geteuid() + 1)
    assert problem is not None and f"{tmp_path / 'run'} is not owned by uid {os.geteuid() + 1}" in problem
    assert f"owner uid {os.geteuid()}" in problem and "mode 0700" in problem


def test_a_symlinked_directory_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(tmp_path / "real")
    problem = directory_problem(tmp_path / "run", os.geteuid())
    assert problem is not None and problem.startswith(f"{tmp_path / 'run'} is a symbolic link (owner uid")


def test_a_directory_below_one_others_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared, run = tmp_path / "shared", tmp_path / "shared" / "run"
    shared.mkdir()
    run.mkdir(mode=0o700)
    shared.chmod(0o777)  # anyone may rename `run` away and put their own in its place
    problem = directory_problem(run, os.geteuid())
    assert problem is not None and f"{shared} above it is writable by others" in problem and "mode 0777" in problem
    shared.chmod(0o1777)  # as /tmp: nobody else can rename what the daemon made there
    assert directory_problem(run, os.geteuid()) is None
    # ... but anyone could have made it first: a CLI cannot vouch for the owner of a directory in /tmp.
    problem = directory_problem(run, os.geteuid(), made_by_owner=True)
    assert problem is not None and "anyone could have made the directory first" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_directory_below_one_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "run").mkdir(mode=0o700)
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)  # its owner may rename `run` and replace it
    problem = directory_problem(theirs / "run", 0)
    assert problem is not None and f"{theirs} above it belongs to someone else (owner uid " in problem


# --- the daemon's side: it makes its directory, and refuses any other ---------------------------------------


def serve_briefly(path: Path, while_listening: Callable[[], None] = lambda: None) -> None:
    """Start the control server on `path` (raising what it raises), call `while_listening`, stop it."""
    async def handle(command: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "trading": "ACTIVE"}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(partial(serve_control, path, handle))
            while_listening()
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except ExceptionGroup as group:  # the task group's: what serve_control raised is the one inside
        (raised,) = group.exceptions
        raise raised from None


def test_the_daemon_makes_its_directory_0750_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "basisd-x" / "control.sock"
    seen: list[os.stat_result] = []
    old = os.umask(0o077)  # as under the unit's UMask=0077
    try:
        serve_briefly(path, lambda: seen.append(os.lstat(path.parent)))
    finally:
        os.umask(old)
    assert (stat.S_IMODE(seen[0].st_mode), seen[0].st_uid) == (0o750, os.geteuid())
    assert not path.parent.exists()  # gone with the daemon: no empty directory left per config in /tmp
    path.parent.mkdir(mode=0o700)  # one the operator made (or systemd's RuntimeDirectory=) is used, and kept
    serve_briefly(path)
    assert path.parent.is_dir() and not path.exists()


def test_the_daemon_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    path = tmp_path / "basisd-x" / "control.sock"
    path.parent.mkdir()
    path.parent.chmod(0o777)
    me = os.geteuid()
    with pytest.raises(ControlError, match=re.escape(f"{path.parent} is writable by its group or others: owner uid "
                                                     f"{me} ({pwd.getpwuid(me).pw_name}), mode 0777")):
        serve_briefly(path)


def test_the_daemon_refuses_a_symlinked_directory_or_socket_and_leaves_them(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ControlError, match=re.escape(f"{tmp_path / 'run'} is a symbolic link")):
        serve_briefly(tmp_path / "run" / "control.sock")
    assert not (tmp_path / "elsewhere" / "control.sock").exists()

    (tmp_path / "own").mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "own" / "control.sock").symlink_to(target)
    with pytest.raises(ControlError, match=r"control\.sock exists and is a symbolic link, never followed"):
        serve_briefly(tmp_path / "own" / "control.sock")
    assert target.read_text() == "keep me" and (tmp_path / "own" / "control.sock").is_symlink()


def test_the_daemon_never_deletes_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "state.json"  # a control.socket set, by mistake, to a file that matters
    path.write_text("{}")
    with pytest.raises(ControlError, match=re.escape(f"{path} exists and is not a socket")):
        serve_briefly(path)
    assert path.read_text() == "{}"


def test_the_daemon_replaces_a_stale_socket_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed daemon leaves
    serve_briefly(path)
    assert not path.exists()  # and removed at shutdown


# --- the CLI's side: it talks to the daemon only ------------------------------------------------------------


def test_the_cli_trusts_root_and_itself_wherever_the_socket_is(tmp_path: Path) -> None:
    assert daemon_problem(tmp_path / "x.sock", 1, 0) is None
    assert daemon_problem(tmp_path / "x.sock", 1, os.getuid()) is None


def test_the_cli_refuses_another_user_in_a_directory_it_does_not_own(tmp_path: Path) -> None:
    other = os.getuid() + 1
    problem = daemon_problem(tmp_path / "x.sock", 4242, other)
    assert problem is not None
    assert problem.startswith(f"refusing to talk to {tmp_path / 'x.sock'}: the process listening there (pid 4242, "
                              f"uid {other}, ")
    assert "nothing was sent" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_the_cli_trusts_the_owner_of_a_directory_only_it_could_make_or_of_the_config(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    run, config = tmp_path / "run", tmp_path / "a.yaml"
    run.mkdir(mode=0o700)
    config.write_text("")
    os.chown(run, nobody, -1)
    assert daemon_problem(run / "control.sock", 1, nobody) is None  # in root's private directory: root made it
    run.chmod(0o770)
    assert daemon_problem(run / "control.sock", 1, nobody) is not None
    assert daemon_problem(run / "control.sock", 1, nobody, config) is not None
    os.chown(config, nobody, -1)  # whoever owns the config could point control.socket anywhere anyway
    assert daemon_problem(run / "control.sock", 1, nobody, config) is None


@contextmanager
def answering(path: Path, answer: bytes) -> Iterator[list[bytes]]:
    """A listener on `path` (of this uid: trusted) that answers `answer` to one connection; yields what it got."""
    received: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            received.append(conn.recv(4096))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        thread.join(timeout=5)
        server.close()


@pytest.mark.parametrize(("answer", "why"), [
    (b"", "hung up without an answer"),
    (b"not json\n", "unreadable answer (not JSON)"),
    (b"\xff\xfe\n", "unreadable answer (not JSON)"),
    (b'["ok"]\n', "not a JSON object"),
    (b'{"ok": "yes"}\n', "refused, without saying why"),
    (b'{"ok": false, "error": "permission denied for uid 7"}\n', "refused: permission denied for uid 7"),
    (b'{"ok": false, "error": ["x"]}\n', "refused, without saying why"),
])
def test_a_malformed_answer_is_a_control_error(tmp_path: Path, answer: bytes, why: str) -> None:
    with answering(tmp_path / "c.sock", answer), pytest.raises(ControlError, match=re.escape(why)):
        request(tmp_path / "c.sock", "status")


def test_a_well_formed_answer_is_returned_as_it_came(tmp_path: Path) -> None:
    with answering(tmp_path / "c.sock", b'{"ok": true}\n') as received:
        assert request(tmp_path / "c.sock", "halt", "drill", flatten=True) == {"ok": True}
    assert json.loads(received[0]) == {"command": "halt", "reason": "drill", "flatten": True}
