"""P&L: the balance sheet is the truth, and the attribution explains every unit of its change.

NAV is the value of every holding (CEX cash, spot and perp unrealized P&L; AAVE collateral minus debt at
their indexes; free tokens; gas debt is simply negative ETH) in the share class's currency: USD for the USDT
class, ETH for the ETH class (ADR-8, ADR-24).

One step from (holdings S0, market M0) to (S1, M1), with the change sets applied in between, splits as

    NAV(S1, M1) − NAV(S0, M0) = [NAV(S0, M1) − NAV(S0, M0)]  +  [NAV(S1, M1) − NAV(S0, M1)]
                                 market moves on what was held    what changed, valued at the new market

The first bracket is decomposed per holding with telescoping products (e.g. an aLST worth A·L·o·P gives
A·o·P'·ΔL supply yield + A·L'·P'·Δo staking + A·L·o·ΔP price), the second per change set by its reason
(funding, rewards, costs, capital flows). Both are exact algebra, so the components sum to the NAV change:
the residual is computed and reported, and anything but rounding noise in it is a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.exposure import perp_asset
from daemon.domain.ledger import WALLET, ChangeSet, LedgerSnapshot, Reason
from daemon.domain.market import ATOKEN_RESERVE, DEBT_RESERVE, LSTS, STABLECOINS, MarketState

ZERO = Decimal(0)

SUPPLY = "supply_yield"
STAKING = "staking_yield_oracle"
REWARDS = "staking_yield_rewards"
BORROW = "borrow_costs"
FUNDING = "funding_pnl"
DELTA = "delta_pnl"
BASIS = "basis_pnl"
DUST = "dust_pnl"
COSTS = "transaction_costs"
LIQUIDATIONS = "liquidation_losses"
RECONCILIATION = "reconciliation"
COMPONENTS: tuple[str, ...] = (SUPPLY, STAKING, REWARDS, BORROW, FUNDING, DELTA, BASIS, DUST, COSTS, LIQUIDATIONS,
                               RECONCILIATION)

FLOW_REASONS = frozenset({Reason.INITIAL_CAPITAL, Reason.DEPOSIT, Reason.WITHDRAWAL})
REASON_COMPONENT: dict[Reason, str] = {
    Reason.FUNDING_PAYMENT: FUNDING,
    Reason.KING_REWARD_DISTRIBUTION: REWARDS,
    Reason.RECONCILIATION: RECONCILIATION,
    Reason.KING_UNWRAPPED: DUST,
    Reason.SEASONAL_REWARDS_SOLD: DUST,
    Reason.LIQUIDATION: LIQUIDATIONS,  # the bonus paid to AAVE's liquidators, an exchange's clearance fee
}  # everything else (trades, gas, conversions) is a transaction cost against the market


def token_value_usd(account: str, token: str, amount: Decimal, market: MarketState) -> Decimal:
    """What `amount` of `token` held in `account` is worth in USD at `market` (debt is negative)."""
    if account != WALLET:
        return amount * market.price_usd(token)
    underlying, native = market.native(token, amount)
    return native * market.price_usd(underlying)


def aave_position_usd(snapshot: LedgerSnapshot, market: MarketState) -> tuple[Decimal, Decimal]:
    """(collateral, debt) of the wallet's AAVE position in USD: aTokens at their liquidity index and price (an
    LST through its oracle), variable debt at its borrow index. Raises `MissingMarketData` if one is missing."""
    collateral = debt = ZERO
    for account, token, amount in snapshot.balances:
        if account != WALLET:
            continue
        if token in ATOKEN_RESERVE:
            collateral += token_value_usd(account, token, amount, market)
        elif token in DEBT_RESERVE:
            debt -= token_value_usd(account, token, amount, market)  # a debt token values negative
    return collateral, debt


def nav_usd(snapshot: LedgerSnapshot, market: MarketState) -> Decimal:
    total = sum((token_value_usd(a, t, v, market) for a, t, v in snapshot.balances), ZERO)
    for perp in snapshot.perps:
        total += perp.quantity * market.mark(perp.venue, perp_asset(perp.instrument)) - perp.cost
    return total


def nav(snapshot: LedgerSnapshot, market: MarketState, currency: str) -> Decimal:
    value = nav_usd(snapshot, market)
    return value if currency in STABLECOINS else value / market.price_usd(currency)


@dataclass(frozen=True, slots=True)
class PnlStep:
    ts_ns: int
    currency: str
    nav_before: Decimal
    nav_after: Decimal
    flows: Decimal  # deposits minus withdrawals, valued at the new market: not P&L
    components: Mapping[str, Decimal]

    @property
    def pnl(self) -> Decimal:
        return self.nav_after - self.nav_before - self.flows

    @property
    def residual(self) -> Decimal:
        """The part of the P&L no component explains: zero up to rounding, or a bug."""
        return self.pnl - sum(self.components.values(), ZERO)


def attribute_step(
    before: LedgerSnapshot,
    market_before: MarketState,
    after: LedgerSnapshot,
    market_after: MarketState,
    changes: Iterable[ChangeSet],
    currency: str = "USDT",
) -> PnlStep:
    """Attribute NAV(after, market_after) − NAV(before, market_before) to P&L components and flows."""
    usd = dict.fromkeys(COMPONENTS, ZERO)
    for account, token, amount in before.balances:
        _market_move(account, token, amount, market_before, market_after, usd)
    for perp in before.perps:
        asset = perp_asset(perp.instrument)
        move = perp.quantity * (market_after.mark(perp.venue, asset) - market_before.mark(perp.venue, asset))
        spot = perp.quantity * (market_after.price_usd(asset) - market_before.price_usd(asset))
        usd[DELTA] += spot
        usd[BASIS] += move - spot
    flows_usd = ZERO
    for change in changes:
        value = change_value_usd(change, market_after)
        if change.reason in FLOW_REASONS:
            flows_usd += value
        else:
            usd[REASON_COMPONENT.get(change.reason, COSTS)] += value
    nav0, nav1 = nav_usd(before, market_before), nav_usd(after, market_after)
    if currency in STABLECOINS:
        return PnlStep(after.ts_ns, currency, nav0, nav1, flows_usd, usd)
    # In the asset's own currency every USD figure is converted at the new price, and the revaluation of the
    # opening NAV joins the price term: delta P&L is then exposure relative to holding the asset itself.
    p0, p1 = market_before.price_usd(currency), market_after.price_usd(currency)
    native = {name: value / p1 for name, value in usd.items()}
    native[DELTA] += nav0 / p1 - nav0 / p0
    return PnlStep(after.ts_ns, currency, nav0 / p0, nav1 / p1, flows_usd / p1, native)


def change_value_usd(change: ChangeSet, market: MarketState) -> Decimal:
    """The NAV effect of one change set at `market`: token deltas at value, perps at mark minus fill price."""
    value = sum((token_value_usd(tc.account, tc.token, tc.delta, market) for tc in change.tokens), ZERO)
    for pc in change.perps:
        # Opening, adding, reducing or flipping: cost basis plus realized P&L move together so that the
        # position's NAV changes by Δq × (mark − fill price).
        value += pc.delta_qty * (market.mark(pc.venue, perp_asset(pc.instrument)) - pc.price)
    return value


def _market_move(
    account: str, token: str, amount: Decimal, m0: MarketState, m1: MarketState, out: dict[str, Decimal]
) -> None:
    """Split the revaluation of one holding from m0 to m1 into its components (telescoping products)."""
    if account != WALLET or (token not in ATOKEN_RESERVE and token not in DEBT_RESERVE):
        underlying = token
        if underlying in STABLECOINS:
            return
        if underlying in LSTS:  # q·o·P
            o0, o1 = m0.lst_rate(underlying), m1.lst_rate(underlying)
            p0, p1 = m0.price_usd("ETH"), m1.price_usd("ETH")
            out[STAKING] += amount * p1 * (o1 - o0)
            out[DELTA] += amount * o0 * (p1 - p0)
            return
        change = amount * (m1.price_usd(underlying) - m0.price_usd(underlying))
        out[DELTA if underlying in ("ETH", "BTC") else DUST] += change
        return
    debt = token in DEBT_RESERVE
    reserve, underlying = (DEBT_RESERVE if debt else ATOKEN_RESERVE)[token]
    i0, i1 = (m0.debt_index(reserve), m1.debt_index(reserve)) if debt else \
        (m0.supply_index(reserve), m1.supply_index(reserve))
    sign = -1 if debt else 1
    if underlying in LSTS:  # A·L·o·P
        o0, o1 = m0.lst_rate(underlying), m1.lst_rate(underlying)
        p0, p1 = m0.price_usd("ETH"), m1.price_usd("ETH")
        out[SUPPLY] += sign * amount * o0 * p1 * (i1 - i0)
        out[STAKING] += sign * amount * i1 * p1 * (o1 - o0)
        out[DELTA] += sign * amount * i0 * o0 * (p1 - p0)
        return
    p0, p1 = m0.price_usd(underlying), m1.price_usd(underlying)  # A·L·P, or −d·B·P
    out[BORROW if debt else SUPPLY] += sign * amount * p1 * (i1 - i0)
    if underlying not in STABLECOINS:
        out[DELTA] += sign * amount * i0 * (p1 - p0)
