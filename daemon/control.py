"""The local control socket: `basisd halt`, `basisd resume` and `basisd status` talk to a running daemon here.

A Unix stream socket (never TCP: an emergency stop must not depend on the network or on a token), mode 0660,
in a directory that only the daemon's user can change: whoever can write that directory can take the socket's
name and answer `trading: HALTED` while the daemon trades on. So the daemon creates its directory itself
(0750: members of its group must reach the socket, nobody but the daemon may change it; under systemd the
unit's RuntimeDirectory= makes it so) and refuses to start (ControlError, exit 78, naming the path, its owner
and its mode) in a directory it does not own, that its group or others can write, or that is a symlink, below
a directory that someone other than root or the daemon could change (a sticky one such as /tmp will do: nobody
else can rename what the daemon made in it), or with anything but a stale socket where its own should be.

Both ends check who is at the other end (SO_PEERCRED):

- the daemon serves root, its own user, and members of its group (primary or supplementary); anyone else is
  refused and the refusal is logged;
- the CLI talks only to root, to its own user, to the owner of the config file it was given (who could point
  `control.socket` anywhere anyway), or to the owner of the socket's directory when only that owner could
  have made it (safe as above, in a parent no one else can write, sticky or not: in /tmp anyone could have
  made it first). To anyone else it sends nothing, and says who was listening.

One request per connection, one JSON object per line each way:

    → {"command": "halt", "reason": "fat finger on okx"}
    ← {"ok": true, "trading": "HALTED", ...}

Malformed, oversized or unknown requests are answered with `{"ok": false, "error": ...}` and change nothing.

Where the socket is (`socket_path`): `control.socket`; else `$RUNTIME_DIRECTORY/control.sock` under systemd (a
shell has no $RUNTIME_DIRECTORY, which is why deploy/install.sh writes `control.socket` into the config);
else `<runtime.state_dir>/control.sock`; else `$TMPDIR/basisd-<hash of the config file's resolved path>/
control.sock`: one per config, the same for every user who names that config (with the same $TMPDIR),
whoever runs the daemon; the daemon removes that directory when it stops. There, in /tmp, a CLI of another
user trusts the daemon only as the config file's owner: for a daemon of its own user, set `control.socket`
or `runtime.state_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

log = structlog.get_logger()

COMMANDS = ("halt", "resume", "status", "reconcile")
MAX_REQUEST_BYTES = 4096
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a status answer is a few kB: more is not the daemon talking
SOCKET_NAME = "control.sock"
DIRECTORY_MODE = 0o750  # the group reaches the socket (mode 0660, SO_PEERCRED decides); only the owner writes
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(RuntimeError):
    """The daemon could not be reached, or refused the request; the message says which and why."""


def default_socket_path(state_dir: str | None, config_path: Path) -> Path:
    """Where the daemon listens and the CLI looks, when the config does not say (`control.socket`).

    Under systemd, `$RUNTIME_DIRECTORY` (the unit's RuntimeDirectory=, one per instance); else beside the
    persisted state; else, for a replay on a workstation, a directory under the temporary directory named by
    the config file alone (never by the caller's uid: an operator in the daemon's group must find it), one
    socket per config file (two daemons of one config would be one daemon too many).
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    if state_dir:
        return Path(state_dir) / SOCKET_NAME
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"basisd-{digest}" / SOCKET_NAME


def socket_path(configured: str | None, state_dir: str | None, config_path: Path) -> Path:
    """The control socket of the daemon run with this config: `control.socket` if set, else the default."""
    return Path(configured) if configured else default_socket_path(state_dir, config_path)


# --- who may be trusted ----------------------------------------------------------------------------------


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


def _owner_and_mode(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid} ({user_name(st.st_uid)}), mode {stat.S_IMODE(st.st_mode):04o}"


def _ancestors(directory: Path) -> list[tuple[Path, bool]]:
    """Every directory above `directory`, top down, as written and as resolved (a symlink on the way is as safe
    as the directory holding it, and then its target's own chain counts); True for its immediate parent."""
    lexical = Path(os.path.abspath(directory))
    resolved = Path(os.path.realpath(lexical.parent))
    chain = [*reversed(lexical.parents), *reversed(resolved.parents), resolved]
    return [(p, p in (lexical.parent, resolved)) for p in dict.fromkeys(chain)]


def _ancestor_problem(path: Path, owner: int, sticky_will_do: bool) -> str | None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path} above it cannot be examined: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (0, owner):
        return f"{path} above it belongs to someone else ({_owner_and_mode(st)}), who could replace it"
    if mode & _WRITABLE_BY_OTHERS and not (sticky_will_do and mode & stat.S_ISVTX):
        why = "without the sticky bit" if sticky_will_do else "so anyone could have made the directory first"
        return f"{path} above it is writable by others ({_owner_and_mode(st)}), {why}"
    return None


