"""The replay feed: bars from any source (the synthetic market, recorded history) on the injected clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

from daemon.clock import Clock
from daemon.domain.bars import MarketBar
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
from daemon.domain.synthetic import NS_PER_HOUR
from daemon.venues.simulated import SimulatedExchange


def perp_instrument(venue: str, asset: str = "ETH") -> InstrumentId:
    return InstrumentId(f"{venue}:Perp:{asset}USDT")


def spot_instrument(venue: str, asset: str = "ETH") -> InstrumentId:
    return InstrumentId(f"{venue}:Spot:{asset}USDT")


class BarFeed:
    """Hands out each bar once the clock reaches it, as market-data messages, and keeps the simulated
    venues' prices current (they fill at the venue's own price, never an average). Once a bar's prices, funding
    and indexes are in, the venues act on the new market as real ones would: every exchange checks its accounts'
    margin, then the `venue_actions` run (the simulated chain's reward payouts and AAVE liquidators)."""

    def __init__(
        self, bars: Iterator[MarketBar], clock: Clock, exchanges: Mapping[str, SimulatedExchange],
        board: MarketBoard | None = None, venue_actions: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        self._board = board
        self._venue_actions = venue_actions
        self._bars = bars
        self._clock = clock
        self._exchanges = exchanges

    async def next_batch(self) -> list[MarketData] | None:
        bar = next(self._bars, None)
        if bar is None:
            return None
        await self._clock.sleep_until(bar.ts_ns)
        now = self._clock.now_ns()
        ts = bar.ts_ns
        out: list[MarketData] = []
        spot_venue = next(iter(self._exchanges), "binance")
        self._observe_ranges(bar)
        for asset, spot, perp_marks, funding in (("ETH", bar.eth_spot, bar.perp_marks, bar.funding),
                                                 ("BTC", bar.btc_spot, bar.btc_perp_marks, bar.btc_funding)):
            if not spot:
                continue  # this source carries no such market
            for exchange in self._exchanges.values():
                exchange.set_price("Spot", spot, asset)
            marks = dict(perp_marks)
            for venue, mark in perp_marks:
                if venue in self._exchanges:
                    self._exchanges[venue].set_price("Perp", mark, asset)
                out.append(PriceTicked(perp_instrument(venue, asset), mark, ts, now))
            out.append(PriceTicked(spot_instrument(spot_venue, asset), spot, ts, now))
            for venue, rate in funding:
                # A funding row is a settlement: its rate is paid at its timestamp (the exchanges' funding
                # history, e.g. Binance's fundingTime/fundingRate), on the position held now, at the venue's mark.
                if venue in self._exchanges:
                    await self._exchanges[venue].settle_funding(rate, marks[venue], asset)
                out.append(FundingRateReported(perp_instrument(venue, asset), rate, ts + 8 * NS_PER_HOUR, ts, now))
        for token, eth_per_token in bar.reward_prices_eth:
            out.append(PriceTicked(InstrumentId(f"uniswap:Spot:{token}USDT"), eth_per_token * bar.eth_spot, ts, now))
        out.append(ReserveIndexesReported("weETH", bar.weeth_liquidity_index, bar.weeth_liquidity_index, ts, now))
        out.append(ReserveIndexesReported("WETH", bar.weth_liquidity_index, bar.weth_borrow_index, ts, now))
        out.append(ReserveIndexesReported("USDT", bar.usdt_liquidity_index, bar.usdt_liquidity_index, ts, now))
        out.append(OracleRateReported("weETH/ETH", bar.weeth_eth_oracle, ts, now))
        out.append(GasPriceReported(bar.gas_gwei, ts, now))
        if self._board is not None:
            for update in out:
                self._board.update(update)
        await self._venues_act()
        return out

    def _observe_ranges(self, bar: MarketBar) -> None:
        """Before the new prices: the books held through the hour these extremes come from."""
        for venue, asset, high, low in bar.perp_ranges:
            if venue in self._exchanges:
                self._exchanges[venue].observe_range(asset, high, low)

    async def _venues_act(self) -> None:
        for exchange in self._exchanges.values():
            await exchange.check_liquidation()
        for act in self._venue_actions:
            await act()

