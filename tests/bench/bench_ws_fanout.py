"""Fill-to-client latency of the positions stream with 1, 50 and 200 WebSocket clients, and the daemon's CPU.

Run from the repository root:

    .venv/bin/python tests/bench/bench_ws_fanout.py                          # 0, 1, 50, 200 clients, 30 s each
    .venv/bin/python tests/bench/bench_ws_fanout.py --clients 1,10 --window 5  # smoke test

One replay daemon (`configs/replay.yaml` copied to a temporary catalog) runs in a child process with the API
on a free port. It trades often so that there are fills to time: `position_deviation_threshold` 1e-5 and
`min_order_usd` 0.01 (strategy and venues) make the strategy rebalance on the smallest drift, at `--speed`
market seconds per real second (72,000: twenty market hours a second, ~60 price-driven updates and a few
fills a second). For each client count the script connects that many clients (websockets' asyncio client on
uvloop, one process), lets them settle, then measures for `--window` seconds:

* fill → client: for every `position_update` with `event_type: fill`, the client's `time.time_ns()` on
  receipt minus the update's `origin_ns`, which the daemon stamps with `time.time_ns()` when the fill enters
  the books' inbox (the fills actor's send to the positions actor). Both clocks are the same machine's wall
  clock. The span covers booking, the snapshot, the API actor's diff and encode, the per-client queue, the
  socket and the client's own parse. One sample per (fill, client).
* update → client: the same for every position update (mostly price updates, stamped when the positions
  actor published the snapshot).
* daemon CPU: utime + stime of the daemon's process from /proc/<pid>/stat over the window, as a share of
  one CPU (so 100 % is one core); the client process's own share alongside, since both share the machine.
* cut off: clients the daemon disconnected as too slow during the level (it never waits for them).

0 clients is the baseline (the daemon replaying and trading, the API idle). Percentiles are nearest-rank.
This is a plain script, not a pytest test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Level:
    clients: int
    window_s: float = 0.0
    fills: list[float] = field(default_factory=list)  # ms, one per (fill, client)
    updates: list[float] = field(default_factory=list)  # ms, every position update
    fill_events: int = 0  # distinct fills seen by the first client
    daemon_cpu: float = 0.0  # share of one CPU
    client_cpu: float = 0.0
    cut_off: int = 0
    closed: int = 0  # client connections that ended during the window


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_s(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICKS


class Daemon:
    def __init__(self, speed: float, tmp: Path) -> None:
        catalog = tmp / "configs"
        shutil.copytree(REPO / "configs", catalog)
        for venue in ("binance", "bybit", "okx"):
            path = catalog / "venues" / f"{venue}.yaml"
            path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "min_order_usd": 0.01}))
        data = yaml.safe_load((catalog / "replay.yaml").read_text())
        data["replay"]["speed"] = speed
        data["strategy"]["params"] = {"position_deviation_threshold": 0.00001, "min_order_usd": 0.01}
        self.config = catalog / "bench_ws.yaml"
        self.config.write_text(yaml.safe_dump(data))
        env = {**os.environ, "BASISD_API__PORT": "0", "BASISD_METRICS__PORT": "0", "BASISD_LOGGING__FORMAT": "json",
               "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen([str(PYTHON), "-m", "daemon", "run", "--config", str(self.config)], cwd=REPO,
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def wait_for(self, name: str, timeout_s: float = 30, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e.get("event") == name and all(e.get(k) == v for k, v in fields.items()):
                    return e
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited ({self.proc.returncode}) before {name}")
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {name}")

    def count(self, name: str) -> int:
        return sum(1 for e in list(self.events) if e.get("event") == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def run_level(uri: str, daemon: Daemon, level: Level, window_s: float, settle_s: float) -> None:
    measuring = False
    opened = 0
    first_fills: set[str] = set()

    async def client(index: int, ready: asyncio.Event) -> None:
        nonlocal opened
        try:
            async with connect(uri, proxy=None, compression=None, open_timeout=30, max_size=None) as ws:
                opened += 1
                if opened == level.clients:
                    ready.set()
                async for raw in ws:
                    now = time.time_ns()
                    if not measuring:
                        continue
                    message = json.loads(raw)
                    if message["type"] != "position_update":
                        continue
                    latency_ms = (now - message["origin_ns"]) / 1e6
                    level.updates.append(latency_ms)
                    if message["event_type"] == "fill":
                        level.fills.append(latency_ms)
                        if index == 0:
                            first_fills.add(message["fill"]["trade_id"])
        except ConnectionClosed:
            pass
        if measuring:
            level.closed += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(i, ready)) for i in range(level.clients)]
    if tasks:
        await asyncio.wait_for(ready.wait(), 60)
    await asyncio.sleep(settle_s)
    cut_before = daemon.count("api_client_too_slow")
    cpu0, mine0, t0 = cpu_s(daemon.proc.pid), cpu_s("self"), time.monotonic()
    measuring = True
    await asyncio.sleep(window_s)
    measuring = False
    elapsed = time.monotonic() - t0
    level.window_s = elapsed
    level.daemon_cpu = (cpu_s(daemon.proc.pid) - cpu0) / elapsed
    level.client_cpu = (cpu_s("self") - mine0) / elapsed
    level.fill_events = len(first_fills)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)  # let the daemon log the disconnections
    level.cut_off = daemon.count("api_client_too_slow") - cut_before


def table(levels: list[Level]) -> str:
    head = ("| clients | fills | fill→client p50 ms | p99 ms | max ms | updates/s per client | update→client p50 ms "
            "| p99 ms | daemon CPU | client CPU | cut off |")
    lines = [head, "|" + "---|" * 11]
    for lv in levels:
        per_client = len(lv.updates) / lv.window_s / lv.clients if lv.clients else 0.0
        lines.append(
            f"| {lv.clients} | {lv.fill_events if lv.clients else '-'} | {percentile(lv.fills, 50):.2f} "
            f"| {percentile(lv.fills, 99):.2f} | {max(lv.fills, default=math.nan):.2f} | {per_client:.1f} "
            f"| {percentile(lv.updates, 50):.2f} | {percentile(lv.updates, 99):.2f} | {lv.daemon_cpu:.0%} "
            f"| {lv.client_cpu:.0%} | {lv.cut_off} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="0,1,50,200", help="comma-separated client counts")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds per client count")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after connecting before measuring")
    parser.add_argument("--speed", type=float, default=72_000.0, help="market seconds per real second")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(args.speed, Path(tmp))
        try:
            port = int(daemon.wait_for("api_listening")["port"])
            daemon.wait_for("instruction_finished", type="ENTRY")
            uri = f"ws://127.0.0.1:{port}/api/v1/positions/stream"
            levels = []
            for n in counts:
                level = Level(n)
                uvloop.run(run_level(uri, daemon, level, args.window, args.settle))
                levels.append(level)
                print(f"  {n} clients: {len(level.fills)} fill samples, {len(level.updates)} update samples",
                      file=sys.stderr)
            fills_total = daemon.count("order_filled")
        finally:
            daemon.stop()
    print(f"bench_ws_fanout at {git_revision()} on {cpu_model()} ({os.cpu_count()} CPUs), Python "
          f"{platform.python_version()}; replay speed {args.speed:g}, {args.window:g} s per level, "
          f"{fills_total} fills in the whole run")
    print(table(levels))
    print(f"command: .venv/bin/python tests/bench/bench_ws_fanout.py --clients {args.clients} --window "
          f"{args.window:g} --settle {args.settle:g} --speed {args.speed:g}")


if __name__ == "__main__":
    main()
