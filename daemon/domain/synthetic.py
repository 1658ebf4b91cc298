"""A deterministic synthetic market for runs without data: the embedded default.

Hourly bars of what the strategy modes read: ETH and BTC spot, ETH perp marks per venue (each with its own basis,
never averaged), 8-hourly funding per venue, AAVE indexes (ray / 1e27, growing from realistic levels rather
than from 1), the oracle rate of the LST the mode stakes (weETH or wstETH, each from its own realistic level), and
gas. The same seed always gives the same bars, so a replay is reproducible; values are quantized to Decimals with
fixed exponents so that equality is exact. The LST changes only its own two series, never the random draws, so a
weETH and a wstETH run of one seed see the same ETH market.

The dynamics are simple on purpose (log-normal ETH, mean-reverting basis and funding, constant-rate index
growth): enough to exercise every actor, not a model of any real market.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from daemon.domain.bars import MarketBar

NS_PER_HOUR = 3_600 * 1_000_000_000
HOURS_PER_YEAR = 24 * 365
FUNDING_HOURS = (0, 8, 16)

_PRICE = Decimal("0.01")
_RATE = Decimal("0.00000001")
_INDEX = Decimal("0.000000000001")
_GWEI = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class Shock:
    """A stress event: at `hour` the ETH price jumps by `eth_move` (0.9 = +90 %) and the LST/ETH oracle moves by
    `lst_oracle_move` (−0.06 = a 6 % de-peg), both for good, as a gap between two bars."""

    hour: int
    eth_move: float = 0.0
    lst_oracle_move: float = 0.0


@dataclass(frozen=True, slots=True)
class LstMarket:
    """Where an LST's series start and how fast they grow: levels of 2024-06-01 from the recorded history
    (AAVE's oracle and the reserve's liquidity index), so the synthetic market is not a different world."""

    oracle_eth: float  # ETH per 1 LST
    liquidity_index: float  # AAVE v3 supply index of the LST's reserve (ray / 1e27)
    supply_apr: float  # AAVE supply APR of the reserve (an LST reserve is borrowed little: close to 0)
    staking_apr: float  # the oracle's growth: the protocol's staking yield


# weETH's entry is the values the synthetic market always had (so its runs are unchanged); wstETH's are the
# recorded 2024-06-01 levels (oracle 1.16831, index 1.000543, supply APR ≈ 0.002 %; Lido's APR ≈ 2.9 %).
LST_MARKETS: dict[str, LstMarket] = {
    "weETH": LstMarket(oracle_eth=1.038160, liquidity_index=1.000041, supply_apr=0.001, staking_apr=0.028),
    "wstETH": LstMarket(oracle_eth=1.168308, liquidity_index=1.000543, supply_apr=0.00002, staking_apr=0.029),
}


@dataclass(frozen=True, slots=True)
class SyntheticMarketSpec:
    seed: int
    start: datetime
    hours: int
    venues: Sequence[str]
    eth_start_usd: float = 3_400.0
    eth_vol_annual: float = 0.65
    funding_mean_8h: float = 0.0001  # ≈ 11 % a year, the long-run average of ETH perps
    funding_vol_8h: float = 0.00015
    basis_vol: float = 0.0004
    weth_borrow_apr: float = 0.025
    weth_supply_apr: float = 0.018
    usdt_supply_apr: float = 0.06
    btc_start_usd: float = 68_000.0
    btc_vol_annual: float = 0.50
    shocks: tuple[Shock, ...] = ()
    lst: str = "weETH"  # the LST whose oracle and AAVE index the bars carry (a key of LST_MARKETS)

    def __post_init__(self) -> None:
        if self.lst not in LST_MARKETS:
            raise ValueError(f"no synthetic market for LST {self.lst!r} (known: {', '.join(sorted(LST_MARKETS))})")


def generate(spec: SyntheticMarketSpec) -> Iterator[MarketBar]:
    """Yield `spec.hours` consecutive hourly bars starting at `spec.start` (UTC, floored to the hour)."""
    rng = random.Random(spec.seed)
    start_ns = int(spec.start.timestamp()) // 3600 * NS_PER_HOUR
    sigma_h = spec.eth_vol_annual / math.sqrt(HOURS_PER_YEAR)
    log_price = math.log(spec.eth_start_usd)
    basis = {v: rng.gauss(0.0, spec.basis_vol) for v in spec.venues}
    funding = {v: spec.funding_mean_8h for v in spec.venues}
    lst = LST_MARKETS[spec.lst]
    grow = {
        "lst_l": 1.0 + lst.supply_apr / HOURS_PER_YEAR,
        "weth_b": 1.0 + spec.weth_borrow_apr / HOURS_PER_YEAR,
        "weth_l": 1.0 + spec.weth_supply_apr / HOURS_PER_YEAR,
        "usdt_l": 1.0 + spec.usdt_supply_apr / HOURS_PER_YEAR,
        "oracle": 1.0 + lst.staking_apr / HOURS_PER_YEAR,
    }
    lst_l, weth_b, usdt_l, oracle = lst.liquidity_index, 1.031774, 1.103620, lst.oracle_eth
    weth_l = 1.018086
    log_gas = math.log(6.0)
    # BTC draws from its own generator, so adding it left the ETH market of every seed exactly as it was.
    btc_rng = random.Random(spec.seed + 1_000_003)
    btc_sigma_h = spec.btc_vol_annual / math.sqrt(HOURS_PER_YEAR)
    log_btc = math.log(spec.btc_start_usd)
    btc_basis = dict.fromkeys(spec.venues, 0.0)
    btc_funding = {v: spec.funding_mean_8h for v in spec.venues}
    for hour in range(spec.hours):
        ts_ns = start_ns + hour * NS_PER_HOUR
        if hour:
            log_price += rng.gauss(-0.5 * sigma_h * sigma_h, sigma_h)
            lst_l *= grow["lst_l"]
            weth_b *= grow["weth_b"]
            weth_l *= grow["weth_l"]
            usdt_l *= grow["usdt_l"]
            oracle *= grow["oracle"]
            log_gas += 0.15 * (math.log(6.0) - log_gas) + rng.gauss(0.0, 0.25)
        for shock in spec.shocks:
            if shock.hour == hour:
                log_price += math.log1p(shock.eth_move)
                oracle *= 1.0 + shock.lst_oracle_move
        spot = math.exp(log_price)
        marks = []
        for v in spec.venues:
            basis[v] += 0.2 * (0.0 - basis[v]) + rng.gauss(0.0, spec.basis_vol)
            marks.append((v, _q(spot * (1.0 + basis[v]), _PRICE)))
        rates: tuple[tuple[str, Decimal], ...] = ()
        hour_of_day = (ts_ns // NS_PER_HOUR) % 24
        if hour_of_day in FUNDING_HOURS:
            out = []
            for v in spec.venues:
                funding[v] += 0.3 * (spec.funding_mean_8h - funding[v]) + rng.gauss(0.0, spec.funding_vol_8h)
                out.append((v, _q(funding[v], _RATE)))
            rates = tuple(out)
        if hour:
            log_btc += btc_rng.gauss(-0.5 * btc_sigma_h * btc_sigma_h, btc_sigma_h)
        btc = math.exp(log_btc)
        btc_marks = []
        for v in spec.venues:
            btc_basis[v] += 0.2 * (0.0 - btc_basis[v]) + btc_rng.gauss(0.0, spec.basis_vol)
            btc_marks.append((v, _q(btc * (1.0 + btc_basis[v]), _PRICE)))
        btc_rates: tuple[tuple[str, Decimal], ...] = ()
        if hour_of_day in FUNDING_HOURS:
            for v in spec.venues:
                btc_funding[v] += 0.3 * (spec.funding_mean_8h - btc_funding[v]) + \
                    btc_rng.gauss(0.0, spec.funding_vol_8h)
            btc_rates = tuple((v, _q(btc_funding[v], _RATE)) for v in spec.venues)
        yield MarketBar(
            ts_ns=ts_ns,
            eth_spot=_q(spot, _PRICE),
            perp_marks=tuple(marks),
            funding=rates,
            lst_liquidity_index=_q(lst_l, _INDEX),
            weth_borrow_index=_q(weth_b, _INDEX),
            usdt_liquidity_index=_q(usdt_l, _INDEX),
            lst_eth_oracle=_q(oracle, _INDEX),
            gas_gwei=_q(math.exp(log_gas), _GWEI),
            weth_liquidity_index=_q(weth_l, _INDEX),
            btc_spot=_q(btc, _PRICE),
            btc_perp_marks=tuple(btc_marks),
            btc_funding=btc_rates,
            lst=spec.lst,
        )


def _q(value: float, exponent: Decimal) -> Decimal:
    return Decimal(repr(value)).quantize(exponent)
