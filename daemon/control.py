"""The local control socket: `basisd halt`, `basisd resume` and `basisd status` talk to a running daemon here.

A Unix stream socket (never TCP: an emergency stop must not depend on the network or on a token) in the
runtime directory, mode 0660. Every connection is checked against the peer's credentials (SO_PEERCRED):
root, the daemon's own user, and members of its group (primary or supplementary) may use it; anyone else is
refused and the refusal is logged. One request per connection, one JSON object per line each way:

    → {"command": "halt", "reason": "fat finger on okx"}
    ← {"ok": true, "trading": "HALTED", ...}

Malformed, oversized or unknown requests are answered with `{"ok": false, "error": ...}` and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
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
SOCKET_NAME = "control.sock"

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(RuntimeError):
    """The daemon could not be reached, or refused the request; the message says which and why."""


def default_socket_path(state_dir: str | None, config_path: Path) -> Path:
    """Where the daemon listens and the CLI looks, when the config does not say (`control.socket`).

    Under systemd, `$RUNTIME_DIRECTORY` (the unit's RuntimeDirectory=, one per instance); else beside the
    persisted state; else, for a replay on a workstation, a per-user directory under the temporary directory,
    one socket per config file (two daemons of one config would be one daemon too many).
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    if state_dir:
        return Path(state_dir) / SOCKET_NAME
    digest = hashlib.sha256(str(config_path.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"basisd-{os.getuid()}" / f"control-{digest}.sock"


def socket_path(configured: str | None, state_dir: str | None, config_path: Path) -> Path:
    """The control socket of the daemon run with this config: `control.socket` if set, else the default."""
    return Path(configured) if configured else default_socket_path(state_dir, config_path)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(pid: int, uid: int, gid: int) -> bool:
    """Root, the daemon's own user, or a member of its group (primary or supplementary: an operator added to
    group basisd need not `sg basisd` first)."""
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
    _prepare(path)
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


def _prepare(path: Path) -> None:
    """Create the directory; remove a socket left by a process that died, but refuse to start beside a
    daemon that is still listening on it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    if not (path.exists() or path.is_symlink()):
        return
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


def request(path: Path, command: str, reason: str = "", timeout_s: float = 5.0,
            flatten: bool | None = None) -> dict[str, Any]:
    """Send one command to the daemon listening on `path` (blocking: the CLI's side)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no daemon is listening on {path} (is basisd running with this config?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as the basisd user, its group, or root") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the daemon on {path}: {exc.strerror or exc}") from None
        payload: dict[str, Any] = {"command": command, "reason": reason}
        if flatten is not None:
            payload["flatten"] = flatten
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ControlError(f"the daemon on {path} did not answer within {timeout_s:g} s") from None
    finally:
        sock.close()
    try:
        response = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"the daemon on {path} sent an unreadable answer") from None
    if not isinstance(response, dict):
        raise ControlError(f"the daemon on {path} sent an unreadable answer")
    if not response.get("ok"):
        raise ControlError(str(response.get("error", "refused")))
    return response
