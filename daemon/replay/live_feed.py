"""The live feed: the venues' public market data, polled on the wall clock, as the replay's market-data messages.

Behind the same interface as the replay's `BarFeed` (`next_batch`, read by `actors.market_data`): every
`poll_interval_s` it asks each venue — concurrently, each bounded by `request_timeout_s` — for the mark and funding
rate of every perpetual the config trades, and the valuation reference's spot price on the spot venue; it hands
them out as `PriceTicked` / `FundingRateReported`, exactly as the replay does, and keeps the simulated exchanges'
prices at the live marks so paper fills happen there. A funding settlement is booked on a simulated exchange when
the venue's next settlement time moves on: the rate it reported for the one that passed is what was paid.

A venue whose data fails is degraded for that poll, logged once when it degrades and once when it recovers, and
never stops the feed; a venue that asks us to wait (429, Binance's 418 ban) is not asked again before it said. Its
series simply stop updating: each poll also publishes a gas price at the wall clock's time, so market time keeps
moving with the clock and a series not updated within the risk limits' seconds is reported stale by the existing
machinery (`domain.risk.stale_series` on the positions' board) even when every venue has stopped answering.

The chain, when there is one (`chain`: `daemon.venues.web3_market.ChainMarketSource`), is polled with the venues,
under the same timeout, and degrades the same way (its health is `health["chain"]`): its LST oracle rate, AAVE
indexes, DEX price and gas join the batch, and its gas replaces the fixed `gas_gwei` (paper's simulated wallet
pays that setting). A poll the chain fails re-publishes the last gas it reported — or `gas_gwei` if it never
answered — so the clock tick survives, while its own series (oracle, indexes, DEX) age and go stale.

The feed never ends: live data has no last bar. It asks each venue through the `MarketSource` it was given: the
venue's public streams with REST as the backstop (`daemon.venues.ccxt_market_stream`), or REST polling only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import anyio
import structlog

from daemon.clock import NS_PER_S, Clock
from daemon.domain.market import MarketBoard
from daemon.domain.messages import FundingRateReported, GasPriceReported, MarketData, PriceTicked
from daemon.failures import describe
from daemon.replay.feed import perp_instrument, spot_instrument
from daemon.venues.quotes import PerpQuote, SpotQuote
from daemon.venues.simulated import SimulatedExchange

log = structlog.get_logger()

FUNDING_INTERVAL_NS = 8 * 3_600 * NS_PER_S  # when a venue does not say when its next settlement is


class ChainSource(Protocol):
    """The chain's market data (`daemon.venues.web3_market.ChainMarketSource`): one read, every message of it."""

    venue: str

    async def poll(self, now_ns: int) -> Sequence[MarketData]: ...

    async def close(self) -> None: ...


class MarketSource(Protocol):
    """One venue's public market data (`daemon.venues.ccxt_market.CcxtMarketSource`)."""

    venue: str

    async def perp(self, asset: str, now_ns: int) -> PerpQuote: ...

    async def spot(self, asset: str, now_ns: int) -> SpotQuote: ...

    async def close(self) -> None: ...


@dataclass
class VenueHealth:
    degraded: bool = False
    failures: int = 0  # polls in a row with at least one failed request
    last_error: str = ""
    wait_until_ns: int = 0  # the venue asked us to wait (Retry-After, a ban) until then
    polls: int = 0
    ok_polls: int = 0


