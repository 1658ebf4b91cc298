"""The synthetic market as a feed: hands out each bar once the clock reaches it, and keeps the
simulated venues' prices current (they fill at the venue's own price, never an average)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal

from daemon.clock import Clock
from daemon.domain.ids import InstrumentId
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    FundingRateReported,
    GasPriceReported,
    MarketData,
    OracleRateReported,
    PriceTicked,
    ReserveIndexesReported,
)
from daemon.domain.synthetic import NS_PER_HOUR, SyntheticBar, SyntheticMarketSpec, generate
from daemon.venues.simulated import SimulatedExchange


def perp_instrument(venue: str) -> InstrumentId:
    return InstrumentId(f"{venue}:Perp:ETHUSDT")


def spot_instrument(venue: str) -> InstrumentId:
    return InstrumentId(f"{venue}:Spot:ETHUSDT")


class SyntheticFeed:
    def __init__(
        self, spec: SyntheticMarketSpec, clock: Clock, exchanges: Mapping[str, SimulatedExchange],
        board: MarketBoard | None = None,
    ) -> None:
        self._board = board
        self._last_rate: dict[str, Decimal] = {}
        self._bars: Iterator[SyntheticBar] = generate(spec)
        self._clock = clock
        self._exchanges = exchanges
        self.bars_published = 0
        self.last_bar: SyntheticBar | None = None

    async def next_batch(self) -> list[MarketData] | None:
        bar = next(self._bars, None)
        if bar is None:
            return None
        await self._clock.sleep_until(bar.ts_ns)
        self.last_bar = bar
        self.bars_published += 1
        now = self._clock.now_ns()
        ts = bar.ts_ns
        out: list[MarketData] = []
        for exchange in self._exchanges.values():
            exchange.set_price("Spot", bar.eth_spot)
        for venue, mark in bar.perp_marks:
            if venue in self._exchanges:
                self._exchanges[venue].set_price("Perp", mark)
            out.append(PriceTicked(perp_instrument(venue), mark, ts, now))
        spot_venue = next(iter(self._exchanges), "binance")
        out.append(PriceTicked(spot_instrument(spot_venue), bar.eth_spot, ts, now))
        marks = dict(bar.perp_marks)
        for venue, rate in bar.funding:
            # The rate published at the previous settlement is paid now, on the position held now.
            if venue in self._exchanges and venue in self._last_rate:
                await self._exchanges[venue].settle_funding(self._last_rate[venue], marks[venue])
            self._last_rate[venue] = rate
            out.append(FundingRateReported(perp_instrument(venue), rate, ts + 8 * NS_PER_HOUR, ts, now))
        out.append(ReserveIndexesReported("weETH", bar.weeth_liquidity_index, bar.weeth_liquidity_index, ts, now))
        out.append(ReserveIndexesReported("WETH", bar.weth_borrow_index, bar.weth_borrow_index, ts, now))
        out.append(ReserveIndexesReported("USDT", bar.usdt_liquidity_index, bar.usdt_liquidity_index, ts, now))
        out.append(OracleRateReported("weETH/ETH", bar.weeth_eth_oracle, ts, now))
        out.append(GasPriceReported(bar.gas_gwei, ts, now))
        if self._board is not None:
            for update in out:
                self._board.update(update)
        return out

