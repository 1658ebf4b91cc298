"""Risk: measures, levels and the trading state they imply. Pure: the risk actor feeds it and acts on it.

* CEX margin per venue: MR = (USDT + uPnL) / (|size| × mark), each venue its own account and its own mark
  (DOMAIN §8 #14); maintenance 10 % is liquidation, urgent 15 %, warning 20 %; plus the price move that
  would bring the venue to maintenance.
* AAVE: LTV against the target λ (warn at λ + 0.01, act at λ + 0.02; thresholds relative to λ, §8 #3) and
  the oracle drop that would bring HF to 1.
* Delta drift as a fraction of hedge notional (warn 2 %, act 5 %, §8 #15); mark divergence between venues
  (flag 0.5 %, alert 1 %); stale data.
* A drawdown circuit breaker that latches and acts (seed 003's levels for a hedged book: 3 % unwinds half of
  every leg, 4 % half of what is left, 5 % everything and trading halts), with a daily loss limit beside the
  peak-to-trough measure; and trailing stops for directional positions.

The nearer solvency risk (CEX margin or AAVE health, by distance to liquidation) is reported first; delta
comes last (§8 #1). In REDUCING, `order_allowed` lets through only orders that shrink a position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from enum import IntEnum

from daemon.domain.messages import TradingState

ZERO = Decimal(0)
ONE = Decimal(1)
INFINITY = Decimal("Infinity")


class Level(IntEnum):
    OK = 0
    WARNING = 1
    URGENT = 2  # act now
    CRITICAL = 3  # at or past liquidation / breaker tripped


@dataclass(frozen=True, slots=True)
class RiskLimits:
    margin_warning_ratio: Decimal = Decimal("0.20")
    margin_urgent_ratio: Decimal = Decimal("0.15")
    margin_maintenance_ratio: Decimal = Decimal("0.10")
    delta_warn_fraction: Decimal = Decimal("0.02")
    delta_act_fraction: Decimal = Decimal("0.05")
    ltv_warn_above_target: Decimal = Decimal("0.01")
    ltv_act_above_target: Decimal = Decimal("0.02")
    mark_divergence_flag_fraction: Decimal = Decimal("0.005")
    mark_divergence_alert_fraction: Decimal = Decimal("0.01")
    data_stale_after_s: Decimal = Decimal(7200)
    funding_stale_after_s: Decimal = Decimal(32400)


# --- CEX margin -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarginReading:
    venue: str
    ratio: Decimal  # (USDT + uPnL) / notional; infinite without a position
    level: Level
    liquidation_price: Decimal | None
    distance_to_liquidation: Decimal  # fraction of the mark the price must move against the position


def margin_reading(venue: str, usdt: Decimal, size: Decimal, entry: Decimal, mark: Decimal,
                   limits: RiskLimits) -> MarginReading:
    if size == 0:
        return MarginReading(venue, INFINITY, Level.OK, None, INFINITY)
    notional = abs(size) * mark
    equity = usdt + size * (mark - entry)
    ratio = equity / notional
    mm = limits.margin_maintenance_ratio
    # equity(P) = usdt + size·(P − entry) = mm·|size|·P  →  P = (usdt − size·entry) / (mm·|size| − size)
    denominator = mm * abs(size) - size
    liq = (usdt - size * entry) / denominator if denominator != 0 else None
    distance = abs(liq / mark - 1) if liq is not None and liq > 0 else INFINITY
    if liq is not None and (liq <= 0 or (size < 0 and liq < mark) or (size > 0 and liq > mark)):
        distance = ZERO  # already past the line
    if ratio <= mm:
        level = Level.CRITICAL
    elif ratio <= limits.margin_urgent_ratio:
        level = Level.URGENT
    elif ratio <= limits.margin_warning_ratio:
        level = Level.WARNING
    else:
        level = Level.OK
    return MarginReading(venue, ratio, level, liq if liq is not None and liq > 0 else None, distance)


# --- AAVE ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AaveReading:
    health_factor: Decimal
    ltv: Decimal
    target_ltv: Decimal
    level: Level
    distance_to_liquidation: Decimal  # fractional fall of the collateral's value (in debt terms) to HF 1


def aave_reading(collateral: Decimal, debt: Decimal, liquidation_threshold: Decimal, target_ltv: Decimal,
                 limits: RiskLimits) -> AaveReading:
    if debt == 0:
        return AaveReading(INFINITY, ZERO, target_ltv, Level.OK, INFINITY)
    ltv = debt / collateral if collateral else INFINITY
    hf = liquidation_threshold * collateral / debt
    distance = max(ZERO, ONE - ONE / hf)
    if hf < 1:
        level = Level.CRITICAL
    elif ltv > target_ltv + limits.ltv_act_above_target:
        level = Level.URGENT
    elif ltv > target_ltv + limits.ltv_warn_above_target:
        level = Level.WARNING
    else:
        level = Level.OK
    return AaveReading(hf, ltv, target_ltv, level, distance)


# --- delta, marks, staleness ---------------------------------------------------------------------------


def delta_level(net_delta_usd: Decimal, hedge_notional_usd: Decimal, limits: RiskLimits) -> tuple[Decimal, Level]:
    """Drift as a fraction of hedge notional; with no hedge there is no drift to measure."""
    if hedge_notional_usd == 0:
        return ZERO, Level.OK
    drift = abs(net_delta_usd) / hedge_notional_usd
    if drift > limits.delta_act_fraction:
        return drift, Level.URGENT
    if drift > limits.delta_warn_fraction:
        return drift, Level.WARNING
    return drift, Level.OK


def mark_divergence(marks: dict[str, Decimal], limits: RiskLimits) -> tuple[Decimal, Level]:
    """Largest relative gap between two venues' marks: > 0.5 % may be a data error, > 1 % an arbitrage."""
    if len(marks) < 2:
        return ZERO, Level.OK
    low, high = min(marks.values()), max(marks.values())
    gap = (high - low) / low
    if gap > limits.mark_divergence_alert_fraction:
        return gap, Level.URGENT
    if gap > limits.mark_divergence_flag_fraction:
        return gap, Level.WARNING
    return gap, Level.OK


