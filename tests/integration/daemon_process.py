"""Runs the real daemon in a child process, with a notify socket it can talk to like systemd."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class DaemonProcess:
    def __init__(self, config: Path, tmp: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.sock_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.1)
        self.notifications: list[str] = []
        self.lines: list[str] = []
        full_env = {**os.environ, "NOTIFY_SOCKET": self.sock_path, "BASISD_METRICS__PORT": "0",
                    "BASISD_API__PORT": "0",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        if "WATCHDOG_USEC" not in (env or {}):
            full_env.pop("WATCHDOG_USEC", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", *(args or ["run", "--config", str(config)])],
            cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    # --- observing ---------------------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def output(self) -> str:
        return "\n".join(self.lines)

    def poll_notifications(self) -> None:
        while True:
            try:
                self.notifications.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll_notifications()
            if predicate():
                return
            if self.proc.poll() is not None and not predicate():
                time.sleep(0.2)  # let the reader catch the last lines
                self.poll_notifications()
                if predicate():
                    return
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before {what}:\n{self.output()[-4000:]}")
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{self.output()[-4000:]}")

    def wait_for_event(self, name: str, timeout_s: float = 15, **fields: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events() if e.get("event") == name
                        and all(e.get(k) == v for k, v in fields.items())]
            return bool(found)

        self.wait_for(seen, timeout_s, f"log event {name} {fields or ''}")
        return found[0]

    def wait_ready(self, timeout_s: float = 15) -> None:
        self.wait_for(lambda: any("READY=1" in n for n in self.notifications), timeout_s, "READY=1")

    def metrics_port(self) -> int:
        return int(self.wait_for_event("metrics_listening")["port"])

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port()}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    # --- controlling ------------------------------------------------------------------------------------

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        self.poll_notifications()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self._reader.join(timeout=5)
            self.proc.stdout.close()
        self.sock.close()


def metric_value(scrape: str, name: str, **labels: str) -> float | None:
    for line in scrape.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            return float(value)
    return None
