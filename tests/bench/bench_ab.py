"""Two whole-process commands timed in turn (A B A B …) after a warm-up of each, with the ratio A/B taken pair by
pair: on a shared, noisy machine a ratio from the same run is the figure to trust, never a figure from another
day. Prints each command's median wall and CPU seconds and peak RSS, and the median of the paired ratios.

    .venv/bin/python tests/bench/bench_ab.py --runs 5 --a 'CMD A' --b 'CMD B'

Typical use, this commit against an older one: a `git worktree` of it beside this checkout, sharing the
virtualenv (`git worktree add /tmp/old <commit> && ln -s "$PWD/.venv" /tmp/old/.venv`), then as A and B:

    sh -c "cd DIR && BASISD_CACHE_DIR=/tmp/cache-DIR exec .venv/bin/python -m daemon backtest \\
           --config configs/history.yaml --data /abs/path/to/shared/data --out /tmp/ab-DIR"
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import REPO, cpu_model, git_revision


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the children, peak RSS KiB) of one whole process; exits if the command failed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{shlex.join(cmd)} exited {code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="command A (the change), one shell-quoted string")
    parser.add_argument("--b", required=True, help="command B (the baseline)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    a, b = shlex.split(args.a), shlex.split(args.b)
    print(f"bench_ab.py — {cpu_model()}, {os.cpu_count()} CPUs, commit {git_revision()}, {args.runs} pairs")
    run(a), run(b)  # warm-up: caches, page cache
    pairs = [(run(a), run(b)) for _ in range(args.runs)]
    for name, side in (("A", 0), ("B", 1)):
        walls = [p[side][0] for p in pairs]
        cpus = [p[side][1] for p in pairs]
        peak = max(p[side][2] for p in pairs) / 1024
        print(f"{name}: wall median {statistics.median(walls):6.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), "
              f"CPU median {statistics.median(cpus):6.2f} s, peak RSS {peak:.1f} MiB")
    print(f"A/B wall, median of pairs: {statistics.median(pa[0] / pb[0] for pa, pb in pairs):.3f}; "
          f"CPU: {statistics.median(pa[1] / pb[1] for pa, pb in pairs):.3f}")


if __name__ == "__main__":
    main()