def directory_problem(directory: Path, owner: int, *, made_by_owner: bool = False) -> str | None:
    """Why `directory` is no place for the control socket of a daemon running as uid `owner`; None if it is.

    It must be a directory itself (a symlink there is never followed) owned by `owner` that its group and
    others cannot write, below directories only root or `owner` can change; a writable one with the sticky
    bit (/tmp) will do, as nobody else can rename what is in it. With `made_by_owner` (the CLI vouching for
    the directory's owner) not so for its parent: in /tmp anyone could have made the directory first.
    """
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return f"the directory {directory} does not exist"
    except OSError as exc:
        return f"the directory {directory} cannot be examined: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{directory} is a symbolic link ({_owner_and_mode(st)}), which is never followed there"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory} is not a directory ({_owner_and_mode(st)})"
    if st.st_uid != owner:
        return f"the directory {directory} is not owned by uid {owner} ({user_name(owner)}): {_owner_and_mode(st)}"
    if stat.S_IMODE(st.st_mode) & _WRITABLE_BY_OTHERS:
        return f"the directory {directory} is writable by its group or others: {_owner_and_mode(st)}"
    for ancestor, is_parent in _ancestors(directory):
        problem = _ancestor_problem(ancestor, owner, sticky_will_do=not (made_by_owner and is_parent))
        if problem:
            return f"the directory {directory} is unsafe: {problem}"
    return None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(pid: int, uid: int, gid: int) -> bool:
    """The daemon's side: root, the daemon's own user, or a member of its group (primary or supplementary: an
    operator added to group basisd need not `sg basisd` first)."""
    return uid in (0, os.getuid()) or gid == os.getgid() or os.getgid() in _supplementary_groups(pid)


def _supplementary_groups(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass  # the peer is gone, or /proc is hidden from us: judge by uid and primary gid alone
    return set()


def daemon_problem(path: Path, pid: int, uid: int, config_path: Path | None = None) -> str | None:
    """The CLI's side: why the process listening on `path` (pid, uid) is not to be trusted as the daemon.

    Trusted: root, the caller's own user, the owner of the config file the caller named (who could point
    `control.socket` anywhere anyway), or the owner of the socket's directory when only that owner could have
    made it (`directory_problem` with `made_by_owner`: in /tmp anyone could have made the directory first).
    """
    if uid in (0, os.getuid(), os.geteuid()):
        return None
    if config_path is not None:
        try:
            if os.stat(config_path).st_uid == uid:
                return None
        except OSError:
            pass  # no config to vouch for the peer: judge by the directory alone
    unsafe = directory_problem(path.parent, uid, made_by_owner=True)
    if unsafe is None:
        return None
    return (f"refusing to talk to {path}: the process listening there (pid {pid}, uid {uid}, {user_name(uid)}) "
            f"is not root, not you, and not the owner of a directory only it could have made ({unsafe}); "
            "nothing was sent. Set control.socket to a directory only the daemon's user can write, or use "
            "--socket with the path of the daemon's own socket")


# --- the daemon's side -----------------------------------------------------------------------------------


def parse_request(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The command and its arguments, or ValueError naming what is wrong with the request."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"request is not a JSON object: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError("request is not a JSON object")
    command = request.get("command")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r} (expected one of: {', '.join(COMMANDS)})")
    reason = request.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise ValueError("reason must be a string of at most 500 characters")
    flatten = request.get("flatten")
    if flatten is not None and (not isinstance(flatten, bool) or command != "halt"):
        raise ValueError("flatten must be true or false, and only with halt")
    return str(command), {"reason": reason, "flatten": flatten}


async def serve_control(path: Path, handle: Handler, *,
                        task_status: anyio.abc.TaskStatus[Path] = anyio.TASK_STATUS_IGNORED) -> None:
    made = _prepare(path)
    listener = await anyio.create_unix_listener(path, mode=0o660)
    log.info("control_listening", path=str(path))
    task_status.started(path)

    async def serve_one(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw_sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            pid, uid, gid = peer_credentials(raw_sock)
            if not peer_allowed(pid, uid, gid):
                log.warning("control_refused", peer_pid=pid, peer_uid=uid, peer_gid=gid)
                await _reply(stream, {"ok": False, "error": f"permission denied for uid {uid}"})
                return
            with anyio.move_on_after(5):
                raw = b""
                while b"\n" not in raw and len(raw) <= MAX_REQUEST_BYTES:
                    try:
                        raw += await stream.receive(4096)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                try:
                    command, args = parse_request(raw.split(b"\n", 1)[0])
                except ValueError as exc:
                    log.warning("control_request_refused", peer_pid=pid, peer_uid=uid, error=str(exc))
                    await _reply(stream, {"ok": False, "error": str(exc)})
                    return
                log.info("control_request", command=command, peer_pid=pid, peer_uid=uid)
                await _reply(stream, await handle(command, args))

    try:
        async with listener:
            await listener.serve(serve_one)
    finally:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink at shutdown; no await may run here
        if made:  # leave no empty directory per config in /tmp; never one systemd or the operator made
            with contextlib.suppress(OSError):
                path.parent.rmdir()


def _prepare(path: Path) -> bool:
    """Make the socket's directory if it is missing (True if so), refuse one that is not safely ours, remove
    a socket left by a process that died, and refuse to start beside a daemon that is still listening on it."""
    directory = path.parent
    made = _make_directory(directory)
    problem = directory_problem(directory, os.geteuid())
    if problem:
        raise ControlError(f"{problem}; the daemon (uid {os.geteuid()}, {user_name(os.geteuid())}) keeps its "
                           "control socket only in a directory it owns that no one else can write: remove it "
                           "and let the daemon make it, or set control.socket elsewhere")
    _clear_stale(path)
    return made


def _make_directory(directory: Path) -> bool:
    """Create `directory` (DIRECTORY_MODE whatever the umask: UMask=0077 would lock the group out) and say
    so; one that exists is left as it is, for `directory_problem` to judge."""
    if os.path.lexists(directory):
        return False
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return False  # made by someone else meanwhile: judged next
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, DIRECTORY_MODE)
    finally:
        os.close(fd)
    return True


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link, never followed there" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise ControlError(f"{path} exists and is {kind} ({_owner_and_mode(st)}): the daemon replaces only a "
                           "stale socket of its own; remove it or set control.socket elsewhere")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: stale
        return
    finally:
        probe.close()
    raise ControlError(f"another basisd is already listening on {path}")


