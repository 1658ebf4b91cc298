"""The replay feed: bars from any source (the synthetic market, recorded history) on the injected clock.

A replay that skips a bar, or stops early, reports a run it did not make. So every failure of the feed is fatal
(`FatalError`: the supervisor stops the run instead of restarting the market-data actor), and `None`, the end of
the replay, is returned only once the bar source has really run out. A bar source is a generator: once it has
raised it is closed, and asking it again would look exactly like its end, so the feed remembers the failure and
raises it again on every later call.
"""

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
from daemon.errors import FatalError, FeedError
from daemon.failures import describe
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
        self._failure: FatalError | None = None
        self._pending: MarketBar | None = None  # taken from the source, its instant not reached yet
        self.delivered = 0  # bars handed out in full

    async def next_batch(self) -> list[MarketData] | None:
        """The next bar's market data once the clock reaches it; None only at the real end of the source."""
        if self._failure is not None:
            raise self._failure
        try:
            if self._pending is None:
                self._pending = next(self._bars, None)
            if self._pending is None:
                return None
            # A cancellation here (the actor restarted while the clock waits) keeps the bar for the next call.
            await self._clock.sleep_until(self._pending.ts_ns)
            bar, self._pending = self._pending, None
            batch = await self._deliver(bar)
        except FatalError as exc:  # the source's own diagnosis (a malformed file, a missing value): kept as is
            self._failure = exc
            raise
        except Exception as exc:
            self._failure = FeedError(f"the market feed failed: {describe(exc)}")
            raise self._failure from exc
        self.delivered += 1
        return batch

    async def _deliver(self, bar: MarketBar) -> list[MarketData]:
        now = self._clock.now_ns()
        ts = bar.ts_ns
        out: list[MarketData] = []
        spot_venue = next(iter(self._exchanges), "binance")
        self._observe_ranges(bar)
        # ETH is valued, and the exchanges' spot books fill, at the bar's reference price (a liquid CEX spot); the
        # DEX pool's own price, where the chain swaps, is published beside it (`uniswap:Dex`).
        reference = bar.eth_reference or bar.eth_spot
        for asset, spot, perp_marks, funding in (("ETH", reference, bar.perp_marks, bar.funding),
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
        if bar.eth_spot:
            out.append(PriceTicked(InstrumentId("uniswap:Dex:ETHUSDT"), bar.eth_spot, ts, now))
        for token, eth_per_token in bar.reward_prices_eth:
            out.append(PriceTicked(InstrumentId(f"uniswap:Spot:{token}USDT"), eth_per_token * reference, ts, now))
        # The LST the bar is for (the mode's own: weETH, wstETH): the chain stakes, supplies and values that one.
        # AAVE's LST reserves are collateral only here, so the borrow index published is the supply index.
        out.append(ReserveIndexesReported(bar.lst, bar.lst_liquidity_index, bar.lst_liquidity_index, ts, now))
        out.append(ReserveIndexesReported("WETH", bar.weth_liquidity_index, bar.weth_borrow_index, ts, now))
        out.append(ReserveIndexesReported("USDT", bar.usdt_liquidity_index, bar.usdt_liquidity_index, ts, now))
        out.append(OracleRateReported(f"{bar.lst}/ETH", bar.lst_eth_oracle, ts, now))
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