def stale_series(ages_s: dict[str, Decimal], limits: RiskLimits) -> tuple[str, ...]:
    """Series older than their limit; funding (every 8 h) has its own, longer one."""
    def limit(name: str) -> Decimal:
        return limits.funding_stale_after_s if name.startswith("funding:") else limits.data_stale_after_s

    return tuple(sorted(name for name, age in ages_s.items() if age > limit(name)))


# --- drawdown circuit breaker --------------------------------------------------------------------------

DAY_NS = 86_400 * 1_000_000_000


class DrawdownAction(IntEnum):
    """The breaker's levels (seed 003's three, for a hedged book). Each acts once per trip and latches."""

    NONE = 0
    REDUCE = 1  # no new exposure; unwind `reduce_unwind_fraction` of every leg
    CLOSE_PART = 2  # unwind `close_unwind_fraction` of what is left
    FLATTEN_AND_HALT = 3  # unwind everything, and trading halts until `basisd resume`


# Names an older daemon persisted (its levels did not unwind): a tripped breaker restored from them keeps its level.
_LEGACY_ACTIONS = {"CLOSE_WORST_HALF": DrawdownAction.REDUCE, "CLOSE_ALL": DrawdownAction.CLOSE_PART,
                   "CLOSE_ALL_AND_HALT": DrawdownAction.FLATTEN_AND_HALT}


# The breaker's settings (the `risk:` keys drawdown_*_fraction, drawdown_*_unwind_fraction, daily_loss_limit_fraction).
BREAKER_SETTINGS = ("reduce_fraction", "close_fraction", "halt_fraction", "reduce_unwind_fraction",
                    "close_unwind_fraction", "daily_loss_fraction")


