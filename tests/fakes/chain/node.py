"""One anvil process on a free loopback port, started from the binary itself (not the npm node wrapper, which adds
~90 ms and forwards signals to a child that can outlive it) and always stopped by its own PID.

An RPC node restart, as a test plays it: `save_state()` (anvil_dumpState: accounts, blocks, the block environment),
`stop()`, then `start_again()` on the same port — the clients' URL — from that state, its clock pinned just after the
last block (after `--load-state` anvil would take the wall clock, which is before a test that travelled in time, and
AAVE's interest math subtracts timestamps with checked arithmetic). `restart()` does the three. Block numbers and
hashes survive; the states of past blocks do not (a read at an older block fails after the restart).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType

from .artifacts import anvil_binary

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _post(url: str, method: str, params: list[object], timeout_s: float) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def _answers(url: str) -> bool:
    try:
        _post(url, "eth_chainId", [], 0.5)
        return True
    except (OSError, ValueError, RuntimeError):
        return False


class AnvilNode:
    """`AnvilNode(load_state=..., timestamp=...)` is ready when constructed; `stop()` (or `with`) ends it."""

    def __init__(self, load_state: Path | None = None, timestamp: int | None = None,
                 extra: tuple[str, ...] = (), port: int | None = None) -> None:
        self.port = free_port() if port is None else port  # a given port: a node restarted where clients point
        self.url = f"http://127.0.0.1:{self.port}"
        self._extra = tuple(extra)
        self._saved: tuple[Path, int] | None = None  # (state file, timestamp to resume at) of save_state
        self._state_dir: Path | None = None  # save_state's own files: removed with the node object
        self._start(load_state, timestamp)

    def _start(self, load_state: Path | None, timestamp: int | None) -> None:
        cmd = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if load_state is not None:
            cmd += ["--load-state", str(load_state)]
        if timestamp is not None:
            # After --load-state the next block would take the wall clock; pinning it just after the snapshot makes
            # every test's timeline the same whenever the snapshot was made (never pin before it: interest math
            # subtracts timestamps with checked arithmetic).
            cmd += ["--timestamp", str(timestamp)]
        cmd += list(self._extra)
        started = time.perf_counter()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The process must still be ours while we wait: a port taken by another anvil would otherwise answer for it.
        while not _answers(self.url):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self._proc.returncode} before answering: {err.strip()}")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                self.stop()
                raise RuntimeError(f"anvil did not answer on {self.url} within {READY_TIMEOUT_S:g} s")
            time.sleep(0.005)
        self.boot_s = time.perf_counter() - started

    def save_state(self, path: Path | None = None) -> Path:
        """The node's whole state now (anvil_dumpState, as the JSON `--load-state` reads) written to `path` (a file
        of the node's own by default, removed with the node object); `start_again` boots from it."""
        if path is None:
            if self._state_dir is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="anvil-state-"))
                weakref.finalize(self, shutil.rmtree, self._state_dir, ignore_errors=True)
            path = self._state_dir / "state.json"
        dump = _post(self.url, "anvil_dumpState", [], 30.0)
        latest = _post(self.url, "eth_getBlockByNumber", ["latest", False], 5.0)
        assert isinstance(dump, str) and isinstance(latest, dict)
        raw = bytes.fromhex(dump.removeprefix("0x"))
        path.write_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        self._saved = (path, int(latest["timestamp"], 16) + 1)
        return path

    def start_again(self) -> None:
        """Boot a stopped node again on the same port from the state `save_state` wrote."""
        if self.running:
            raise RuntimeError("the node is still running: stop it first")
        if self._saved is None:
            raise RuntimeError("no saved state to start from: call save_state() before stop()")
        path, timestamp = self._saved
        self._start(path, timestamp)

    def restart(self) -> None:
        """Stop and start again on the same URL with the same state (an RPC node restart)."""
        self.save_state()
        self.stop()
        self.start_again()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
        """End the process by its PID (a saved state stays for `start_again`)."""
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()

    def __enter__(self) -> AnvilNode:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
