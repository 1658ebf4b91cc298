"""Start-up time, resident memory and import time of the replay daemon.

Run from the repository root:

    .venv/bin/python tests/bench/bench_startup.py                 # 5 timed starts + 60 s memory run (about 70 s)
    .venv/bin/python tests/bench/bench_startup.py --settle 5      # shorter memory run (smoke test)

Start-up: a temporary directory holds an AF_UNIX SOCK_DGRAM socket; `.venv/bin/basisd run --config
configs/replay.yaml` is started with `NOTIFY_SOCKET` pointing at it and `BASISD_METRICS__PORT=0` (a free
port). The figure is the wall time from just before `subprocess.Popen` to the receipt of a datagram that
contains `READY=1`. Each daemon is then stopped with SIGTERM and waited for (the stop time and exit code are
reported too). One unreported warm-up start comes first (so a fresh checkout's .pyc compilation is not in
the figures), then `--runs` (5) timed starts: median, min and max are reported.

Memory: one more start; `--settle` (60) seconds after READY=1, VmRSS and VmHWM are read from
/proc/<MAINPID>/status (RSS is also sampled every 5 s on the way), then SIGTERM. The CPU time the daemon used
and the STATUS datagrams it sent in that window are reported too, to show it was running, not stalled.

Imports: wall time of `python -c "import daemon.app"` (and of `daemon.cli`, which `basisd` imports first)
against `python -c "pass"` (5 runs each), the in-process time of the import statement alone, and daemon.app's
heaviest direct imports from `python -X importtime`.

This is a plain script, not a pytest test (pytest collects `test_*.py` only).
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
BASISD = VENV_BIN / "basisd"
PYTHON = VENV_BIN / "python"
CONFIG = "configs/replay.yaml"

TARGET_READY_S = 2.0
TARGET_RSS_MB = 150.0


@dataclass
class Start:
    ready_s: float
    stop_s: float
    exit_code: int
    mainpid: int


class Notifications:
    """The systemd side of sd_notify: a datagram socket in a temporary directory, read continuously.

    A reader thread drains the socket the whole time, as systemd does. It must: the daemon's notifier sends
    with a blocking `sendto`, so once the socket's receive queue is full (net.unix.max_dgram_qlen, 10 here)
    an unread socket freezes the daemon's event loop (found while writing this benchmark; see BENCHMARKS.md).
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.received: queue.Queue[tuple[float, str]] = queue.Queue()  # (perf_counter at receipt, payload)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.put((time.perf_counter(), data.decode()))

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.received.get_nowait()[1])
            except queue.Empty:
                return out

    def wait_for(self, field: str, proc: subprocess.Popen[bytes], timeout: float) -> tuple[float, str]:
        """(perf_counter when the datagram was received, its payload) for the first one holding `field`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {field} within {timeout} s")
            try:
                received_at, payload = self.received.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode} before {field}") from None
                continue
            if field in payload.split("\n"):
                return received_at, payload

    def close(self) -> None:
        self._stop.set()
        self._reader.join()
        self.sock.close()


def start(notify: Notifications, log_path: str) -> tuple[subprocess.Popen[bytes], float, int]:
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, BASISD_METRICS__PORT="0", BASISD_API__PORT="0")
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    notify.drain()
    with open(log_path, "ab") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(BASISD), "run", "--config", CONFIG], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        received_at, payload = notify.wait_for("READY=1", proc, timeout=60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    ready_s = received_at - t0
    match = re.search(r"^MAINPID=(\d+)$", payload, re.M)
    mainpid = int(match.group(1)) if match else proc.pid
    return proc, ready_s, mainpid


def stop(proc: subprocess.Popen[bytes]) -> tuple[float, int]:
    # A blocking wait (Popen.wait with a timeout polls in steps of up to 50 ms, too coarse to time a stop);
    # a timer kills the daemon if it has not exited within 30 s.
    killer = threading.Timer(30, proc.kill)
    killer.start()
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    elapsed = time.perf_counter() - t0
    killer.cancel()
    return elapsed, code


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM/... in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm") or key.startswith("Rss"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_command(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def importtime_top(n: int) -> tuple[float, list[tuple[str, float]]]:
    """`daemon.app`'s cumulative import time and its direct imports by cumulative time (ms), from
    `python -X importtime` (a module is charged to whichever importer loads it first)."""
    res = subprocess.run([str(PYTHON), "-X", "importtime", "-c", "import daemon.app"], cwd=REPO,
                         check=True, capture_output=True, text=True)
    total = 0.0
    pending: list[tuple[str, float]] = []  # depth-1 entries since the last depth-0 entry
    top: list[tuple[str, float]] = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        depth = (len(m.group(3)) - 1) // 2
        cumulative_ms = int(m.group(2)) / 1000
        if depth == 1:
            pending.append((m.group(4), cumulative_ms))
        elif depth == 0:  # a parent is printed after its children
            if m.group(4) == "daemon.app":
                total, top = cumulative_ms, pending
            pending = []
    top.sort(key=lambda t: -t[1])
    return total, top[:n]






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="timed starts (after one warm-up start)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after READY=1 before reading RSS")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"bench_startup.py — started {started}; {cpu_model()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, commit {git_revision()}")
    print(f"command: {BASISD.relative_to(REPO)} run --config {CONFIG}  "
          f"(cwd {REPO}, NOTIFY_SOCKET=<tmp>/notify.sock, BASISD_METRICS__PORT=0, BASISD_API__PORT=0)")
    with tempfile.TemporaryDirectory(prefix="basisd-bench-") as tmp:
        notify = Notifications(tmp)
        log_path = os.path.join(tmp, "daemon.log")
        try:
            starts: list[Start] = []
            for i in range(args.runs + 1):
                proc, ready_s, mainpid = start(notify, log_path)
                stop_s, code = stop(proc)
                label = "warm-up (not counted)" if i == 0 else f"run {i}"
                print(f"  {label:<22} READY=1 after {ready_s * 1000:7.1f} ms; "
                      f"SIGTERM -> exit {code} in {stop_s * 1000:6.1f} ms; pid {proc.pid}, MAINPID {mainpid}",
                      flush=True)
                if i:
                    starts.append(Start(ready_s, stop_s, code, mainpid))

            ready = [s.ready_s * 1000 for s in starts]
            stops = [s.stop_s * 1000 for s in starts]
            print()
            print(f"| Start-up ({len(starts)} runs) | median | min | max | target | met? |")
            print("|---|---:|---:|---:|---:|---|")
            med = statistics.median(ready)
            print(f"| Popen -> READY=1 | {med:.0f} ms | {min(ready):.0f} ms | {max(ready):.0f} ms "
                  f"| < {TARGET_READY_S * 1000:.0f} ms | {'met' if med < TARGET_READY_S * 1000 else 'NOT met'}"
                  f"{'' if max(ready) < TARGET_READY_S * 1000 else ' (max over target)'} |")
            print(f"| SIGTERM -> exit | {statistics.median(stops):.0f} ms | {min(stops):.0f} ms "
                  f"| {max(stops):.0f} ms | — | — |")
            print(f"exit codes after SIGTERM: {sorted({s.exit_code for s in starts})}")

            # --- memory -------------------------------------------------------------------------------------
            print()
            proc, ready_s, mainpid = start(notify, log_path)
            print(f"memory run: READY=1 after {ready_s * 1000:.0f} ms (pid {proc.pid}, MAINPID {mainpid}); "
                  f"sampling for {args.settle:g} s", flush=True)
            t_ready = time.monotonic()
            cpu_at_ready = cpu_seconds(mainpid)
            notify.drain()
            samples: list[tuple[float, int]] = []
            at_ready = proc_status(mainpid)
            samples.append((0.0, at_ready["VmRSS"]))
            while True:
                elapsed = time.monotonic() - t_ready
                if elapsed >= args.settle:
                    break
                time.sleep(min(5.0, args.settle - elapsed))
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode} during the memory run")
                samples.append((time.monotonic() - t_ready, proc_status(mainpid)["VmRSS"]))
            final = proc_status(mainpid)
            cpu_used = cpu_seconds(mainpid) - cpu_at_ready
            statuses = [p for p in notify.drain() if p.startswith("STATUS=")]
            stop_s, code = stop(proc)
            rss_mb, hwm_mb = final["VmRSS"] / 1024, final["VmHWM"] / 1024
            print("RSS samples (s after READY: MiB): "
                  + ", ".join(f"{t:.0f}: {kb / 1024:.1f}" for t, kb in samples))
            print()
            print(f"| Memory ({args.settle:g} s after READY=1) | value | target | met? |")
            print("|---|---:|---:|---|")
            print(f"| VmRSS at READY=1 | {at_ready['VmRSS'] / 1024:.1f} MiB | — | — |")
            print(f"| VmRSS | {rss_mb:.1f} MiB | < {TARGET_RSS_MB:.0f} MB "
                  f"| {'met' if rss_mb < TARGET_RSS_MB else 'NOT met'} |")
            print(f"| VmHWM (peak RSS) | {hwm_mb:.1f} MiB | < {TARGET_RSS_MB:.0f} MB "
                  f"| {'met' if hwm_mb < TARGET_RSS_MB else 'NOT met'} |")
            print(f"| VmSize | {final['VmSize'] / 1024:.1f} MiB | — | — |")
            print(f"| CPU time used in those {args.settle:g} s | {cpu_used:.2f} s | — | — |")
            # The daemon must have been live, not stalled, while it was measured.
            print(f"STATUS datagrams received during those {args.settle:g} s: {len(statuses)}"
                  + (f"; last: {statuses[-1].splitlines()[0][:150]}" if statuses else ""))
            print(f"SIGTERM -> exit {code} in {stop_s * 1000:.0f} ms")
            if code != 0:
                print(f"WARNING: the daemon did not exit cleanly after SIGTERM (exit {code})")
        finally:
            notify.close()

    # --- imports --------------------------------------------------------------------------------------------
    print()
    runs = 5
    bare = time_command([str(PYTHON), "-c", "pass"], runs)
    app = time_command([str(PYTHON), "-c", "import daemon.app"], runs)
    cli = time_command([str(PYTHON), "-c", "import daemon.cli"], runs)
    print(f"| Interpreter + import ({runs} runs) | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, t in (('python -c "pass"', bare), ('python -c "import daemon.cli"', cli),
                    ('python -c "import daemon.app"', app)):
        print(f"| `{name}` | {statistics.median(t) * 1000:.0f} ms | {min(t) * 1000:.0f} ms "
              f"| {max(t) * 1000:.0f} ms |")
    print(f"import daemon.app alone (median difference): "
          f"{(statistics.median(app) - statistics.median(bare)) * 1000:.0f} ms")
    # The subprocess timings include interpreter start-up and teardown; time the import in-process too.
    inproc = []
    for _ in range(runs):
        res = subprocess.run([str(PYTHON), "-c", "import time; t = time.perf_counter(); import daemon.app; "
                              "print(time.perf_counter() - t)"], cwd=REPO, check=True, capture_output=True,
                             text=True)
        inproc.append(float(res.stdout.strip()))
    print(f"in-process `import daemon.app` (perf_counter around the statement, {runs} runs): median "
          f"{statistics.median(inproc) * 1000:.0f} ms, min {min(inproc) * 1000:.0f} ms, "
          f"max {max(inproc) * 1000:.0f} ms")
    print()
    total, top = importtime_top(12)
    print(f"`python -X importtime -c \"import daemon.app\"` (one run; the instrumentation inflates it): "
          f"daemon.app {total:.0f} ms cumulative; its heaviest direct imports (cumulative):")
    for name, ms in top:
        print(f"  {name:<40} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