@dataclass(frozen=True, slots=True)
class BreakerAction:
    """What a trip asks for: unwind `unwind_fraction` of the book held now (1: all of it)."""

    level: DrawdownAction
    unwind_fraction: Decimal
    drawdown: Decimal  # peak to now, when it tripped
    daily_loss: Decimal  # the UTC day's first NAV to now
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class DrawdownBreaker:
    """Peak-to-current NAV drawdown, and the loss since the UTC day's first NAV, with latching levels; a frozen
    value the caller persists and restores.

    Seed 003's breaker closes the worst half at 3 %, everything at 4 %, everything and stops at 5 %. A hedged book
    has no worst leg (closing the shorts alone would leave the long naked), so each level unwinds every leg pro
    rata: level 1 `reduce_unwind_fraction` of the book, level 2 `close_unwind_fraction` of what is left, level 3
    all of it, and trading halts. (The issue asks for reduce, close part, then flatten: with the seed's close-all at
    level 2 the third level would have nothing left to act on; `close_unwind_fraction = 1` gives the seed's.)

    The daily loss limit trips level 1 too: a loss that fast in a neutral book is a broken hedge, not noise. A
    day's loss never exceeds the drawdown from the peak (the peak is at least the day's first NAV), so the limit
    only adds protection below `reduce_fraction`. Its measure starts afresh each UTC day; what it tripped stays
    tripped until an operator resumes, like every level.
    """

    reduce_fraction: Decimal = Decimal("0.03")
    close_fraction: Decimal = Decimal("0.04")
    halt_fraction: Decimal = Decimal("0.05")
    peak_nav: Decimal = ZERO
    tripped: DrawdownAction = DrawdownAction.NONE
    reduce_unwind_fraction: Decimal = Decimal("0.5")
    close_unwind_fraction: Decimal = Decimal("0.5")
    daily_loss_fraction: Decimal = Decimal("0.02")
    day: int = -1  # UTC day (days since the epoch) of `day_open_nav`
    day_open_nav: Decimal = ZERO
    # What the breaker's own unwinds cost (swap fees on the gross collateral, taker fees): added back to the NAV it
    # measures. A level's unwind is not further evidence of loss; counted, a 50 % unwind of a leveraged LST book
    # (about 1 % of NAV) would trip the next level by itself and cascade to a full flatten on one shock.
    excluded_costs: Decimal = ZERO

    def configured(self, *values: Decimal) -> DrawdownBreaker:
        """The breaker with its settings (`BREAKER_SETTINGS`, in that order; fewer: the first ones) replaced, its
        state — peak, level, day — kept."""
        return replace(self, **dict(zip(BREAKER_SETTINGS, values, strict=False)))  # type: ignore[arg-type]

    def settings(self) -> tuple[Decimal, ...]:
        return tuple(getattr(self, name) for name in BREAKER_SETTINGS)

    def observe(self, nav: Decimal, ts_ns: int | None = None) -> DrawdownBreaker:
        """The breaker after seeing `nav` (in the share class's currency, net of flows) at market time `ts_ns`
        (None: the daily measure is not moved)."""
        return self.step(nav, ts_ns)[0]

    def step(self, nav: Decimal, ts_ns: int | None = None) -> tuple[DrawdownBreaker, BreakerAction | None]:
        """The breaker after seeing `nav`, and the action due if it tripped further than it had (the highest new
        level only: it does what the levels it passed would have done one by one)."""
        measured = nav + self.excluded_costs
        peak = max(self.peak_nav, measured)
        day, day_open = self.day, self.day_open_nav
        if ts_ns is not None and ts_ns // DAY_NS != day:
            day, day_open = ts_ns // DAY_NS, measured
        after = replace(self, peak_nav=peak, day=day, day_open_nav=day_open)
        drawdown, daily = after.drawdown(nav), after.daily_loss(nav)
        if drawdown >= self.halt_fraction:
            level = DrawdownAction.FLATTEN_AND_HALT
        elif drawdown >= self.close_fraction:
            level = DrawdownAction.CLOSE_PART
        elif drawdown >= self.reduce_fraction or daily >= self.daily_loss_fraction:
            level = DrawdownAction.REDUCE
        else:
            level = DrawdownAction.NONE
        after = replace(after, tripped=max(self.tripped, level))  # latches until reset
        if after.tripped <= self.tripped:
            return after, None
        why = []
        if drawdown >= self.reduce_fraction:
            why.append(f"drawdown {drawdown:.2%} from the peak of {peak:.2f}")
        if daily >= self.daily_loss_fraction and level is DrawdownAction.REDUCE:
            why.append(f"loss {daily:.2%} since the day's first NAV of {day_open:.2f} (limit "
                       f"{self.daily_loss_fraction:.2%})")
        fraction = after.unwind_fraction(self.tripped)
        reason = (f"drawdown breaker level {int(after.tripped)} ({after.tripped.name.lower()}): {' and '.join(why)}; "
                  f"unwinding {fraction:.0%} of the book" + (", then halted" if level is DrawdownAction.FLATTEN_AND_HALT
                                                             else ", no new exposure"))
        return after, BreakerAction(after.tripped, fraction, drawdown, daily, ts_ns or 0, reason)

    def unwind_fraction(self, since: DrawdownAction) -> Decimal:
        """Share of the book to unwind now that the breaker is at `tripped`, having acted up to `since`: the
        product of the levels' own remainders, so a jump past a level unwinds what both would have."""
        if self.tripped is DrawdownAction.FLATTEN_AND_HALT:
            return ONE
        left = ONE
        if since < DrawdownAction.REDUCE <= self.tripped:
            left *= ONE - self.reduce_unwind_fraction
        if since < DrawdownAction.CLOSE_PART <= self.tripped:
            left *= ONE - self.close_unwind_fraction
        return ONE - left

    def drawdown(self, nav: Decimal) -> Decimal:
        """From the peak to `nav`, the breaker's own unwind costs excluded."""
        measured = nav + self.excluded_costs
        return (self.peak_nav - measured) / self.peak_nav if self.peak_nav > 0 else ZERO

    def daily_loss(self, nav: Decimal) -> Decimal:
        """Loss since the UTC day's first NAV, as a fraction of it (0 on a gain), unwind costs excluded."""
        measured = nav + self.excluded_costs
        return max(ZERO, (self.day_open_nav - measured) / self.day_open_nav) if self.day_open_nav > 0 else ZERO

    def exclude(self, cost: Decimal) -> DrawdownBreaker:
        """The breaker after one of its unwinds settled, having cost `cost` (share class's currency)."""
        return replace(self, excluded_costs=self.excluded_costs + max(ZERO, cost))

    def reset(self, nav: Decimal) -> DrawdownBreaker:
        """An operator's decision: re-arm from the current NAV (the day's loss so far is accepted too)."""
        return replace(self, peak_nav=nav, tripped=DrawdownAction.NONE, day_open_nav=nav, excluded_costs=ZERO)

    def to_dict(self) -> dict[str, str]:
        return {"peak_nav": str(self.peak_nav), "tripped": self.tripped.name,
                "reduce_fraction": str(self.reduce_fraction), "close_fraction": str(self.close_fraction),
                "halt_fraction": str(self.halt_fraction), "reduce_unwind_fraction": str(self.reduce_unwind_fraction),
                "close_unwind_fraction": str(self.close_unwind_fraction),
                "daily_loss_fraction": str(self.daily_loss_fraction), "day": str(self.day),
                "day_open_nav": str(self.day_open_nav), "excluded_costs": str(self.excluded_costs)}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> DrawdownBreaker:
        """As `to_dict` wrote it; an older daemon's record (three levels that did not unwind) keeps its peak and
        level, and takes the defaults for what it lacked."""
        name = data["tripped"]
        tripped = _LEGACY_ACTIONS[name] if name in _LEGACY_ACTIONS else DrawdownAction[name]
        default = cls()
        return cls(Decimal(data["reduce_fraction"]), Decimal(data["close_fraction"]), Decimal(data["halt_fraction"]),
                   Decimal(data["peak_nav"]), tripped,
                   Decimal(data.get("reduce_unwind_fraction", str(default.reduce_unwind_fraction))),
                   Decimal(data.get("close_unwind_fraction", str(default.close_unwind_fraction))),
                   Decimal(data.get("daily_loss_fraction", str(default.daily_loss_fraction))),
                   int(data.get("day", "-1")), Decimal(data.get("day_open_nav", "0")),
                   Decimal(data.get("excluded_costs", "0")))


