"""A year of market in a few minutes: the full replay daemon (API, metrics, control socket, reconciler, journal)
on the synthetic market flat out, sampling its memory as it goes — does anything grow without bound?

    .venv/bin/python tests/bench/bench_soak.py [--hours 8760]

Prints RSS samples against market time, the peak, the journal's size and the run's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=8760)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        config = yaml.safe_load((REPO / "configs" / "replay.yaml").read_text())
        config["replay"].update(speed=None, hours=args.hours)  # flat out (null cannot come from the environment)
        config["strategy"]["catalog_dir"] = str(REPO / "configs")
        config_path = Path(tmp) / "soak.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "BASISD_RUNTIME__STATE_DIR": str(state), "BASISD_METRICS__PORT": "0",
               "BASISD_API__PORT": "0",
               "BASISD_CONTROL__SOCKET": str(Path(tmp) / "control.sock"), "BASISD_LOGGING__FORMAT": "json",
               "BASISD_LOGGING__LEVEL": "warning"}
        started = time.perf_counter()
        proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "basisd"), "run", "--config", str(config_path)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            rss = rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - started, rss))
            time.sleep(1.0)
        wall = time.perf_counter() - started
        _, errors = proc.communicate()
        journal = state / "journal.sqlite"
        with sqlite3.connect(journal) as db:
            counts = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                      for table in ("venue_reports", "orders", "trading_state", "reconciliations")}
        size = sum(p.stat().st_size for p in state.glob("journal.sqlite*")) / 1024
    print(f"bench_soak.py — {cpu_model()}, commit {git_revision()}; {args.hours} market hours flat out, exit "
          f"{proc.returncode} after {wall:.1f} s")
    for t, rss in samples[:: max(1, len(samples) // 12)]:
        print(f"  {t:6.1f} s  RSS {rss:6.1f} MiB")
    settled = [rss for t, rss in samples if t >= 1.0] or [samples[-1][1]]  # past the interpreter's start-up
    print(f"at 1 s {settled[0]:.1f} MiB, last {samples[-1][1]:.1f} MiB, peak {max(r for _, r in samples):.1f} "
          f"MiB; journal {size:,.0f} KiB: {json.dumps(counts)}")
    warnings = [line for line in errors.splitlines() if '"level": "error"' in line or '"critical"' in line]
    print(f"error or critical log lines: {len(warnings)}")


if __name__ == "__main__":
    main()
