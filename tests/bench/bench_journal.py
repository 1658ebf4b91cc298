"""What journaling costs a fill: `Journal.record_report` latency (a durable SQLite WAL commit, synchronous=FULL)
for a real FillReport, as the fills actor makes it before the books see the fill; and what it costs an instruction:
its start and end rows (`record_instruction`, one durable commit each, issue 14), beside the fill in the same run.

    .venv/bin/python tests/bench/bench_journal.py [--n 2000] [--dir /var/lib/basisd]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from machine import cpu_model, git_revision

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.messages import FillReport, Side
from daemon.journal import Journal, encode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="where the journal file goes (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        journal = Journal(Path(directory) / "journal.sqlite", "replay", "bench", time.time_ns())
        samples = []
        for i in range(args.n):
            fill = FillReport(VenueId("binance"), TradeId(f"binance-t{i}"), ClientOrderId(f"i{i}-2"),
                              VenueOrderId(f"binance-{i}"), InstrumentId("binance:Perp:ETHUSDT"), Side.SELL,
                              Decimal("5.882"), Decimal("3399.26"), Decimal("9.99708268"), "USDT", i, i)
            started = time.perf_counter_ns()
            journal.record_report(i, "binance", f"binance:binance-t{i}", "FillReport", fill)
            samples.append((time.perf_counter_ns() - started) / 1000)
        plan = {"type": "ADD_MARGIN_TO_CEX", "steps": [
            {"step": n, "action": a, "venue": v, "order": o} for n, (a, v, o) in enumerate((
                ("ATOMIC_DELEVERAGE_AAVE", "aave_v3", False), ("TRANSFER_ETH_TO_CEX", "bybit", False),
                ("SELL_ETH_SPOT", "bybit", True), ("REDUCE_PERP_SHORT", "bybit", True)), start=1)]}
        ended = {"completed": True, "steps_done": 4, "steps": 4, "reports": 4, "reason": ""}
        instructions = []
        for i in range(args.n // 2):
            started = time.perf_counter_ns()
            journal.record_instruction(i, f"r1i{i}-1", "started", plan)
            journal.record_instruction(i, f"r1i{i}-1", "finished", ended)
            instructions.append((time.perf_counter_ns() - started) / 1000)
        journal.close()
        where = Path(directory).resolve()
    samples.sort()
    print(f"bench_journal.py — {cpu_model()}, commit {git_revision()}, journal in {where.parent} "
          f"({args.n} fills, one durable commit each)")
    print(f"record_report: p50 {statistics.median(samples):.0f} µs, p99 {samples[int(len(samples) * 0.99)]:.0f} µs, "
          f"max {samples[-1]:.0f} µs, {1e6 / statistics.mean(samples):,.0f} fills/s")
    instructions.sort()
    print(f"record_instruction, started + finished: p50 {statistics.median(instructions):.0f} µs, "
          f"p99 {instructions[int(len(instructions) * 0.99)]:.0f} µs ({len(instructions)} instructions); "
          f"ratio to one fill's p50: {statistics.median(instructions) / statistics.median(samples):.2f}")
    # The CPU part alone (the body made plain, redacted and JSON-encoded), free of the disk's fsync noise.
    runs = timeit.repeat(lambda: encode(fill), number=20_000, repeat=5)
    print(f"encode (CPU only, best of 5 × 20,000): {min(runs) / 20_000 * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