# --- trailing stop --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrailingStop:
    """For a directional position: trips when price retraces `trail_fraction` from its best level."""

    long: bool
    trail_fraction: Decimal
    best_price: Decimal
    triggered: bool = False

    def observe(self, price: Decimal) -> TrailingStop:
        if self.triggered:
            return self
        best = max(self.best_price, price) if self.long else min(self.best_price, price)
        stop = best * (1 - self.trail_fraction) if self.long else best * (1 + self.trail_fraction)
        hit = price <= stop if self.long else price >= stop
        return replace(self, best_price=best, triggered=hit)


# --- trading state and the REDUCING filter -------------------------------------------------------------


def trading_state(solvency: Level, breaker: DrawdownAction, operator_halted: bool,
                  stale: bool = False) -> TradingState:
    """Stale data means no new exposure: decisions on prices that stopped moving are guesses."""
    if operator_halted or breaker is DrawdownAction.FLATTEN_AND_HALT:
        return TradingState.HALTED
    if breaker > DrawdownAction.NONE or solvency >= Level.URGENT or stale:
        return TradingState.REDUCING
    return TradingState.ACTIVE


def permits(state: TradingState, reduces_exposure: bool) -> bool:
    """The one rule for what may go out in a trading state: everything when ACTIVE, only what reduces
    exposure when REDUCING, nothing when HALTED."""
    return state is TradingState.ACTIVE or (state is TradingState.REDUCING and reduces_exposure)


def order_allowed(state: TradingState, position: Decimal, signed_qty: Decimal) -> bool:
    """Whether an order of `signed_qty` on a position of `position` may go out in `state`.

    REDUCING lets through only orders that shrink the position without flipping it: |p + q| < |p| and the
    sign of p + q is not the opposite of p's.
    """
    if state is not TradingState.REDUCING:
        return permits(state, reduces_exposure=False)
    after = position + signed_qty
    return abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))


@dataclass(frozen=True, slots=True)
class SolvencyPriority:
    source: str  # "cex:<venue>" or "aave"
    level: Level
    distance_to_liquidation: Decimal


def solvency_priorities(margins: list[MarginReading], aave: AaveReading | None) -> list[SolvencyPriority]:
    """Solvency risks nearest to liquidation first (DOMAIN §8 #1): whichever of CEX margin or AAVE is closer."""
    items = [SolvencyPriority(f"cex:{m.venue}", m.level, m.distance_to_liquidation) for m in margins]
    if aave is not None:
        items.append(SolvencyPriority("aave", aave.level, aave.distance_to_liquidation))
    return sorted(items, key=lambda s: (s.distance_to_liquidation, -s.level))
