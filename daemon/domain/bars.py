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
    lst_liquidity_index: Decimal  # AAVE supply index of the LST's reserve (the `lst` below)
    weth_borrow_index: Decimal
    usdt_liquidity_index: Decimal
    lst_eth_oracle: Decimal  # AAVE's oracle rate, ETH per 1 `lst`
    gas_gwei: Decimal
    weth_liquidity_index: Decimal = Decimal(1)  # aWETH (pure lending, ETH share class)
    btc_spot: Decimal = Decimal(0)
    btc_perp_marks: tuple[tuple[str, Decimal], ...] = ()
    btc_funding: tuple[tuple[str, Decimal], ...] = ()
    reward_prices_eth: tuple[tuple[str, Decimal], ...] = ()  # (EIGEN | ETHFI, ETH per token) where recorded
    # (venue, asset, high, low) of each perp's candle for the hour that ended at ts_ns (recorded history only):
    # how far the price went against a position between two bars.
    perp_ranges: tuple[tuple[str, str, Decimal, Decimal], ...] = ()
    # The liquid staking token the two `lst_` fields above are for: the one the run's mode stakes (weETH, wstETH).
    # A bar carries one LST only, so a run reads (and a history run requires) only the series it trades.
    lst: str = "weETH"
    # The ETH/USD valuation reference (`daemon.data.bars.ETH_REFERENCE`: a liquid CEX spot, standing in for the
    # perps' index); `eth_spot` is then the DEX pool's own price, where on-chain swaps execute. 0: the source has
    # one ETH price only (the synthetic market), and it is both.
    eth_reference: Decimal = Decimal(0)
