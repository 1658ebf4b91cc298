"""The runtime's stand-in strategy: keep a long ETH leg hedged by perp shorts across venues.

It is the smallest honest policy that makes every actor work: at start it buys the long leg (spot, on the
mode's spot venue) and opens shorts split by the configured hedge weights; afterwards it moves short size
away from a venue whose funding turns against shorts (below −threshold) and back when it recovers, and
trims any venue whose short drifts from target by more than the deviation threshold. The per-mode strategy
manager of the domain issue replaces it; unhedged modes simply hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from daemon.domain.ids import InstrumentId

ZERO = Decimal(0)
QTY_STEP = Decimal("0.001")  # ETH perp lot size on all three venues


@dataclass(frozen=True, slots=True)
class HedgeParams:
    weights: dict[str, Decimal]  # venue -> weight, summing to 1
    funding_threshold: Decimal
    deviation_threshold: Decimal  # relative to the venue's target
    min_order_usd: Decimal


@dataclass(frozen=True, slots=True)
class OrderIntent:
    instrument_id: InstrumentId
    signed_quantity: Decimal  # positive buys, negative sells
    reduce_only: bool
    reason: str


def perp_instrument(venue: str) -> InstrumentId:
    return InstrumentId(f"{venue}:Perp:ETHUSDT")


def spot_instrument(venue: str) -> InstrumentId:
    return InstrumentId(f"{venue}:Spot:ETHUSDT")


MAX_WEIGHT_MULTIPLE = Decimal("1.5")


def effective_weights(params: HedgeParams, funding: dict[str, Decimal]) -> dict[str, Decimal]:
    """Hedge weights with venues whose funding charges shorts switched off, renormalized to 1.

    The configured weights stand if every venue charges (staying hedged matters more than funding), or if
    the move would put more than 1.5× its configured share on any venue: each venue's margin was sized for
    its configured share, and this policy does not move margin.
    """
    eligible = {v: w for v, w in params.weights.items()
                if w > 0 and funding.get(v, ZERO) >= -params.funding_threshold}
    total = sum(eligible.values(), ZERO)
    if total == 0:
        return dict(params.weights)
    moved = {v: eligible.get(v, ZERO) / total for v in params.weights}
    if any(moved[v] > params.weights[v] * MAX_WEIGHT_MULTIPLE for v in moved):
        return dict(params.weights)
    return moved


def hedge_intents(
    long_eth: Decimal,
    shorts: dict[str, Decimal],
    funding: dict[str, Decimal],
    price: Decimal,
    params: HedgeParams,
) -> list[OrderIntent]:
    """Orders that bring each venue's short to its share of `long_eth`; reductions come first."""
    weights = effective_weights(params, funding)
    intents = []
    for venue, weight in weights.items():
        target = -(long_eth * weight).quantize(QTY_STEP, rounding=ROUND_DOWN)
        current = shorts.get(venue, ZERO)
        gap = target - current
        if gap == 0 or abs(gap) * price < params.min_order_usd:
            continue
        if target != 0 and abs(gap) < abs(target) * params.deviation_threshold:
            continue
        reducing = abs(target) < abs(current) and (target == 0 or (target < 0) == (current < 0))
        reason = "funding_reallocation" if weight != params.weights.get(venue) else "hedge_rebalance"
        intents.append(OrderIntent(perp_instrument(venue), gap, reducing, reason))
    intents.sort(key=lambda i: not i.reduce_only)
    return intents


def entry_spot_quantity(capital_usd: Decimal, allocation: Decimal, price: Decimal) -> Decimal:
    return (capital_usd * allocation / price).quantize(QTY_STEP, rounding=ROUND_DOWN)