class LiveFeed:
    def __init__(
        self, sources: Mapping[str, MarketSource], clock: Clock, exchanges: Mapping[str, SimulatedExchange],
        board: MarketBoard, *, assets: Sequence[str], spot_venue: str, poll_interval_s: float,
        spot_assets: Sequence[str] | None = None,
        request_timeout_s: float, gas_gwei: Decimal | None,
        venue_actions: Sequence[Callable[[], Awaitable[object]]] = (),
        chain: ChainSource | None = None,
    ) -> None:
        self._sources = dict(sources)
        if chain is not None and chain.venue in self._sources:
            raise ValueError(f"the chain source's name {chain.venue!r} is also a venue's")
        self._chain = chain
        self._chain_gas: Decimal | None = None  # the last gas price the chain reported
        self._clock = clock
        self._exchanges = exchanges
        self._board = board
        self._assets = tuple(assets)  # the perpetuals' assets
        # The spot prices read on the spot venue: the assets', and ETH's wherever the wallet's gas must be valued.
        self._spot_assets = tuple(spot_assets if spot_assets is not None else assets)
        self._spot_venue = spot_venue
        self._interval_ns = int(poll_interval_s * NS_PER_S)
        self._timeout_s = request_timeout_s
        self._gas = gas_gwei
        self._venue_actions = venue_actions
        self._next_ns: int | None = None
        self._settlements: dict[tuple[str, str], tuple[int, Decimal]] = {}  # (venue, asset) → (settles at, rate)
        self.health = {venue: VenueHealth() for venue in self._sources}
        if chain is not None:
            self.health[chain.venue] = VenueHealth()
        self.delivered = 0  # polls handed out

    async def next_batch(self) -> list[MarketData] | None:
        """The next poll's market data (at once the first time, then every `poll_interval_s`); never None."""
        if self._next_ns is not None:
            await self._clock.sleep_until(self._next_ns)
        start = self._clock.now_ns()
        # The next poll is due one interval after this one began; a slow poll does not push the cadence back.
        self._next_ns = start + self._interval_ns
        quotes: dict[str, tuple[list[PerpQuote], list[SpotQuote]]] = {}
        chain: list[MarketData] = []
        async with anyio.create_task_group() as tg:
            for venue in self._sources:
                tg.start_soon(self._poll, venue, start, quotes)
            if self._chain is not None:
                tg.start_soon(self._poll_chain, self._chain, start, chain)
        batch = await self._deliver(quotes, chain)
        self.delivered += 1
        return batch

    async def close(self) -> None:
        sources: list[MarketSource | ChainSource] = [*self._sources.values()]
        if self._chain is not None:
            sources.append(self._chain)
        for source in sources:
            try:
                await source.close()
            except Exception as exc:  # closing must not hide why the run ended
                log.warning("market_source_close_failed", venue=source.venue, error=describe(exc))

    async def _poll(self, venue: str, now_ns: int, out: dict[str, tuple[list[PerpQuote], list[SpotQuote]]]) -> None:
        health, source = self.health[venue], self._sources[venue]
        if now_ns < health.wait_until_ns:
            return  # the venue asked us to wait: its series age meanwhile
        health.polls += 1
        perps: list[PerpQuote] = []
        spots: list[SpotQuote] = []
        errors: list[Exception] = []

        async def ask(fetch: Callable[[], Awaitable[PerpQuote | SpotQuote]]) -> None:
            try:
                quote = await fetch()
            except Exception as exc:  # a venue's failure is the venue's, never the feed's
                errors.append(exc)
                return
            if isinstance(quote, PerpQuote):
                perps.append(quote)
            else:
                spots.append(quote)

        with anyio.move_on_after(self._timeout_s) as scope:
            async with anyio.create_task_group() as tg:
                for asset in self._assets:
                    tg.start_soon(ask, lambda a=asset: source.perp(a, now_ns))
                for asset in self._spot_assets if venue == self._spot_venue else ():
                    tg.start_soon(ask, lambda a=asset: source.spot(a, now_ns))
        if scope.cancelled_caught:
            errors.append(TimeoutError(f"{venue} did not answer within {self._timeout_s:g} s"))
        out[venue] = (perps, spots)
        self._judge(venue, health, errors, now_ns)

    async def _poll_chain(self, source: ChainSource, now_ns: int, out: list[MarketData]) -> None:
        health = self.health[source.venue]
        if now_ns < health.wait_until_ns:
            return
        health.polls += 1
        errors: list[Exception] = []
        with anyio.move_on_after(self._timeout_s) as scope:
            try:
                out.extend(await source.poll(now_ns))
            except Exception as exc:  # the chain's failure is the chain's, never the feed's
                errors.append(exc)
        if scope.cancelled_caught:
            errors.append(TimeoutError(f"{source.venue} did not answer within {self._timeout_s:g} s"))
        self._judge(source.venue, health, errors, now_ns)

    def _judge(self, venue: str, health: VenueHealth, errors: list[Exception], now_ns: int) -> None:
        if not errors:
            health.ok_polls += 1
            if health.degraded:
                log.info("market_venue_recovered", venue=venue, failed_polls=health.failures)
            health.degraded, health.failures, health.last_error = False, 0, ""
            return
        health.failures += 1
        health.last_error = describe(errors[0])
        wait_s = max((getattr(e, "retry_after_s", None) or 0.0 for e in errors), default=0.0)
        if wait_s:
            health.wait_until_ns = now_ns + int(wait_s * NS_PER_S)
        if not health.degraded:
            health.degraded = True
            log.warning("market_venue_degraded", venue=venue, error=health.last_error, errors=len(errors),
                        retry_after_s=wait_s or None)

    async def _deliver(self, quotes: Mapping[str, tuple[list[PerpQuote], list[SpotQuote]]],
                       chain: Sequence[MarketData] = ()) -> list[MarketData]:
        now = self._clock.now_ns()
        out: list[MarketData] = []
        for venue, (perps, spots) in quotes.items():
            exchange = self._exchanges.get(venue)
            for q in perps:
                if exchange is not None:
                    exchange.set_price("Perp", q.mark, q.asset)
                    await self._settle(venue, exchange, q)
                instrument = perp_instrument(venue, q.asset)
                out.append(PriceTicked(instrument, q.mark, q.ts_ns, now))
                out.append(FundingRateReported(instrument, q.funding_rate,
                                               q.settles_at_ns or q.ts_ns + FUNDING_INTERVAL_NS, q.ts_ns, now))
            for spot in spots:
                # The valuation reference, and the price every simulated exchange's spot book fills at (as in the
                # replay: one liquid CEX spot).
                for each in self._exchanges.values():
                    each.set_price("Spot", spot.price, spot.asset)
                out.append(PriceTicked(spot_instrument(venue, spot.asset), spot.price, spot.ts_ns, now))
        chain_gas = [m for m in chain if isinstance(m, GasPriceReported)]
        out += [m for m in chain if not isinstance(m, GasPriceReported)]
        if chain_gas:
            self._chain_gas = chain_gas[-1].gwei
        # The chain's gas: this poll's, else the last it reported (the tick keeps market time moving); the fixed
        # setting before the chain ever answered or without one; None: no wallet to pay gas (live without a chain).
        gas = self._chain_gas if self._chain_gas is not None else self._gas
        if gas is not None:
            out.append(GasPriceReported(gas, now, now))
        for update in out:
            self._board.update(update)
        for exchange in self._exchanges.values():
            await exchange.check_liquidation()
        for act in self._venue_actions:
            await act()
        return out

    async def _settle(self, venue: str, exchange: SimulatedExchange, q: PerpQuote) -> None:
        """Book the settlement that passed since the last poll, at the rate reported for it, on the position held."""
        if q.settles_at_ns is None:
            return
        key = (venue, q.asset)
        previous = self._settlements.get(key)
        self._settlements[key] = (q.settles_at_ns, q.funding_rate)
        if previous is not None and q.settles_at_ns > previous[0]:
            await exchange.settle_funding(previous[1], q.mark, q.asset)
