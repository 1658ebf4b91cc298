"""Bus throughput and latency: `daemon.bus.LosslessChannel` against plain anyio memory streams and asyncio.Queue.

Run from the repository root:

    .venv/bin/python tests/bench/bench_bus.py            # full run (about a minute on 2 cores)
    .venv/bin/python tests/bench/bench_bus.py --quick    # 1/10 of the messages, one repetition (smoke test)

What is measured, for each channel implementation, all in one process on `anyio.run(..., backend="asyncio")`:

* saturated throughput through one hop (producer task -> consumer task) and through three hops
  (producer -> stage1 -> stage2 -> consumer, three channels), in messages per second;
* unloaded latency through one hop and three hops: the producer stamps `time.perf_counter_ns()` into a
  message, sends it, and waits for an acknowledgement before sending the next one; the final consumer
  records `perf_counter_ns() - msg.ts_ns` on arrival (the acknowledgement is not in the measured interval).

Messages are frozen, slotted, 4-field dataclasses. For the throughput runs they are built before the clock
starts, so construction is not in the bus figure; one extra line builds them inside the timed producer loop
for `LosslessChannel`. Every capacity is 1024. Each measurement is repeated (3 times by default, the
implementations interleaved) and the median is reported. `gc.collect()` runs before each timed run; the
collector stays enabled while timing.

This is a plain script, not a pytest test (pytest collects `test_*.py` only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from daemon.bus import LosslessChannel  # the checkout's own, installed editable in .venv

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402

CAPACITY = 1024
INSTRUMENT = "binance:ETHUSDT-PERP"
PRICE = 3456.78

# Targets written in issue #2, for LosslessChannel.
TARGET_ONE_HOP = 1_000_000  # msgs/s
TARGET_THREE_HOP = 400_000  # msgs/s, saturated
TARGET_P99_THREE_HOP_US = 30.0  # unloaded


@dataclass(frozen=True, slots=True)
class Tick:
    seq: int
    ts_ns: int
    instrument: str
    price: float


Send = Callable[[Any], Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]


def make_lossless() -> tuple[Send, Receive]:
    ch: LosslessChannel[Tick] = LosslessChannel("bench", CAPACITY)
    return ch.send, ch.receive


def make_anyio() -> tuple[Send, Receive]:
    send_stream, receive_stream = anyio.create_memory_object_stream[Tick](CAPACITY)
    return send_stream.send, receive_stream.receive


def make_queue() -> tuple[Send, Receive]:
    q: asyncio.Queue[Tick] = asyncio.Queue(CAPACITY)
    return q.put, q.get


IMPLS: dict[str, Callable[[], tuple[Send, Receive]]] = {
    "LosslessChannel (ours)": make_lossless,
    "anyio memory stream": make_anyio,
    "asyncio.Queue": make_queue,
}
OURS = "LosslessChannel (ours)"
OURS_BUILD = "LosslessChannel, message built in loop"


def build_messages(n: int) -> list[Tick]:
    now = time.perf_counter_ns()
    return [Tick(i, now, INSTRUMENT, PRICE) for i in range(n)]


# --- saturated throughput ---------------------------------------------------------------------------------


async def _forward(receive: Receive, send: Send, n: int) -> None:
    for _ in range(n):
        await send(await receive())


async def _drain(receive: Receive, n: int) -> None:
    for _ in range(n):
        await receive()


async def _produce(send: Send, messages: list[Tick]) -> None:
    for m in messages:
        await send(m)


async def _produce_built(send: Send, n: int) -> None:
    clock = time.perf_counter_ns
    for i in range(n):
        await send(Tick(i, clock(), INSTRUMENT, PRICE))


async def throughput(make: Callable[[], tuple[Send, Receive]], hops: int, n: int, build_in_loop: bool) -> float:
    """Messages per second through `hops` channels in series, the producer never idle."""
    ends = [make() for _ in range(hops)]
    messages = None if build_in_loop else build_messages(n)
    gc.collect()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, ends[-1][1], n)
        for i in range(hops - 1):
            tg.start_soon(_forward, ends[i][1], ends[i + 1][0], n)
        if messages is None:
            tg.start_soon(_produce_built, ends[0][0], n)
        else:
            tg.start_soon(_produce, ends[0][0], messages)
    elapsed = time.perf_counter() - start
    return n / elapsed


# --- unloaded latency -------------------------------------------------------------------------------------


async def latency(make: Callable[[], tuple[Send, Receive]], hops: int, n: int) -> list[int]:
    """Nanoseconds from the send stamp to arrival at the last consumer, one message in flight at a time."""
    ends = [make() for _ in range(hops)]
    samples: list[int] = []
    ack: list[anyio.Event] = [anyio.Event()]

    async def consumer(receive: Receive) -> None:
        clock = time.perf_counter_ns
        for _ in range(n):
            m = await receive()
            samples.append(clock() - m.ts_ns)
            ack[0].set()

    async def producer(send: Send) -> None:
        clock = time.perf_counter_ns
        for i in range(n):
            event = ack[0] = anyio.Event()
            await send(Tick(i, clock(), INSTRUMENT, PRICE))
            await event.wait()

    gc.collect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer, ends[-1][1])
        for i in range(hops - 1):
            tg.start_soon(_forward, ends[i][1], ends[i + 1][0], n)
        await anyio.sleep(0.01)  # let every reader reach its idle wait before the first message
        tg.start_soon(producer, ends[0][0])
    return samples


def percentile(sorted_samples: list[int], q: float) -> float:
    idx = min(len(sorted_samples) - 1, max(0, round(q / 100 * len(sorted_samples)) - 1))
    return sorted_samples[idx]


# --- driver -----------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    one_hop: dict[str, int]
    three_hop: dict[str, int]
    latency: int


def sizes(scale: float) -> Sizes:
    def s(x: int) -> int:
        return max(1000, int(x * scale))

    return Sizes(
        one_hop={OURS: s(1_000_000), "anyio memory stream": s(200_000), "asyncio.Queue": s(1_000_000),
                 OURS_BUILD: s(1_000_000)},
        three_hop={OURS: s(600_000), "anyio memory stream": s(60_000), "asyncio.Queue": s(300_000),
                   OURS_BUILD: s(600_000)},
        latency=s(20_000),
    )


async def run_all(repeats: int, sz: Sizes) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}

    def put(impl: str, metric: str, value: float) -> None:
        results.setdefault(impl, {}).setdefault(metric, []).append(value)

    variants: list[tuple[str, Callable[[], tuple[Send, Receive]], bool]] = [
        (name, make, False) for name, make in IMPLS.items()
    ]
    variants.append((OURS_BUILD, make_lossless, True))
    for rep in range(repeats):
        for name, make, build in variants:
            one = await throughput(make, 1, sz.one_hop[name], build)
            three = await throughput(make, 3, sz.three_hop[name], build)
            put(name, "one_hop", one)
            put(name, "three_hop", three)
            line = f"  rep {rep + 1}/{repeats} {name:<40} 1 hop {one:>12,.0f}/s   3 hops {three:>12,.0f}/s"
            if not build:
                for hops in (1, 3):
                    samples = sorted(await latency(make, hops, sz.latency))
                    p50, p99 = percentile(samples, 50) / 1000, percentile(samples, 99) / 1000
                    put(name, f"p50_{hops}", p50)
                    put(name, f"p99_{hops}", p99)
                    line += f"   {hops}h p50 {p50:6.1f} p99 {p99:6.1f} us"
            print(line, file=sys.stderr, flush=True)
    return results


def median(results: dict[str, dict[str, list[float]]], impl: str, metric: str) -> float | None:
    values = results.get(impl, {}).get(metric)
    return statistics.median(values) if values else None


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def fmt_us(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def report(results: dict[str, dict[str, list[float]]], repeats: int, sz: Sizes) -> str:
    lines = []
    lines.append(f"Python {platform.python_version()} ({platform.python_implementation()}), "
                 f"anyio {anyio.__version__ if hasattr(anyio, '__version__') else _anyio_version()}, "
                 f"backend asyncio, capacity {CAPACITY}, median of {repeats} runs")
    lines.append(f"messages per throughput run: one hop {_sizes_str(sz.one_hop)}; "
                 f"three hops {_sizes_str(sz.three_hop)}; latency samples per run: {sz.latency:,}")
    lines.append("")
    header = ("| Implementation | 1 hop msgs/s | 3 hops msgs/s | 1 hop p50 µs | 1 hop p99 µs "
              "| 3 hops p50 µs | 3 hops p99 µs |")
    lines.append(header)
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for impl in [*IMPLS, OURS_BUILD]:
        lines.append(
            f"| {impl} | {fmt_rate(median(results, impl, 'one_hop'))} "
            f"| {fmt_rate(median(results, impl, 'three_hop'))} "
            f"| {fmt_us(median(results, impl, 'p50_1'))} | {fmt_us(median(results, impl, 'p99_1'))} "
            f"| {fmt_us(median(results, impl, 'p50_3'))} | {fmt_us(median(results, impl, 'p99_3'))} |"
        )
    lines.append("")

    def ratio(metric: str, other: str) -> str:
        a, b = median(results, OURS, metric), median(results, other, metric)
        if a is None or b is None:
            return "—"
        return f"{a / b:.2f}×"

    lines.append("| Ratio (median) | 1 hop msgs/s | 3 hops msgs/s | 1 hop p99 | 3 hops p99 |")
    lines.append("|---|---:|---:|---:|---:|")
    for other in ("anyio memory stream", "asyncio.Queue"):
        lines.append(f"| ours / {other} | {ratio('one_hop', other)} | {ratio('three_hop', other)} "
                     f"| {ratio('p99_1', other)} | {ratio('p99_3', other)} |")
    lines.append("")

    one = median(results, OURS, "one_hop")
    three = median(results, OURS, "three_hop")
    p99 = median(results, OURS, "p99_3")

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "NOT met")

    lines.append("| Target (issue #2), LosslessChannel | Target | Measured (median) | Met? |")
    lines.append("|---|---:|---:|---|")
    lines.append(f"| one hop, saturated | ≥ {TARGET_ONE_HOP:,} msgs/s | {fmt_rate(one)} msgs/s "
                 f"| {verdict(None if one is None else one >= TARGET_ONE_HOP)} |")
    lines.append(f"| three hops, saturated | ≥ {TARGET_THREE_HOP:,} msgs/s | {fmt_rate(three)} msgs/s "
                 f"| {verdict(None if three is None else three >= TARGET_THREE_HOP)} |")
    lines.append(f"| three hops p99, unloaded | ≤ {TARGET_P99_THREE_HOP_US:.0f} µs | {fmt_us(p99)} µs "
                 f"| {verdict(None if p99 is None else p99 <= TARGET_P99_THREE_HOP_US)} |")
    lines.append("")
    lines.append("All runs (msgs/s or µs):")
    for impl, metrics in results.items():
        for metric, values in metrics.items():
            shown = ", ".join(f"{v:,.0f}" if "hop" in metric else f"{v:.1f}" for v in values)
            lines.append(f"  {impl:<40} {metric:<10} {shown}")
    return "\n".join(lines)




def _sizes_str(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in d.items())


def _anyio_version() -> str:
    from importlib.metadata import version

    return version("anyio")




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count by this")
    parser.add_argument("--quick", action="store_true", help="--scale 0.1 --repeats 1")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the daemon does")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.repeats = 0.1, 1
    sz = sizes(args.scale)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    results = anyio.run(run_all, args.repeats, sz, backend="asyncio",
                        backend_options={"use_uvloop": args.uvloop})
    print(f"event loop: {'uvloop' if args.uvloop else 'stock asyncio'}")
    print(f"bench_bus.py — started {started}, took {time.perf_counter() - t0:.0f} s; {cpu_model()}, "
          f"{os.cpu_count()} CPUs; commit {git_revision()}")
    print(report(results, args.repeats, sz))


if __name__ == "__main__":
    main()