async def _reply(stream: anyio.abc.SocketStream, response: dict[str, Any]) -> None:
    try:
        await stream.send(json.dumps(response, sort_keys=True).encode() + b"\n")
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return


# --- the CLI's side --------------------------------------------------------------------------------------


def request(path: Path, command: str, reason: str = "", timeout_s: float = 5.0,
            flatten: bool | None = None, config_path: Path | None = None) -> dict[str, Any]:
    """Send one command to the daemon listening on `path` (blocking: the CLI's side) and return its answer,
    a JSON object with `"ok": true`; ControlError for anything else. Nothing is sent before the peer is known
    to be the daemon (`daemon_problem`; `config_path`, the config the caller named, vouches for its owner)."""
    payload: dict[str, Any] = {"command": command, "reason": reason}
    if flatten is not None:
        payload["flatten"] = flatten
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        _connect(sock, path)
        pid, uid, _ = peer_credentials(sock)
        impostor = daemon_problem(path, pid, uid, config_path)
        if impostor:
            raise ControlError(impostor)
        data = _exchange(sock, json.dumps(payload).encode() + b"\n")
    except TimeoutError:
        raise ControlError(f"the daemon on {path} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise ControlError(f"lost the daemon on {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return _answer(path, data)


def _connect(sock: socket.socket, path: Path) -> None:
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        raise ControlError(f"no daemon is listening on {path} (is basisd running with this config?)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: run as the basisd user, its group, or root") from None
    except TimeoutError:
        raise
    except OSError as exc:
        raise ControlError(f"cannot reach the daemon on {path}: {exc.strerror or exc}") from None


def _exchange(sock: socket.socket, message: bytes) -> bytes:
    """Send the request, read the one-line answer. A daemon that refuses may hang up before reading all of
    the request: what it answered still counts."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(message)
    data = b""
    while b"\n" not in data and len(data) <= MAX_ANSWER_BYTES:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _answer(path: Path, data: bytes) -> dict[str, Any]:
    if not data:
        raise ControlError(f"the daemon on {path} hung up without an answer")
    line = data.split(b"\n", 1)[0]
    if len(line) > MAX_ANSWER_BYTES:
        raise ControlError(f"the daemon on {path} sent an answer longer than {MAX_ANSWER_BYTES} bytes")
    try:
        response = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"the daemon on {path} sent an unreadable answer (not JSON)") from None
    if not isinstance(response, dict):
        raise ControlError(f"the daemon on {path} sent an unreadable answer (not a JSON object)")
    if response.get("ok") is not True:
        error = response.get("error")
        text = error[:500] if isinstance(error, str) and error else "refused, without saying why"
        raise ControlError(f"the daemon on {path} refused: {text}")
    return response
