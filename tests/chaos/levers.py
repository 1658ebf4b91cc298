"""The kill -9 script's levers on the local world: what moves the world so that the strategy has something to do.

Each lever moves the chain and the exchange fake together, as the local world's own start does
(`LocalWorld._align_prices`, `_set_venues`): the chain is the reference (AAVE's oracle, the DEX's fixed rates), the
fake's marks and spot prices follow. A lever that moved one and not the other would show the daemon a market no venue
could have (an oracle three venues disagree with), and the daemon's answer to that is not what the script tests.

- `set_eth_price`: ETH/USD on the oracle's feed, the DEX's WETH↔USDT rates, then every venue's perp mark and spot
  price; `move_eth_price` gets there in small steps (see there why).
- `set_lst_rate`: the LST's rate (ETH per LST: the oracle prices the collateral through it) and the DEX's LST↔WETH
  rates, which follow it as the world's build sets them (else a flash loan's swap gets less than the oracle says and
  every atomic step reverts).
- `settle_funding`: one funding payment on every venue's perp at `rate` (longs pay a positive rate).
"""

from __future__ import annotations

import time
from decimal import ROUND_DOWN, Decimal

from tests.fakes.local_world import ETH_MARKETS, ThreadedLocalWorld

D = Decimal
# One price step of `move_eth_price`: the daemon reads the oracle and the venues' marks a second apart at most, and
# values the book's long and its shorts from them; while one has moved and the other not, the book's NAV is off by
# the step times the long leg (about half the NAV): 2 % keeps that transient well below the drawdown breaker's and
# the daily loss limit's levels (3 % and 2 % of NAV), which a single jump of tens of percent would trip.
ETH_STEP = D("1.02")
ETH_STEP_PAUSE_S = 0.4


def eth_price(tw: ThreadedLocalWorld) -> Decimal:
    """ETH/USD as AAVE's oracle prices WETH (8 decimals)."""
    chain = tw.world.chain
    assert chain is not None
    oracle = chain.contract("AaveOracle", chain.book["AaveOracle"])
    answer = tw.run(oracle.functions.getAssetPrice(chain.reserve("WETH")["underlying"]).call())
    return D(answer).scaleb(-8)


def set_eth_price(tw: ThreadedLocalWorld, usd: Decimal) -> None:
    """ETH/USD = `usd` (whole cents) on the chain's feed and DEX, then on every venue of the fake."""
    world = tw.world
    chain, fake = world.chain, world.fake
    assert chain is not None and fake is not None
    usd = usd.quantize(D("0.01"), rounding=ROUND_DOWN)
    tw.run(chain.set_eth_price(usd))
    tw.run(chain.set_swap_rate("WETH", "USDT", usd))
    # The reverse rate rounded down to the router's wad (18 + 18 − 6 places), as the world's build sets it.
    tw.run(chain.set_swap_rate("USDT", "WETH", D(int(D(10**30) / usd)).scaleb(-30)))

    def venues() -> None:
        for venue, (perp, spot) in ETH_MARKETS.items():
            state = getattr(fake, venue)
            state.set_mark(perp, usd)
            state.set_spot_price(spot, usd)

    tw.call(venues)
    world.eth_price = usd


def move_eth_price(tw: ThreadedLocalWorld, target: Decimal, step: Decimal = ETH_STEP,
                   pause_s: float = ETH_STEP_PAUSE_S) -> int:
    """ETH/USD to `target` in steps of at most `step` (a factor), `pause_s` apart; returns the steps taken."""
    price, n = eth_price(tw), 0
    while price != target:
        price = min(target, price * step) if target > price else max(target, price / step)
        set_eth_price(tw, price)
        price = price.quantize(D("0.01"), rounding=ROUND_DOWN)
        n += 1
        if abs(price - target) < D("0.01"):
            break
        time.sleep(pause_s)
    return n


def lst_rate(tw: ThreadedLocalWorld, lst: str) -> Decimal:
    chain = tw.world.chain
    assert chain is not None
    return D(tw.run(chain.token(lst).functions.getRate().call())).scaleb(-18)


def set_lst_rate(tw: ThreadedLocalWorld, lst: str, rate: Decimal) -> Decimal:
    """The LST's rate to `rate` (6 places), the DEX's LST↔WETH rates with it; returns the rate set."""
    chain = tw.world.chain
    assert chain is not None
    rate = rate.quantize(D("0.000001"))
    tw.run(chain.set_lst_rate(lst, rate))
    tw.run(chain.set_swap_rate(lst, "WETH", rate))
    tw.run(chain.set_swap_rate("WETH", lst, D(10**36 // int(rate.scaleb(18))).scaleb(-18)))
    return rate


def settle_funding(tw: ThreadedLocalWorld, rate: Decimal) -> None:
    fake = tw.world.fake
    assert fake is not None

    def funding() -> None:
        for venue, (perp, _) in ETH_MARKETS.items():
            getattr(fake, venue).settle_funding(perp, rate)

    tw.call(funding)
