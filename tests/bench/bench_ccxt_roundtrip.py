"""An order's round trip through the ccxt adapter to the exchange fake, beside a bare ccxt call in the same run.

The fake (tests/fakes/exchange) serves Binance USDⓈ-M, Bybit (linear) and OKX (swap) over TLS on loopback with the
real host names, in this process; ccxt talks to it exactly as it would to the venue. Two ways of sending the same
market order, each N times, interleaved round by round so that the machine's drift hits both alike:

* bare ccxt: `create_order` on `binanceusdm` / `bybit` / `okx` — the floor (ccxt's signing, aiohttp, TLS, the
  fake's matching);
* the adapter: `CcxtExchange.submit_order` — the same request plus our sizing checks, client-id mapping, the
  settled report and the fills read back (`fetch_my_trades`), which is a second request;
and how many requests each makes an order, from the fake's request log.

    .venv/bin/python tests/bench/bench_ccxt_roundtrip.py [--n 300] [--venue binance|bybit|okx|all]
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

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from machine import cpu_model, git_revision

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.messages import Side, SubmitOrder, VenueReport
from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials
from tests.fakes.exchange.server import FakeExchange

# venue -> (ccxt id, the fake's perp symbol, the bare call's amount: base units, or OKX's contracts of 0.1 ETH)
VENUES = {"binance": ("binanceusdm", "ETHUSDT", 0.01), "bybit": ("bybit", "ETHUSDT", 0.01),
          "okx": ("okx", "ETH-USDT-SWAP", 0.1)}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run(venue: str, n: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    exchange_id, symbol, bare_amount = VENUES[venue]
    perp = InstrumentId(f"{venue}:Perp:ETHUSDT")
    with TemporaryDirectory() as tmp:
        async with FakeExchange(cert_dir=Path(tmp)) as fake:
            state = getattr(fake, venue)
            state.set_mark(symbol, Decimal(3000))
            state.set_balance("USDT", Decimal(10_000_000), wallet="futures")
            bare = await fake.client(exchange_id)
            await bare.load_markets()
            creds = fake.credentials(venue)
            reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 10 * n + 10)
            adapter = CcxtExchange(
                CcxtVenueConfig(venue=venue, exchanges={"Perp": exchange_id}, instruments=(perp,),
                                credentials=Credentials(creds.api_key, creds.secret,
                                                        getattr(creds, "passphrase", None)),
                                key_setting=f"venues.{venue}.api_key", leverage=3, max_clock_skew_ms=1000,
                                timeout_ms=5000, enable_rate_limit=False),
                WallClock(), reports, session=fake.session())
            await adapter.start()
            times: dict[str, list[float]] = {"bare ccxt create_order": [], "adapter submit_order": []}
            calls = {name: 0 for name in times}
            for i in range(n):
                side = "buy" if i % 2 == 0 else "sell"
                before, started = len(fake.requests), time.perf_counter()
                await bare.create_order("ETH/USDT:USDT", "market", side, bare_amount)
                times["bare ccxt create_order"].append((time.perf_counter() - started) * 1e6)
                calls["bare ccxt create_order"] += len(fake.requests) - before
                order = SubmitOrder(ClientOrderId(f"r1i{i}-1-1"), InstructionId(f"r1i{i}-1"), perp,
                                    Side.BUY if i % 2 == 0 else Side.SELL, Decimal("0.01") if venue != "okx" else
                                    Decimal("0.1"), False, "bench", 0, 0)
                before, started = len(fake.requests), time.perf_counter()
                await adapter.submit_order(order)
                times["adapter submit_order"].append((time.perf_counter() - started) * 1e6)
                calls["adapter submit_order"] += len(fake.requests) - before
                while len(reports):
                    reports.receive_nowait()
            await adapter.close()
    return times, calls


async def main(n: int, venues: list[str]) -> None:
    print(f"bench_ccxt_roundtrip.py — {cpu_model()}, commit {git_revision()}, {n} market orders each, "
          f"the venues' fake over TLS on loopback, in process")
    for venue in venues:
        times, calls = await run(venue, n)
        print(f"{venue}:")
        for name, samples in times.items():
            print(f"  {name:28} p50 {statistics.median(samples):8.0f} µs   p99 {pct(samples, 0.99):8.0f} µs   "
                  f"{calls[name] / n:.1f} requests an order")
        ratio = statistics.median(times["adapter submit_order"]) / statistics.median(times["bare ccxt create_order"])
        print(f"  adapter / bare ccxt, p50: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--venue", choices=[*VENUES, "all"], default="all")
    args = parser.parse_args()
    asyncio.run(main(args.n, list(VENUES) if args.venue == "all" else [args.venue]))
