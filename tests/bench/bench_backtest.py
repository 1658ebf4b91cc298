"""Wall time and peak memory of a full-window `basisd backtest` (whole process), and of parsing the history
alone, for usdt_market_neutral over the common window (≈ 11,700 hourly steps, three hedge venues).

    .venv/bin/python tests/bench/bench_backtest.py [--data ../shared/data] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402


def run(cmd: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    py = str(REPO / ".venv" / "bin" / "python")
    print(f"bench_backtest.py — {cpu_model()}, {os.cpu_count()} CPUs, commit {git_revision()}")
    with tempfile.TemporaryDirectory() as out:
        backtest = [py, "-m", "daemon", "backtest", "--config", "configs/history.yaml", "--data", args.data,
                    "--out", out]
        parse = [py, "-c", "from pathlib import Path; from daemon.data.bars import History; "
                 f"h = History(Path({args.data!r})); "
                 "[None for _ in h.bars(1715475600 * 10**9, 11700, ('binance', 'bybit', 'okx'), False)]"]
        for name, cmd in (("full backtest (CLI, whole process)", backtest), ("history → 11,700 bars only", parse)):
            results = [run(cmd) for _ in range(args.runs)]
            assert all(code == 0 for _, _, code in results), results
            walls = [w for w, _, _ in results]
            print(f"{name:40} wall median {statistics.median(walls):6.2f} s (runs: "
                  f"{', '.join(f'{w:.2f}' for w in walls)}), peak RSS {max(r for _, r, _ in results) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
