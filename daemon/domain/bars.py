"""One hour of market, as every replay source delivers it (synthetic or recorded history)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class MarketBar:
    ts_ns: int
    eth_spot: Decimal
    perp_marks: tuple[tuple[str, Decimal], ...]  # (venue, ETH perp mark)
    funding: tuple[tuple[str, Decimal], ...]  # (venue, rate) at settlement hours, else empty
    weeth_liquidity_index: Decimal
    weth_borrow_index: Decimal
    usdt_liquidity_index: Decimal
    weeth_eth_oracle: Decimal
    gas_gwei: Decimal
    weth_liquidity_index: Decimal = Decimal(1)  # aWETH (pure lending, ETH share class)
    btc_spot: Decimal = Decimal(0)
    btc_perp_marks: tuple[tuple[str, Decimal], ...] = ()
    btc_funding: tuple[tuple[str, Decimal], ...] = ()
    reward_prices_eth: tuple[tuple[str, Decimal], ...] = ()  # (EIGEN | ETHFI, ETH per token) where recorded
    # (venue, asset, high, low) of each perp's candle for the hour that ended at ts_ns (recorded history only):
    # how far the price went against a position between two bars.
    perp_ranges: tuple[tuple[str, str, Decimal, Decimal], ...] = ()
