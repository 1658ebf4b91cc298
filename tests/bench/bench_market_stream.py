"""Market data latency: a mark moved on the venue → the quote the live feed gets, stream vs REST, per venue.

The fake (tests/fakes/exchange) serves the venue over TLS on loopback with the real host names, in this process.
For N rounds: the fake's mark is moved (`state.set_mark`, which pushes on the public socket), and the clock runs until
`StreamingMarketSource` holds the new mark exactly (its exact parsing included), which is what `perp()` returns next.
Beside it, in the same run, the REST source's `perp()` round trip (what a poll pays for one quote; a polled quote is
on average half a poll interval old on top of that), twice: with ccxt's rate limiter on, as in production (it spaces
one venue's requests by its `rateLimit`: most of that figure), and off (the wire and parsing alone). Printed:
p50/p99 of each, in milliseconds.

    .venv/bin/python tests/bench/bench_market_stream.py [--venue binance|bybit|okx|all] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from machine import cpu_model, git_revision

from daemon.venues.ccxt_market import CcxtMarketSource
from daemon.venues.ccxt_market_stream import MarketStreamSettings, StreamingMarketSource
from tests.fakes.exchange.server import FakeExchange

SYMBOLS = {"binance": "ETHUSDT", "bybit": "ETHUSDT", "okx": "ETH-USDT-SWAP"}  # the engine's perp symbol


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def bench(venue: str, rounds: int) -> dict[str, Any]:
    with TemporaryDirectory() as tmp:
        async with FakeExchange(cert_dir=Path(tmp)) as fake:
            session = fake.session()
            rest = CcxtMarketSource(venue, {"ETH": "ETH/USDT:USDT"}, session=session)
            source = StreamingMarketSource(venue, {"ETH": "ETH/USDT:USDT"}, fallback=rest, session=session,
                                           settings=MarketStreamSettings(stale_after_s=300))
            probe = CcxtMarketSource(venue, {"ETH": "ETH/USDT:USDT"}, session=session)  # REST, timed apart
            bare = CcxtMarketSource(venue, {"ETH": "ETH/USDT:USDT"}, session=session)
            bare._perp.enableRateLimit = False  # the round trip without ccxt's spacing of requests
            state = getattr(fake, venue)
            seen = asyncio.Event()
            want: list[Decimal] = []

            def held(kind: str, asset: str) -> None:  # the moment the new mark is held, exactly
                if want and source.latest("Perp", "ETH")["mark"] == want[0]:
                    seen.set()

            source.on_update(held)
            try:
                await source.perp("ETH", time.time_ns())  # connected and streaming
                await probe.perp("ETH", time.time_ns())  # markets loaded
                await bare.perp("ETH", time.time_ns())
                stream_ms: list[float] = []
                rest_ms: list[float] = []
                bare_ms: list[float] = []
                for i in range(rounds):
                    mark = Decimal(3000) + Decimal(i + 1) / 100
                    want[:] = [mark]
                    seen.clear()
                    start = time.perf_counter()
                    state.set_mark(SYMBOLS[venue], mark)
                    await asyncio.wait_for(seen.wait(), 10)
                    stream_ms.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    quote = await probe.perp("ETH", time.time_ns())
                    rest_ms.append((time.perf_counter() - start) * 1000)
                    assert quote.mark == mark
                    start = time.perf_counter()
                    await bare.perp("ETH", time.time_ns())
                    bare_ms.append((time.perf_counter() - start) * 1000)
            finally:
                await source.close()
                await probe.close()
                await bare.close()
    return {"venue": venue, "rounds": rounds,
            "stream_p50_ms": statistics.median(stream_ms), "stream_p99_ms": pct(stream_ms, 0.99),
            "rest_p50_ms": statistics.median(rest_ms), "rest_p99_ms": pct(rest_ms, 0.99),
            "bare_p50_ms": statistics.median(bare_ms), "bare_p99_ms": pct(bare_ms, 0.99)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venue", default="all", choices=["all", *SYMBOLS])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print(f"# {cpu_model()} · {git_revision()} · {args.rounds} rounds per venue")
    print("| venue | stream: mark moved → quote held, p50 / p99 ms | REST perp(), rate limiter on (production) | "
          "REST perp(), limiter off |")
    print("|---|---|---|---|")
    for venue in SYMBOLS if args.venue == "all" else [args.venue]:
        r = await bench(venue, args.rounds)
        print(f"| {venue} | {r['stream_p50_ms']:.2f} / {r['stream_p99_ms']:.2f} | "
              f"{r['rest_p50_ms']:.2f} / {r['rest_p99_ms']:.2f} | {r['bare_p50_ms']:.2f} / {r['bare_p99_ms']:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
