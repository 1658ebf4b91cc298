"""One anvil process on a free loopback port, started from the binary itself (not the npm node wrapper, which adds
~90 ms and forwards signals to a child that can outlive it) and always stopped by its own PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from .artifacts import anvil_binary

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=0.5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class AnvilNode:
    """`AnvilNode(load_state=..., timestamp=...)` is ready when constructed; `stop()` (or `with`) ends it."""

    def __init__(self, load_state: Path | None = None, timestamp: int | None = None,
                 extra: tuple[str, ...] = (), port: int | None = None) -> None:
        self.port = free_port() if port is None else port  # a given port: a node restarted where clients point
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if load_state is not None:
            cmd += ["--load-state", str(load_state)]
        if timestamp is not None:
            # After --load-state the next block would take the wall clock; pinning it just after the snapshot makes
            # every test's timeline the same whenever the snapshot was made (never pin before it: interest math
            # subtracts timestamps with checked arithmetic).
            cmd += ["--timestamp", str(timestamp)]
        cmd += list(extra)
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

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> None:
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
