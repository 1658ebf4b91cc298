"""Fills per second through the stream path, beside a bare ccxt.pro watcher in the same run.

The fake (tests/fakes/exchange) serves the venue over TLS on loopback with the real host names, in this process.
A burst of B market orders is placed on the fake's engine at once (each fill is pushed on the private socket:
on Binance USDⓈ-M an ORDER_TRADE_UPDATE NEW, one TRADE and an ACCOUNT_UPDATE); the clock runs from the first
placement until the last fill is seen. Two watchers, in alternating blocks so the machine's drift hits both:

* bare ccxt.pro: `watch_my_trades()` in a loop, a trade counted when its id first shows in ccxt's cache — the floor
  (the fake's sending, TLS, aiohttp, ccxt.pro's parsing and caching);
* the stream: `FillStream` over `CcxtExchange`, a fill counted when its `FillReport` is on the report channel — the
  same plus exact parsing from the payload, client-id decoding, de-duplication and the channel.

Printed per watcher: fills/s over all bursts (fills / summed burst time), and the latency of one fill (placement to
seen) p50/p99. The engine's own placement time (matching, building the messages) is printed apart: it is in both
figures, and it is the fake's, not ours.

    .venv/bin/python tests/bench/bench_stream_fills.py [--venue binanceusdm|bybit|okx] [--burst 100] [--bursts 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from machine import cpu_model, git_revision

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ids import ClientOrderId
from daemon.domain.messages import FillReport, VenueReport
from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials
from daemon.venues.ccxt_streams import FillStream, StreamSettings
from daemon.venues.client_ids import to_venue
from tests.fakes.exchange.server import FakeExchange

# venue → (fake account, engine symbol, engine quantity)
VENUES = {"binanceusdm": ("binance", "ETHUSDT", "0.01"), "bybit": ("bybit", "ETHUSDT", "0.01"),
          "okx": ("okx", "ETH-USDT-SWAP", "0.1")}
SETTINGS = StreamSettings(backstop_interval_s=3600)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Burst:
    """Places `size` market orders on the engine and records when each is placed."""

    def __init__(self, fake: Any, venue: str) -> None:
        self.account, self.symbol, self.qty = VENUES[venue]
        self.state = getattr(fake, self.account)
        self.n = 0
        self.placed: dict[str, float] = {}  # venue client id → perf_counter at placement
        self.engine_s = 0.0

    def fire(self, size: int) -> list[str]:
        cids = []
        started = time.perf_counter()
        for _ in range(size):
            self.n += 1
            cid = to_venue(ClientOrderId(f"r1i{self.n}-1-1"), "okx")
            self.state.place_order("futures", {"symbol": self.symbol, "side": "BUY" if self.n % 2 else "SELL",
                                               "type": "MARKET", "quantity": self.qty, "newClientOrderId": cid})
            self.placed[cid] = time.perf_counter()
            cids.append(cid)
        self.engine_s += time.perf_counter() - started
        return cids


def all_seen(seen: dict[str, float], cids: list[str], first: Callable[[], object] = lambda: None
             ) -> Callable[[], bool]:
    def check() -> bool:
        first()
        return all(c in seen for c in cids)
    return check


async def until(predicate: Callable[[], bool], within_s: float = 60) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():
            await asyncio.sleep(0)


async def bare_block(fake: Any, venue: str, burst: Burst, size: int, bursts: int) -> tuple[float, list[float]]:
    pro = await fake.client(venue, pro=True)
    await pro.load_markets()
    seen: dict[str, float] = {}

    async def watch() -> None:
        while True:
            await pro.watch_my_trades()
            now = time.perf_counter()
            for trade in pro.myTrades:
                info = trade.get("info") or {}
                cid = info.get("c") or info.get("orderLinkId") or info.get("clOrdId")
                if cid and cid not in seen:
                    seen[cid] = now

    task = asyncio.create_task(watch())
    await until(lambda: bool(_open_ws(pro)))
    await asyncio.sleep(0.2)  # subscribed (Bybit/OKX acknowledge after the socket opens)
    total, latencies = 0.0, []
    for _ in range(bursts):
        started = time.perf_counter()
        cids = burst.fire(size)
        await until(all_seen(seen, cids))
        total += max(seen[c] for c in cids) - started
        latencies += [(seen[c] - burst.placed[c]) * 1e6 for c in cids]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pro.close()
    return total, latencies


async def stream_block(fake: Any, venue: str, burst: Burst, size: int, bursts: int) -> tuple[float, list[float]]:
    account = VENUES[venue][0]
    creds = fake.credentials(account)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", size * bursts + 10)
    config = CcxtVenueConfig(venue=account, exchanges={"Perp": venue}, instruments=(f"{account}:Perp:ETHUSDT",),
                             credentials=Credentials(creds.api_key, creds.secret,
                                                     creds.passphrase if account == "okx" else None),
                             key_setting="bench", leverage=3, timeout_ms=5000, enable_rate_limit=False)
    adapter = CcxtExchange(config, WallClock(), reports, session=fake.session())
    await adapter.start()
    stream = FillStream(adapter, SETTINGS)
    await stream.start()
    await stream.wait_healthy(30)
    seen: dict[str, float] = {}

    def drain() -> bool:
        while len(reports):
            report = reports.receive_nowait()
            if isinstance(report, FillReport):
                seen[to_venue(report.client_order_id, "okx")] = time.perf_counter()
        return True

    total, latencies = 0.0, []
    for _ in range(bursts):
        started = time.perf_counter()
        cids = burst.fire(size)
        await until(all_seen(seen, cids, drain))
        total += max(seen[c] for c in cids) - started
        latencies += [(seen[c] - burst.placed[c]) * 1e6 for c in cids]
    await stream.close()
    await adapter.close()
    return total, latencies


def _open_ws(pro: Any) -> list[Any]:
    return [c for c in (pro.clients or {}).values() if c.connection is not None and not c.closed()]


async def main(venue: str, size: int, bursts: int, blocks: int) -> None:
    results: dict[str, tuple[float, list[float]]] = {"bare ccxt.pro": (0.0, []), "FillStream": (0.0, [])}
    with TemporaryDirectory() as tmp:
        async with FakeExchange(cert_dir=Path(tmp)) as fake:
            state = getattr(fake, VENUES[venue][0])
            state.set_balance("USDT", Decimal(10_000_000), wallet="futures")
            burst = Burst(fake, venue)
            await bare_block(fake, venue, burst, size, 1)  # warm-up of both paths
            await stream_block(fake, venue, burst, size, 1)
            burst.engine_s = 0.0
            for _ in range(blocks):
                for name, block in (("bare ccxt.pro", bare_block), ("FillStream", stream_block)):
                    total, latencies = await block(fake, venue, burst, size, bursts)
                    results[name] = (results[name][0] + total, results[name][1] + latencies)
    fills = size * bursts * blocks
    print(f"bench_stream_fills.py — {cpu_model()}, commit {git_revision()}, {venue} fake over TLS on loopback, in "
          f"process; {blocks} blocks × {bursts} bursts × {size} market orders per watcher")
    for name, (total, latencies) in results.items():
        print(f"{name:>14}: {fills / total:8.0f} fills/s; one fill, placement → seen: "
              f"p50 {pct(latencies, 0.5):8.0f} µs, p99 {pct(latencies, 0.99):8.0f} µs, "
              f"mean {statistics.fmean(latencies):8.0f} µs")
    print(f"{'engine':>14}: {burst.engine_s / (2 * fills) * 1e6:8.0f} µs per order placed (the fake's matching and "
          "message building, inside both figures)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venue", choices=sorted(VENUES), default="binanceusdm")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.venue, args.burst, args.bursts, args.blocks))
