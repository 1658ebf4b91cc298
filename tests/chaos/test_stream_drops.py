"""Issue 14 §3: the private streams dropped again and again while fills keep coming — no fill missed, none booked
twice. The real ccxt.pro against the exchange fake (tests/integration/test_ccxt_streams.py's rig), one venue at a
time: every `DROP_EVERY_S` the fake drops the stream's connections, and between the drops orders fill on the fake's
engine at random moments — some while the stream is down, so only the reconnect's backstop can find them.

The issue asks for a drop every 5 s for 5 minutes: `BASISD_CHAOS_DROP_FOR_S=300 BASISD_CHAOS_DROP_EVERY_S=5 pytest
tests/chaos/test_stream_drops.py` (BENCHMARKS.md has the result). CI runs the short version: a drop every 0.5 s for
6 s per venue (the same code path, ten times denser)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.integration.test_ccxt_streams import BINANCE_PERP, BYBIT, OKX, WAIT, Venue, our_trade_id, rig

pytestmark = [pytest.mark.chaos, pytest.mark.exchange_fake, pytest.mark.asyncio]

DROP_FOR_S = float(os.environ.get("BASISD_CHAOS_DROP_FOR_S", "6"))
DROP_EVERY_S = float(os.environ.get("BASISD_CHAOS_DROP_EVERY_S", "0.5"))
SEED = int(os.environ.get("BASISD_CHAOS_SEED", "14"))


@pytest.mark.timeout(max(60, int(DROP_FOR_S * 3) + 60))
@pytest.mark.parametrize("venue", [BINANCE_PERP, BYBIT, OKX], ids=lambda v: v.name)
async def test_fills_while_the_stream_drops_every_few_seconds_are_each_booked_once(exchange_fake: Any,
                                                                                  venue: Venue) -> None:
    rng = random.Random(f"{SEED}-{venue.name}")
    async with rig(exchange_fake, venue) as r:
        streams = venue.streams(exchange_fake)
        drop = streams.drop_connections if venue.name != "binance" else streams.drop_user_connections
        placed: list[int] = []  # the engine's trade ids of every fill, in order
        drops = 0
        started = time.monotonic()
        next_drop = started + DROP_EVERY_S
        n = 0
        while time.monotonic() - started < DROP_FOR_S:
            if time.monotonic() >= next_drop:
                drops += await drop() > 0
                next_drop += DROP_EVERY_S
            n += 1
            side = "BUY" if n % 2 else "SELL"  # flat over the run: the account never runs out of margin
            order = r.place(f"i{n}-1-1", side=side)
            placed += [t.id for t in venue.state(exchange_fake).trades if t.order_id == order.order_id]
            await asyncio.sleep(rng.uniform(0.02, DROP_EVERY_S / 2))
        # Every fill arrives, by the stream or the backstop after a reconnect, within the bound.
        expected = {our_trade_id(venue, t) for t in placed}
        await r.stream.wait_until(lambda: (r.drain() is not None) and expected <= {f.trade_id for f in r.got}, WAIT)
        counts = Counter(f.trade_id for f in r.got)
        assert set(counts) == expected, (set(counts) ^ expected)
        assert all(c == 1 for c in counts.values()), {t: c for t, c in counts.items() if c > 1}
        assert drops >= DROP_FOR_S / DROP_EVERY_S - 2 and r.stream.counters.reconnects >= drops // 2, \
            (drops, r.stream.counters.reconnects)
        # Some fills were found by the backstop: they happened while the stream was down.
        assert r.stream.counters.fills_backstop >= 1, vars(r.stream.counters)
