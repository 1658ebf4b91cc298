"""Wall time and peak memory of a full-window `basisd backtest` (whole process), cold and warm, and of building
the bars alone, for usdt_market_neutral over the common window (11,856 hourly steps, three hedge venues).

Cold: an empty cache directory (`BASISD_CACHE_DIR`), so every CSV file is parsed and the bars built. Warm: the
same cache directory after a first run, so the parsed series and the built bars are read back.

    .venv/bin/python tests/bench/bench_backtest.py [--data ../shared/data] [--runs 3]
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


def run(cmd: list[str], cache_dir: str) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of one whole process."""
    env = {**os.environ, "BASISD_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    py = str(REPO / ".venv" / "bin" / "python")
    print(f"bench_backtest.py — {cpu_model()}, {os.cpu_count()} CPUs, commit {git_revision()}")
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as caches:
        backtest = [py, "-m", "daemon", "backtest", "--config", "configs/history.yaml", "--data", args.data,
                    "--out", out]
        bars = [py, "-c", "from pathlib import Path; from daemon.data.bars import History; "
                f"h = History(Path({args.data!r})); "
                "[None for _ in h.bars(1715475600 * 10**9, 11856, ('binance', 'bybit', 'okx'), False)]"]
        warm_dir = str(Path(caches) / "warm")
        run(backtest, warm_dir)  # fills the warm cache
        cases = [  # (name, command, cache directory of each run: "" = a fresh one)
            ("full backtest, cold (CSV)", backtest, ""),
            ("full backtest, warm (cache)", backtest, warm_dir),
            ("bars only, from CSV (no cache)", bars, ""),
        ]
        for n, (name, cmd, cache_dir) in enumerate(cases):
            results = [run(cmd, cache_dir or str(Path(caches) / f"fresh{n}-{i}")) for i in range(args.runs)]
            assert all(code == 0 for _, _, code in results), results
            walls = [w for w, _, _ in results]
            print(f"{name:32} wall median {statistics.median(walls):6.2f} s (runs: "
                  f"{', '.join(f'{w:.2f}' for w in walls)}), peak RSS {max(r for _, r, _ in results) / 1024:.1f} MiB")

if __name__ == "__main__":
    main()
