"""Exposure: how much of each asset the strategy is long or short, on chain and on the exchanges.

Per asset (ETH, BTC) three figures that must add up (ADR-34): on-chain net delta (wallet, LSTs converted
through their oracle rate, AAVE collateral minus debt at their indexes), CEX net delta (spot balances plus
signed perp sizes), and their sum. Each is given in native units of the asset, in ETH and in USD. LSTs count
as ETH exposure (DOMAIN §8 #10: converted to ETH before anything is added); stablecoins carry no delta;
reward tokens (KING, EIGEN, ETHFI) are their own assets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.ledger import WALLET, LedgerSnapshot
from daemon.domain.market import LSTS, STABLECOINS, MarketState

ZERO = Decimal(0)
DELTA_ASSETS = ("ETH", "BTC")


@dataclass(frozen=True, slots=True)
class AssetExposure:
    asset: str
    onchain_native: Decimal
    cex_native: Decimal
    price_usd: Decimal
    eth_usd: Decimal

    @property
    def net_native(self) -> Decimal:
        return self.onchain_native + self.cex_native

    @property
    def onchain_usd(self) -> Decimal:
        return self.onchain_native * self.price_usd

    @property
    def cex_usd(self) -> Decimal:
        return self.cex_native * self.price_usd

    @property
    def net_usd(self) -> Decimal:
        return self.net_native * self.price_usd

    @property
    def net_eth(self) -> Decimal:
        return self.net_usd / self.eth_usd


@dataclass(frozen=True, slots=True)
class PerpExposure:
    venue: str
    asset: str
    size: Decimal  # signed
    mark: Decimal
    entry_price: Decimal

    @property
    def notional_usd(self) -> Decimal:
        return abs(self.size) * self.mark

    @property
    def unrealized_pnl(self) -> Decimal:
        return self.size * (self.mark - self.entry_price)


@dataclass(frozen=True, slots=True)
class Exposure:
    assets: dict[str, AssetExposure]
    perps: tuple[PerpExposure, ...]

    def net_delta(self, asset: str) -> Decimal:
        exposure = self.assets.get(asset)
        return exposure.net_native if exposure else ZERO

    def hedge_notional_usd(self, asset: str) -> Decimal:
        return sum((p.notional_usd for p in self.perps if p.asset == asset), ZERO)


def perp_asset(instrument: str) -> str:
    """`ETHUSDT` → `ETH` (USDT-margined linear perps)."""
    for quote in ("USDT", "USDC"):
        if instrument.endswith(quote):
            return instrument[: -len(quote)]
    return instrument


# The same books at the same market are valued by several readers each hour (the strategy's view and its delta,
# the recorder, the positions actor, the metrics): the last few results are kept, keyed by the identity of their
# inputs (immutable snapshots). An entry holds the inputs themselves, so an identity cannot be reused while it
# lives; and an Exposure is never mutated by its readers.
_RECENT: deque[tuple[LedgerSnapshot, MarketState, Exposure]] = deque(maxlen=4)


def compute_exposure(snapshot: LedgerSnapshot, market: MarketState) -> Exposure:
    """Every asset's on-chain and CEX delta and every perp of `snapshot` at `market` (module docstring)."""
    for seen, at, exposure in _RECENT:
        if seen is snapshot and at is market:
            return exposure
    exposure = _compute_exposure(snapshot, market)
    _RECENT.append((snapshot, market, exposure))
    return exposure


def _compute_exposure(snapshot: LedgerSnapshot, market: MarketState) -> Exposure:
    onchain = dict.fromkeys(DELTA_ASSETS, ZERO)
    cex = dict.fromkeys(DELTA_ASSETS, ZERO)
    for account, token, amount in snapshot.balances:
        underlying, native = market.native(token, amount) if account == WALLET else (token, amount)
        if underlying in STABLECOINS:
            continue
        if underlying in LSTS:
            underlying, native = "ETH", native * market.lst_rate(underlying)
        if underlying not in onchain:
            continue  # reward tokens: valued in P&L, not a hedged delta
        if account == WALLET:
            onchain[underlying] += native
        else:
            cex[underlying] += native
    perps = []
    for holding in snapshot.perps:
        if holding.quantity == 0:
            continue
        asset = perp_asset(holding.instrument)
        perps.append(PerpExposure(holding.venue, asset, holding.quantity, market.mark(holding.venue, asset),
                                  holding.entry_price))
        cex[asset] = cex.get(asset, ZERO) + holding.quantity
    eth_usd = market.price_usd("ETH")
    assets = {
        a: AssetExposure(a, onchain[a], cex[a], market.price_usd(a) if (onchain[a] or cex[a]) else ZERO, eth_usd)
        for a in DELTA_ASSETS
    }
    return Exposure(assets, tuple(perps))
