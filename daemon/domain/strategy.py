"""The strategy manager: one entry point that turns (mode, current state, market) into instructions.

`decide(change, spec, view)` computes the mode's desired state, the gaps between desired and current, and
an ordered list of instructions, each a sequence of steps with the executor that carries it out (seed 004).
Priorities follow DOMAIN §8 #1: solvency risks first, the one nearer liquidation (CEX margin or AAVE health)
before the other, delta last. A USDT share class always hedges the ETH it holds; an ETH share class never
does (ETH is its benchmark). In REDUCING only instructions that reduce exposure are produced.

Delta neutrality (issue 11 §1). The delta the strategy hedges is the book's (`held_delta`, equal to the wei to
`daemon.domain.neutrality.book_delta`, which the report and the metrics show): every holding of the asset —
wallet ETH (rewards sold for ETH, gas debt), free LST and AAVE collateral at the oracle rate, AAVE debt, spot on
the venues, perps, whatever else the ledger holds — against the share class. It is rebalanced whenever
|delta| / hedge leaves the band `rebalance_band` — the mode's `position_deviation_threshold`, never wider than
the risk's `delta_act_fraction` — and then traded back to the target (delta 0), not to the band's edge: the
hysteresis between acting at the band and stopping at 0 is what keeps it from trading every hour, and staking
accrual (the LST's rate and the borrow index move AAVE net ETH every hour) then costs one small perp order per
band's worth of drift. An order below the minimum is folded into another venue's, or waits until the drift
makes it worth one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from daemon.domain.aave import atomic_entry, repay_to_target_ltv
from daemon.domain.messages import TradingState
from daemon.domain.neutrality import benchmark_holding, drift
from daemon.domain.risk import Level, MarginReading, RiskLimits, aave_reading, margin_reading, solvency_priorities

ZERO = Decimal(0)
ONE = Decimal(1)
QTY = Decimal("0.001")


class Change(StrEnum):
    INITIAL_SETUP = "INITIAL_SETUP"
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    REBALANCE = "REBALANCE"
    UNWIND = "UNWIND"


class Executor(StrEnum):
    WALLET = "wallet"  # on-chain transfers
    CEX = "cex"  # exchange orders and withdrawals
    AAVE = "aave"  # supply, borrow, repay, withdraw
    STAKING = "staking"  # mint / redeem LSTs
    ATOMIC = "atomic"  # one flash-loan transaction (leverage, deleverage)


@dataclass(frozen=True, slots=True)
class Step:
    step: int
    action: str
    executor: Executor
    venue: str
    params: Mapping[str, Decimal | str]


@dataclass(frozen=True, slots=True)
class Instruction:
    priority: int
    type: str
    venue: str
    amount_usd: Decimal
    steps: tuple[Step, ...]
    reduces_exposure: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """What a mode is, in domain terms (built from the config by the composition root)."""

    name: str
    share_class: str  # "USDT" | "ETH"
    asset: str  # "ETH" | "BTC" | "USDT"
    lending: bool
    borrowing: bool
    staking: bool
    hedged: bool
    stake_allocation: Decimal  # a: share of equity on the long leg (USDT staking modes)
    target_ltv: Decimal  # λ
    liquidation_threshold: Decimal
    hedge_weights: Mapping[str, Decimal]  # venue → weight, Σ = 1, 0 skips a venue
    margin_ratio_target: Decimal
    deviation_threshold: Decimal
    min_order_usd: Decimal
    spot_venue: str | None = "binance"
    lst: str = "weETH"
    staking_venue: str = "etherfi"  # the venue that mints and redeems `lst` (etherfi: weETH, lido: wstETH)
    # USDT a venue keeps of each withdrawal to the wallet (its `withdrawal_fee`): an entry that moves capital
    # between venues plans with it, so no withdrawal is refused for not covering its fee.
    withdrawal_fees_usdt: Mapping[str, Decimal] = field(default_factory=dict)
    # Each venue's fee for withdrawing the mode's asset (ETH), in it: loose ETH on a venue worth less than
    # WITHDRAWAL_FEE_MULTIPLE fees stays there (hedged as any spot), rather than pay a tenth of itself or more to move.
    withdrawal_fees_asset: Mapping[str, Decimal] = field(default_factory=dict)
    unwind: str = "fast"
    gas_reserve: Decimal = ZERO  # ETH kept in the wallet for gas (ETH share class, which has no gas debt)
    leverage: str = "atomic"  # "atomic" (flash loan) | "sequential" (round after round, DOMAIN §3)
    min_loop_usd: Decimal = Decimal(10_000)  # a sequential loop stops when the next borrow would be smaller
    max_leverage_iterations: int | None = None  # sequential: at most this many borrows
    # Capital may move between the venues through the wallet (withdraw to it, transfer on chain). False in `live`
    # until the chain adapter exists: each venue then trades with what it holds, and nothing plans a transfer.
    wallet_transfers: bool = True
    # Each venue's lot step for the mode's perp, in the asset (Bybit's ETHUSDT: 0.01), and the spot pair's: every
    # quantity the strategy plans is a multiple of the step of the market it goes to (a venue refuses the rest,
    # and an order is never rounded into another at the venue). QTY where the catalog names none.
    lot_steps: Mapping[str, Decimal] = field(default_factory=dict)
    spot_lot_step: Decimal = QTY

    def lot(self, venue: str) -> Decimal:
        return self.lot_steps.get(venue, QTY)

    def __post_init__(self) -> None:
        if self.share_class == "ETH" and self.hedged:
            raise ValueError(f"{self.name}: an ETH share class never hedges (ADR-11)")
        if self.share_class == "USDT" and self.staking and not self.hedged:
            raise ValueError(f"{self.name}: a USDT share class must hedge the ETH it stakes (ADR-26)")
        if self.hedged and abs(sum(self.hedge_weights.values(), ZERO) - ONE) > Decimal("1e-9"):
            raise ValueError(f"{self.name}: hedge weights must sum to 1")


@dataclass(frozen=True, slots=True)
class VenueView:
    usdt: Decimal
    spot: Decimal  # of the asset
    perp_size: Decimal  # signed
    perp_entry: Decimal
    mark: Decimal


@dataclass(frozen=True, slots=True)
class StrategyView:
    """The current state, valued (from the ledger, exposure and market)."""

    equity: Decimal  # in the share class's currency
    price_usd: Decimal  # of the asset (ETH or BTC)
    lst_rate: Decimal  # ETH per LST
    aave_collateral: Decimal  # in ETH (for USDT lending: USD)
    aave_debt: Decimal  # in ETH
    wallet_asset: Decimal  # free asset on chain (ETH; may be negative gas debt)
    wallet_lst: Decimal  # free LST, native units
    wallet_usdt: Decimal
    venues: Mapping[str, VenueView] = field(default_factory=dict)
    trading: TradingState = TradingState.ACTIVE
    # The asset held where the fields above do not look — another LST, spot on a venue outside `venues`, a
    # transfer in transit — in its units: `strategy_view` sets it from the ledger, so that `held_delta` is the
    # book's delta (`neutrality.book_delta`) to the last digit, not a second opinion of it.
    asset_elsewhere: Decimal = ZERO
    # Funds on their way between two of our accounts (a transfer a restart found moving, or one slower than the
    # wait): capital the plans cannot place yet — an entry planned now would send the same leg's money twice.
    in_transit_usd: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class DesiredState:
    aave_collateral: Decimal
    aave_debt: Decimal
    lst: Decimal  # free LST in ETH terms (staking without AAVE)
    spot: Decimal  # asset held spot (basis modes)
    shorts: Mapping[str, Decimal]  # venue → signed perp size
    margin_usd: Mapping[str, Decimal]  # venue → USDT to hold as margin
    lending_usd: Decimal  # USDT supplied (pure lending USDT)


@dataclass(frozen=True, slots=True)
class Gaps:
    aave_ltv_gap: Decimal  # current LTV − target
    delta_gap: Decimal  # asset units the hedge must change by (negative: add shorts)
    margin_deficit_usd: Decimal
    critical_venue: str | None
    short_gaps: Mapping[str, Decimal]
    delta: Decimal = ZERO  # the book's delta against the share class, in the asset (`held_delta`)
    drift: Decimal | None = None  # |delta| / hedge notional (None: no hedge to drift from), neutrality.drift


@dataclass(frozen=True, slots=True)
class Decision:
    change: Change
    mode: str
    current: StrategyView
    desired: DesiredState
    gaps: Gaps
    instructions: tuple[Instruction, ...]
    hold_reason: str = ""  # why nothing is to be done, when `instructions` is empty (an explicit HOLD, §8 #16)


# --- desired state ------------------------------------------------------------------------------------


def desired_state(spec: ModeSpec, equity: Decimal, price: Decimal) -> DesiredState:
    """The mode's target for `equity` (share-class currency) at `price` (USD per unit of the asset)."""
    weights = {v: w for v, w in spec.hedge_weights.items() if w > 0} if spec.hedged else {}
    zero_shorts: dict[str, Decimal] = {}
    if spec.name == "pure_lending":
        usd = equity if spec.share_class == "USDT" else ZERO
        eth = equity if spec.share_class == "ETH" else ZERO
        return DesiredState(eth, ZERO, ZERO, ZERO, zero_shorts, {}, usd)
    if spec.name in ("btc_basis", "eth_basis"):
        notional = equity / (ONE + spec.margin_ratio_target)  # N = E / (1 + r)
        size = _qty(notional / price, spec.spot_lot_step)
        return DesiredState(ZERO, ZERO, ZERO, size, {v: -_qty(size * w, spec.lot(v)) for v, w in weights.items()},
                            {v: (equity - notional) * w for v, w in weights.items()}, ZERO)
    if spec.name == "eth_staking_only":
        return DesiredState(ZERO, ZERO, equity, ZERO, zero_shorts, {}, ZERO)
    if spec.name == "eth_leveraged":
        entry = atomic_entry(equity, spec.target_ltv)
        return DesiredState(entry.supplied, entry.borrowed, ZERO, ZERO, zero_shorts, {}, ZERO)
    long_eth = equity * spec.stake_allocation / price  # USDT staking modes: a·E of the equity goes long
    margin = equity * (ONE - spec.stake_allocation)
    shorts = {v: -_qty(long_eth * w, spec.lot(v)) for v, w in weights.items()}
    margins = {v: margin * w for v, w in weights.items()}
    if spec.name == "usdt_market_neutral_no_leverage":
        return DesiredState(ZERO, ZERO, long_eth, ZERO, shorts, margins, ZERO)
    if spec.name == "usdt_market_neutral":
        entry = atomic_entry(long_eth, spec.target_ltv)
        return DesiredState(entry.supplied, entry.borrowed, ZERO, ZERO, shorts, margins, ZERO)
    raise ValueError(f"unknown mode {spec.name!r}")


# Loose ETH on a venue is withdrawn to be levered only when the withdrawal's fee is at most a tenth of it: a margin
# top-up's ETH beyond the lots it sold (0.00882 ETH) does not cover Bybit's and OKX's fee on top (0.0015) by much.
WITHDRAWAL_FEE_MULTIPLE = Decimal(10)


def _qty(x: Decimal, step: Decimal = QTY) -> Decimal:
    """`x` rounded down to a multiple of `step`."""
    if step == QTY:
        return x.quantize(QTY, rounding=ROUND_DOWN)
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


# --- the entry point ----------------------------------------------------------------------------------


def decide(change: Change, spec: ModeSpec, view: StrategyView, amount: Decimal = ZERO,
           limits: RiskLimits | None = None) -> Decision:
    """Desired state, gaps and ordered instructions for `change` (`amount` for deposits and withdrawals)."""
    limits = limits or RiskLimits()
    if change in (Change.DEPOSIT, Change.WITHDRAWAL) and amount <= 0:
        raise ValueError(f"{change} needs a positive amount, was {amount}")
    target_equity = view.equity + (amount if change is Change.DEPOSIT else -amount if change is Change.WITHDRAWAL
                                   else ZERO)
    desired = desired_state(spec, ZERO if change is Change.UNWIND else target_equity, view.price_usd)
    gaps = _gaps(spec, view, desired, limits)
    if change is Change.REBALANCE and is_flat(spec, view):
        change = Change.INITIAL_SETUP  # nothing held (a flatten, an unwind): the way to the desired state is the entry
    entry_hold = ""
    if change in (Change.INITIAL_SETUP, Change.DEPOSIT):
        amount = view.equity if change is Change.INITIAL_SETUP else amount
        entry_hold = _entry_hold(spec, view, amount)
        instructions = [] if entry_hold else \
            _entry(spec, view, amount, net_venues=change is Change.INITIAL_SETUP)
    elif change is Change.WITHDRAWAL:
        instructions = _exit(spec, view, amount / view.equity if view.equity else ONE)
    elif change is Change.UNWIND:
        instructions = _exit(spec, view, ONE)
    else:
        instructions = _rebalance(spec, view, desired, gaps, limits)
        idle = idle_capital(spec, view)
        if not instructions and idle >= reinvest_floor(spec, view):
            # Capital a partial unwind freed (a drawdown breaker's reduce, then `basisd resume`), or rewards sold
            # into the wallet, is put back to work once nothing more urgent is due: as a deposit of it.
            entry_hold = _entry_hold(spec, view, idle)
            if view.trading is TradingState.ACTIVE and not entry_hold:
                change = Change.DEPOSIT
                instructions = _entry(spec, view, idle, net_venues=False)
            elif view.trading is TradingState.REDUCING:
                entry_hold = f"reducing: {idle:.2f} {spec.share_class} idle waits for trading ACTIVE (basisd resume)"
    unfiltered = bool(instructions)
    instructions, waiting = _permitted(spec, view, instructions)
    entry_hold = entry_hold or waiting
    ordered = tuple(Instruction(n, i.type, i.venue, i.amount_usd, i.steps, i.reduces_exposure, i.reason)
                    for n, i in enumerate(instructions, start=1))
    hold = ""
    if not ordered:
        hold = ("trading halted" if view.trading is TradingState.HALTED else entry_hold or
                ("reducing: no instruction due reduces exposure" if view.trading is TradingState.REDUCING and
                 unfiltered else "within every band"))
    return Decision(change, spec.name, view, desired, gaps, ordered, hold)


def _permitted(spec: ModeSpec, view: StrategyView, instructions: list[Instruction]) -> tuple[list[Instruction], str]:
    """The instructions the trading state lets through, and why others wait (halted: none; reducing, or funds in
    transit: only those that reduce exposure — what travels is placed once it has landed, never sent twice)."""
    if view.trading is TradingState.HALTED:
        return [], ""
    if view.trading is TradingState.REDUCING:
        return [i for i in instructions if i.reduces_exposure], ""
    if view.in_transit_usd >= spec.min_order_usd and any(not i.reduces_exposure for i in instructions):
        return [i for i in instructions if i.reduces_exposure], (
            f"{view.in_transit_usd:.2f} USD in transit between our accounts: plans that add exposure wait for it "
            "to land")
    return instructions, ""


def exposure_usd(spec: ModeSpec, view: StrategyView) -> Decimal:
    """What is held beyond idle capital, in USD, gross: AAVE collateral and debt, free LST, spot and perps.
    Idle capital — USDT in the wallet or on a venue, and the wallet's ETH (an ETH share class's capital, or
    a USDT class's gas money) — is not exposure: a book holding only that has yet to (re-)enter."""
    price = view.price_usd
    lending_usd = spec.name == "pure_lending" and spec.share_class == "USDT"  # collateral counted in USD
    aave = view.aave_collateral * (ONE if lending_usd else price) + view.aave_debt * price
    long_leg = (view.wallet_lst * view.lst_rate + sum((v.spot for v in view.venues.values()), ZERO)) * price
    perps = sum((abs(v.perp_size) * v.mark for v in view.venues.values()), ZERO)
    return abs(aave) + abs(long_leg) + perps


def is_flat(spec: ModeSpec, view: StrategyView) -> bool:
    """Nothing held worth an order: after a flatten or an unwind, as before the first entry."""
    return exposure_usd(spec, view) < spec.min_order_usd


REINVEST_IDLE_FRACTION = Decimal("0.05")  # of equity: below it idle capital waits (one entry's fees and gas per 5 %)


def idle_capital(spec: ModeSpec, view: StrategyView) -> Decimal:
    """Capital in the wallet that no leg uses, in the share class's currency: its USDT for a USDT class, its ETH
    beyond the gas reserve for an ETH class."""
    if spec.share_class == "USDT":
        return max(ZERO, view.wallet_usdt)
    return max(ZERO, view.wallet_asset - spec.gas_reserve)


def reinvest_floor(spec: ModeSpec, view: StrategyView) -> Decimal:
    """The idle capital worth an entry of its own: REINVEST_IDLE_FRACTION of equity, and at least a minimum
    order (in the share class's currency)."""
    min_order = spec.min_order_usd if spec.share_class == "USDT" else spec.min_order_usd / view.price_usd
    return max(min_order, REINVEST_IDLE_FRACTION * view.equity)


def next_change(spec: ModeSpec, view: StrategyView) -> Change:
    """What the hourly decision is: the entry on a flat book (at start-up, and after a flatten and a resume),
    a rebalance of what is held otherwise."""
    return Change.INITIAL_SETUP if is_flat(spec, view) else Change.REBALANCE


def _entry_hold(spec: ModeSpec, view: StrategyView, amount: Decimal) -> str:
    """Why an entry of `amount` is not made now, or "" when it is to be made."""
    if view.trading is TradingState.REDUCING:
        return "reducing: no new exposure, the entry waits for trading ACTIVE"
    if view.trading is not TradingState.ACTIVE:
        return ""  # halted: said by the caller
    usd = amount if spec.share_class == "USDT" else amount * view.price_usd
    if usd < spec.min_order_usd:
        return f"nothing to enter: {usd:.2f} USD is below the minimum order of {spec.min_order_usd} USD"
    return ""


# --- the delta -----------------------------------------------------------------------------------------


def delta_asset(spec: ModeSpec) -> str:
    """The asset whose delta the mode measures: its own (ETH, BTC); ETH for USDT lending (the gas money)."""
    return spec.asset if spec.asset in ("ETH", "BTC") else "ETH"


def _usd_collateral(spec: ModeSpec) -> bool:
    return spec.name == "pure_lending" and spec.share_class == "USDT"  # the view's collateral is USD


def listed_holdings(spec: ModeSpec, view: StrategyView) -> Decimal:
    """The asset held in the view's own fields, perps excluded: wallet, free LST and AAVE net at the oracle
    (ETH only), spot on the venues. `held_delta` adds `asset_elsewhere` and the perps."""
    eth = delta_asset(spec) == "ETH"
    onchain = view.wallet_asset
    if eth:
        onchain += view.wallet_lst * view.lst_rate
        if not _usd_collateral(spec):
            onchain += view.aave_collateral - view.aave_debt
    return onchain + sum((v.spot for v in view.venues.values()), ZERO)


def unhedged_holdings(spec: ModeSpec, view: StrategyView) -> Decimal:
    """What the perps must offset: every holding of the asset but the perps, against the share class."""
    return listed_holdings(spec, view) + view.asset_elsewhere - \
        benchmark_holding(spec.share_class, delta_asset(spec), view.equity)


def held_delta(spec: ModeSpec, view: StrategyView) -> Decimal:
    """The book's delta against the share class, in the asset: + long (shorts must grow), − short."""
    return unhedged_holdings(spec, view) + sum((v.perp_size for v in view.venues.values()), ZERO)


def hedge_notional_usd(view: StrategyView) -> Decimal:
    return sum((abs(v.perp_size) * v.mark for v in view.venues.values()), ZERO)


def rebalance_band(spec: ModeSpec, limits: RiskLimits) -> Decimal:
    """The drift (|delta| / hedge notional) above which the delta is traded back to 0: the mode's
    `position_deviation_threshold`, capped at the risk's act level — the strategy must have acted by the time
    the risk says the book is no longer neutral."""
    return min(spec.deviation_threshold, limits.delta_act_fraction)


def _gaps(spec: ModeSpec, view: StrategyView, desired: DesiredState, limits: RiskLimits) -> Gaps:
    ltv = view.aave_debt / view.aave_collateral if view.aave_collateral else ZERO
    long_leg = unhedged_holdings(spec, view)
    delta = held_delta(spec, view)
    # Net delta +x (long) means shorts must grow by x; −x means they must shrink (the seed's sign, §8 #17).
    delta_gap = -delta if spec.hedged else ZERO
    deficits = {venue: _margin_deficit(v, spec.margin_ratio_target, _moves_usdt(spec, venue))
                for venue, v in view.venues.items() if _margin(venue, v, limits).level >= Level.WARNING}
    critical = max(deficits, key=lambda k: deficits[k]) if deficits else None
    short_gaps = {venue: target - view.venues.get(venue, VenueView(ZERO, ZERO, ZERO, ZERO, ZERO)).perp_size
                  for venue, target in hedge_targets(spec, long_leg).items()}
    return Gaps(ltv - spec.target_ltv if spec.borrowing else ZERO, delta_gap,
                deficits.get(critical, ZERO) if critical else ZERO, critical, short_gaps, delta,
                drift(delta, view.price_usd, hedge_notional_usd(view), spec.hedged))


def hedge_targets(spec: ModeSpec, long_leg: Decimal) -> dict[str, Decimal]:
    """Shorts that hedge the long leg actually held (`unhedged_holdings`: AAVE net ETH, free LST, spot, wallet
    ETH, against the share class), split by weight.

    Not the entry's a·E/P: once in, the hedge follows the ETH held, which drifts with yields, fees and
    margin top-ups, while E/P moves with the price of ETH itself (DOMAIN §4).
    """
    if not spec.hedged:
        return {}
    return {v: -_qty(long_leg * w, spec.lot(v)) for v, w in spec.hedge_weights.items() if w > 0}


def _margin(venue: str, v: VenueView, limits: RiskLimits) -> MarginReading:
    return margin_reading(venue, v.usdt, v.perp_size, v.perp_entry, v.mark, limits)


def _moves_usdt(spec: ModeSpec, venue: str) -> bool:
    """Whether a margin top-up's proceeds reach `venue`: through the wallet, or because the long is held there."""
    return spec.wallet_transfers or (spec.spot_venue or venue) == venue or spec.staking


def _margin_deficit(v: VenueView, target: Decimal, moves_usdt: bool = True) -> Decimal:
    """USD of ETH to move from the long leg to the venue (selling it and buying back as much short) so that
    its margin ratio returns to `target`: x = (t·|s|·P − equity) / (P·(1 + t)) ETH. When the proceeds cannot reach
    the venue (`moves_usdt` False: live without wallet transfers, the long on another venue), only the smaller short
    lifts the ratio: x = |s| − equity / (t·P)."""
    equity = v.usdt + v.perp_size * (v.mark - v.perp_entry)
    if not moves_usdt:
        return max(ZERO, (abs(v.perp_size) - equity / (target * v.mark)) * v.mark)
    x = (target * abs(v.perp_size) * v.mark - equity) / (v.mark * (ONE + target))
    return max(ZERO, x * v.mark)


# --- instruction recipes -------------------------------------------------------------------------------


def add_margin_to_cex(spec: ModeSpec, view: StrategyView, venue: str, amount_usd: Decimal) -> Instruction:
    """Seed 004's ADD_MARGIN_TO_CEX: shrink the long and the short by the same ETH, so delta is kept while
    the venue's margin ratio rises. The AAVE leg is freed at constant LTV: repay p·D, withdraw p·C with
    p = x / (C − D), which frees p·(C − D) = x of equity."""
    price = view.price_usd
    eth = _qty(amount_usd / price, spec.lot(venue))
    if spec.borrowing:
        equity = view.aave_collateral - view.aave_debt
        p = min(ONE, eth / equity) if equity > 0 else ZERO
        first = Step(1, "ATOMIC_DELEVERAGE_AAVE", Executor.ATOMIC, "aave_v3",
                     {"amount_usd": amount_usd, "repay_eth": p * view.aave_debt,
                      "withdraw_eth": p * view.aave_collateral, "mode": "atomic", "unwind_mode": spec.unwind,
                      "free_eth": p * equity}) \
            if spec.leverage == "atomic" else \
            Step(1, "SEQUENTIAL_DELEVERAGE_AAVE", Executor.AAVE, "aave_v3",
                 {"amount_usd": amount_usd, "repay_eth": p * view.aave_debt,
                  "withdraw_eth": p * view.aave_collateral, "mode": "sequential", "unwind_mode": spec.unwind})
    elif not spec.staking:
        # Basis modes hold the long as spot on the spot venue: sell some there, move the USDT to the venue that
        # needs it (through the wallet), and shrink that venue's short by as much.
        # One quantity for both legs: a multiple of the spot pair's step and of the venue's perp step.
        asset, qty = spec.asset, _qty(amount_usd / price, max(spec.spot_lot_step, spec.lot(venue)))
        spot = spec.spot_venue or venue
        usd = qty * price
        basis_steps = [Step(1, "SELL_SPOT", Executor.CEX, spot, {"amount": qty, "asset": asset})]
        # Without wallet transfers the proceeds stay on the spot venue; the smaller short alone lifts the ratio.
        if spot != venue and spec.wallet_transfers:
            basis_steps += [Step(2, "WITHDRAW_USDT_TO_WALLET", Executor.WALLET, spot, {"amount_usd": usd}),
                            Step(3, "TRANSFER_USDT_TO_CEX", Executor.WALLET, venue, {"amount_usd": usd})]
        basis_steps.append(Step(len(basis_steps) + 1, "REDUCE_PERP_SHORT", Executor.CEX, venue,
                                {"amount": qty, "asset": asset}))
        return Instruction(0, "ADD_MARGIN_TO_CEX", venue, amount_usd, tuple(basis_steps), True, "margin below warning")
    else:
        first = Step(1, "REDEEM_LST", Executor.STAKING, spec.staking_venue,
                     {"amount_eth": eth, "unwind_mode": spec.unwind})
    steps = (
        first,
        Step(2, "TRANSFER_ETH_TO_CEX", Executor.WALLET, venue, {"amount_eth": eth}),
        Step(3, "SELL_ETH_SPOT", Executor.CEX, venue, {"amount_eth": eth}),
        Step(4, "REDUCE_PERP_SHORT", Executor.CEX, venue, {"amount_eth": eth}),
    )
    return Instruction(0, "ADD_MARGIN_TO_CEX", venue, amount_usd, steps, True, "margin below warning")


def _reduce_ltv(spec: ModeSpec, view: StrategyView) -> Instruction | None:
    repay = repay_to_target_ltv(view.aave_collateral, view.aave_debt, spec.target_ltv)
    if repay <= 0:
        return None
    if spec.leverage == "sequential":
        # Without a flash loan: withdraw what the max LTV allows, swap it, repay; round after round.
        step = Step(1, "SEQUENTIAL_DELEVERAGE_AAVE", Executor.AAVE, "aave_v3",
                    {"repay_eth": repay, "withdraw_eth": repay, "unwind_mode": spec.unwind})
        return Instruction(0, "REDUCE_LTV", "aave_v3", repay * view.price_usd, (step,), True, "LTV above target")
    steps = (
        Step(1, "FLASH_BORROW", Executor.ATOMIC, "aave_v3", {"asset": "WETH", "amount_eth": repay}),
        Step(2, "REPAY_DEBT", Executor.ATOMIC, "aave_v3", {"asset": "WETH", "amount_eth": repay}),
        Step(3, "WITHDRAW_COLLATERAL", Executor.ATOMIC, "aave_v3", {"asset": spec.lst, "amount_eth": repay}),
        Step(4, "SWAP_LST_TO_WETH", Executor.ATOMIC, "aave_v3", {"asset": spec.lst, "amount_eth": repay}),
        Step(5, "REPAY_FLASH", Executor.ATOMIC, "aave_v3", {"asset": "WETH", "amount_eth": repay}),
    )
    # Perps are left alone: AAVE safety beats delta neutrality (both seeds); the delta is fixed next cycle.
    return Instruction(0, "REDUCE_LTV", "aave_v3", repay * view.price_usd, steps, True, "LTV above target")


def _increase_ltv(spec: ModeSpec, view: StrategyView) -> Instruction | None:
    """Back to LTV λ in one flash-loan transaction: flash-borrow x WETH, stake it, supply the LST, borrow x to
    repay the flash, with x = (λC − D)/(1 − λ). Collateral and debt grow by the same x ETH, so the net ETH on AAVE
    — and with it the hedge — is unchanged. (Sequential leverage does not re-lever: without a flash loan each
    round could only borrow what the max LTV leaves, and the loop's gas would eat the carry it adds.)"""
    if spec.leverage != "atomic":
        return None
    x = (spec.target_ltv * view.aave_collateral - view.aave_debt) / (ONE - spec.target_ltv)
    if x * view.price_usd < spec.min_order_usd:
        return None
    step = Step(1, "ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3",
                {"equity_eth": ZERO, "supply_eth": x, "borrow_eth": x, "lst": spec.lst})
    return Instruction(0, "INCREASE_LTV", "aave_v3", x * view.price_usd, (step,), False, "LTV below target")


def hedge_orders(spec: ModeSpec, view: StrategyView, gaps: Gaps, limits: RiskLimits) -> dict[str, Decimal]:
    """Signed perp changes per venue (negative: short more) that take the delta back to 0.

    Each venue moves toward its weight's share of the hedge (`gaps.short_gaps`, which add up to the delta gap),
    except that no short grows on a venue whose margin is at WARNING or worse, and no reduction goes past flat:
    what a venue cannot take goes to the venues that can, by weight, so the book is still hedged in full.
    Pieces below the minimum order join the largest order (or, when every piece is small, go to one venue
    together), so a drift made of many small pieces is still corrected once it is worth an order.
    """
    price, minimum = view.price_usd, spec.min_order_usd

    def held(venue: str) -> Decimal:  # the short held, as a positive size (0 without one)
        return max(ZERO, -(view.venues[venue].perp_size if venue in view.venues else ZERO))

    def may_grow(venue: str) -> bool:
        return spec.hedge_weights.get(venue, ZERO) > 0 and not (
            venue in view.venues and _margin(venue, view.venues[venue], limits).level >= Level.WARNING)

    changes = {v: (min(g, held(v)) if g > 0 else g) for v, g in gaps.short_gaps.items() if g > 0 or may_grow(v)}
    left = gaps.delta_gap - sum(changes.values(), ZERO)
    if left < 0:  # more short than the allowed moves give: the venues that may grow take it, by weight
        takers = [v for v in spec.hedge_weights if may_grow(v)]
    else:  # less short: the venues with a short left to reduce give it, by weight
        takers = [v for v in spec.hedge_weights if held(v) - changes.get(v, ZERO) > 0]
    weight = sum((spec.hedge_weights[v] for v in takers), ZERO)
    if left and weight:
        for v in takers:
            change = changes.get(v, ZERO) + left * spec.hedge_weights[v] / weight
            changes[v] = min(change, held(v)) if change > 0 else change
    orders = {v: c for v, c in changes.items() if _qty(abs(c), spec.lot(v)) * price >= minimum}
    small = sum((c for v, c in changes.items() if v not in orders), ZERO)
    if orders and small:
        largest = max(orders, key=lambda v: abs(orders[v]))
        merged = orders[largest] + small
        if (merged > 0) == (orders[largest] > 0) and merged <= held(largest):
            orders[largest] = merged
    elif small and _qty(abs(small), max(spec.lot(v) for v in changes)) * price >= minimum:
        able = [v for v in spec.hedge_weights if (may_grow(v) if small < 0 else held(v) >= small)]
        if able:
            orders[max(able, key=lambda v: spec.hedge_weights[v])] = small
    return {v: _qty(abs(c), spec.lot(v)) * (ONE if c > 0 else -ONE) for v, c in orders.items()
            if _qty(abs(c), spec.lot(v)) > 0}


def _delta_adjust(spec: ModeSpec, view: StrategyView, gaps: Gaps, limits: RiskLimits) -> Instruction | None:
    steps: list[Step] = []
    reduces = True
    for venue, change in sorted(hedge_orders(spec, view, gaps, limits).items()):
        current = view.venues[venue].perp_size if venue in view.venues else ZERO
        reduces = reduces and abs(current + change) < abs(current)
        action = "REDUCE_PERP_SHORT" if change > 0 else "INCREASE_PERP_SHORT"
        steps.append(Step(len(steps) + 1, action, Executor.CEX, venue, {"amount_eth": abs(change)}))
    if not steps:
        return None
    amount = sum((Decimal(str(s.params["amount_eth"])) for s in steps), ZERO) * view.price_usd
    return Instruction(0, "DELTA_ADJUST", "cex", amount, tuple(steps), reduces, "hedge drifted from target")


def delta_out_of_band(spec: ModeSpec, view: StrategyView, gaps: Gaps, limits: RiskLimits) -> bool:
    """Whether the delta is to be traded back to 0 now: its drift is above `rebalance_band`, or the book holds
    a long worth an order with no perp at all to hedge it (perps lost to a liquidation, a failed entry)."""
    if not spec.hedged:
        return False
    if gaps.drift is None:
        return abs(gaps.delta) * view.price_usd >= spec.min_order_usd
    return gaps.drift > rebalance_band(spec, limits)


def solvency_levels(spec: ModeSpec, view: StrategyView, limits: RiskLimits) -> tuple[Level, Level]:
    """The worst of the venues' margin levels and the AAVE loop's level, as the rebalance reads them: a reading that
    moves to a worse level is a risk event the strategy decides on at once, not at its next interval."""
    margin = max((_margin(v, vv, limits).level for v, vv in view.venues.items()), default=Level.OK)
    aave = aave_reading(view.aave_collateral, view.aave_debt, spec.liquidation_threshold, spec.target_ltv,
                        limits).level if spec.borrowing else Level.OK
    return margin, aave


def _rebalance(spec: ModeSpec, view: StrategyView, desired: DesiredState, gaps: Gaps,
               limits: RiskLimits) -> list[Instruction]:
    solvency: list[tuple[Decimal, Instruction]] = []
    margins = [_margin(v, vv, limits) for v, vv in view.venues.items()]
    aave = aave_reading(view.aave_collateral, view.aave_debt, spec.liquidation_threshold, spec.target_ltv, limits) \
        if spec.borrowing else None
    for priority in solvency_priorities(margins, aave):
        if priority.source == "aave" and priority.level >= Level.URGENT:
            reduce = _reduce_ltv(spec, view)
            if reduce is not None:
                solvency.append((priority.distance_to_liquidation, reduce))
        elif priority.source.startswith("cex:") and priority.level >= Level.WARNING and spec.hedged:
            venue = priority.source[4:]
            deficit = _margin_deficit(view.venues[venue], spec.margin_ratio_target, _moves_usdt(spec, venue))
            if deficit > spec.min_order_usd:
                solvency.append((priority.distance_to_liquidation,
                                 add_margin_to_cex(spec, view, venue, deficit)))
    instructions = [i for _, i in solvency]  # already nearest-first
    if not solvency:
        # The long leg held loose (bought, not yet on AAVE or staked): an entry cut short — a restart abandons the
        # instruction in progress, never re-runs it — is finished from where the book is. It moves ETH without
        # changing the book's delta, so the delta adjustment below (sized on the same book) still holds beside it.
        complete = _complete_long_leg(spec, view)
        if complete is not None:
            instructions.append(complete)
    # Delta last, and not in the same cycle as a solvency fix: a margin top-up or an LTV reduction changes the
    # legs the hedge targets are computed from, and a delta adjustment sized from the books before it would
    # partly undo it (grow back the short the top-up just shrank). The next cycle sizes it on fresh books.
    if spec.borrowing and not solvency and view.aave_debt > 0 and \
            view.aave_debt / view.aave_collateral < spec.target_ltv - limits.ltv_act_above_target:
        # LTV drifts down as staking outgrows borrowing: re-lever to λ (DOMAIN §6, |LTV − λ| > 0.02).
        lever = _increase_ltv(spec, view)
        if lever is not None:
            instructions.append(lever)
    if not solvency and delta_out_of_band(spec, view, gaps, limits):
        adjust = _delta_adjust(spec, view, gaps, limits)
        if adjust is not None:
            instructions.append(adjust)
    return instructions


def _complete_long_leg(spec: ModeSpec, view: StrategyView) -> Instruction | None:
    """A USDT market-neutral book whose long ETH sits loose — spot on a venue, or in the wallet beyond the gas
    reserve — worth at least what an idle capital's entry would be (`reinvest_floor`: 5 % of equity): the rest of
    its entry, from where the book is (the ETH withdrawn to the wallet, then staked and levered as the entry's tail
    would). The leg moved to AAVE keeps its net ETH: the delta is unchanged (an unhedged part is the delta
    adjustment's, in the same cycle).
    The wallet's own gas money stays below the floor (a live wallet holds some; a simulated one runs a gas debt)."""
    if spec.share_class != "USDT" or not spec.staking or not spec.hedged or view.price_usd <= 0:
        return None
    spot = {venue: v.spot for venue, v in view.venues.items()
            if v.spot > 0 and v.spot >= WITHDRAWAL_FEE_MULTIPLE * spec.withdrawal_fees_asset.get(venue, ZERO)}
    loose = sum(spot.values(), ZERO) + max(ZERO, view.wallet_asset - spec.gas_reserve)
    if loose * view.price_usd < reinvest_floor(spec, view):
        return None
    steps: list[Step] = []

    def add(action: str, executor: Executor, venue: str, **params: Decimal | str) -> None:
        steps.append(Step(len(steps) + 1, action, executor, venue, params))

    for venue, amount in sorted(spot.items()):
        add("WITHDRAW_TO_WALLET", Executor.CEX, venue, amount_eth=amount)
    if spec.borrowing and spec.leverage == "sequential":
        _add_sequential_entry(add, spec, loose, view.price_usd)
    elif spec.borrowing:
        lev = atomic_entry(loose, spec.target_ltv)
        add("ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3", equity_eth=loose, supply_eth=lev.supplied,
            borrow_eth=lev.borrowed, lst=spec.lst)
    else:
        add("STAKE", Executor.STAKING, spec.staking_venue, amount_eth=loose, lst=spec.lst)
    return Instruction(0, "COMPLETE_LONG_LEG", spec.name, loose * view.price_usd, tuple(steps), False,
                       f"{loose:.4f} {spec.asset} held loose: the entry's long leg, not on AAVE")


def _entry(spec: ModeSpec, view: StrategyView, amount: Decimal, net_venues: bool = True) -> list[Instruction]:
    """Initial setup or deposit of `amount` (share-class currency), per mode (ADR-6 sequence for USDT MN).
    `net_venues`: the capital is the whole book, part of it possibly on the venues already (an initial setup,
    a re-entry after a flatten); False for a deposit, which arrives in the wallet beside margins in use."""
    if net_venues:
        amount = _deployable(spec, view, amount)
    d = desired_state(spec, amount, view.price_usd)
    steps: list[Step] = []

    def add(action: str, executor: Executor, venue: str, **params: Decimal | str) -> None:
        steps.append(Step(len(steps) + 1, action, executor, venue, params))

    price = view.price_usd
    if spec.name == "pure_lending":
        add("SUPPLY", Executor.AAVE, "aave_v3", asset="USDT" if spec.share_class == "USDT" else "WETH",
            amount=amount)
    elif spec.name == "eth_staking_only":
        add("STAKE", Executor.STAKING, spec.staking_venue, amount_eth=amount, lst=spec.lst)
    elif spec.name == "eth_leveraged":
        if spec.leverage == "sequential":
            _add_sequential_entry(add, spec, amount, price)
        else:
            add("ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3", equity_eth=amount,
                supply_eth=d.aave_collateral, borrow_eth=d.aave_debt, lst=spec.lst)
    else:
        spot_venue = spec.spot_venue or "binance"
        # A deposit arrives in the wallet: nothing on the venues is netted against it (their USDT is margin).
        d, moves = _funded_entry(spec, view, amount, spot_venue) if net_venues else \
            (d, _venue_moves(spec, {}, _wanted_usdt(d, spot_venue, _long_leg(spec, d) * price))[0])
        long_eth = _long_leg(spec, d)
        for action, venue, usd in moves:
            add(action, Executor.WALLET, venue, amount_usd=usd)
        add("BUY_SPOT", Executor.CEX, spot_venue, amount=long_eth, asset=spec.asset)
        for venue, size in sorted(d.shorts.items()):
            add("OPEN_PERP_SHORT", Executor.CEX, venue, amount=-size, asset=spec.asset)
        if spec.staking:
            add("WITHDRAW_TO_WALLET", Executor.CEX, spot_venue, amount_eth=long_eth)
            if spec.borrowing and spec.leverage == "sequential":
                _add_sequential_entry(add, spec, long_eth, price)
            elif spec.borrowing:
                # Sized from exactly what was bought (lot-rounded), so the flash loan balances to the wei.
                lev = atomic_entry(long_eth, spec.target_ltv)
                add("ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3", equity_eth=long_eth,
                    supply_eth=lev.supplied, borrow_eth=lev.borrowed, lst=spec.lst)
            else:
                add("STAKE", Executor.STAKING, spec.staking_venue, amount_eth=long_eth, lst=spec.lst)
    return [Instruction(0, "ENTRY", spec.name, amount if spec.share_class == "USDT" else amount * price,
                        tuple(steps), False, "entry")]


def _deployable(spec: ModeSpec, view: StrategyView, amount: Decimal) -> Decimal:
    """What of the book's `amount` an initial setup deploys: all of it less the wallet's gas money. (A deposit is
    capital beside the book, whose gas money is already held.)"""
    if spec.share_class == "ETH":
        # An ETH share class pays gas from wallet ETH and cannot go into gas debt: keep the reserve back.
        return max(ZERO, amount - spec.gas_reserve)
    if spec.share_class == "USDT" and spec.asset == "ETH" and view.wallet_asset > 0:
        # A USDT class deploys USDT: ETH in the wallet is gas money (a real wallet must hold some; a simulated one
        # runs a gas debt instead), never USDT the entry could move to a venue.
        return max(ZERO, amount - view.wallet_asset * view.price_usd)
    return amount


def _long_leg(spec: ModeSpec, d: DesiredState) -> Decimal:
    """The asset the entry buys spot: the basis modes' spot leg, or what the shorts hedge (lot-rounded)."""
    return d.spot if spec.name.endswith("_basis") else sum((-s for s in d.shorts.values()), ZERO)


def _wanted_usdt(d: DesiredState, spot_venue: str, spot_usd: Decimal) -> dict[str, Decimal]:
    """USDT each venue must hold for the entry: its margin, and on the spot venue the price of the long leg."""
    wanted = {venue: d.margin_usd.get(venue, ZERO) for venue in d.shorts}
    wanted[spot_venue] = wanted.get(spot_venue, ZERO) + spot_usd
    return wanted


def _venue_moves(spec: ModeSpec, held: Mapping[str, Decimal], wanted: Mapping[str, Decimal]
                 ) -> tuple[list[tuple[str, str, Decimal]], Decimal]:
    """The USDT moves that make each venue hold what it wants, netted against what it holds, and the capital
    they leave unusable: withdrawal fees, and surpluses left in place because, after the venue's fee, they
    would be less than a minimum order (a withdrawal that does not cover its fee is refused). Surpluses come
    back to the wallet first, so that the transfers after them are funded."""
    moves: list[tuple[str, str, Decimal]] = []
    lost = ZERO
    for venue in sorted(held):
        surplus = held[venue] - wanted.get(venue, ZERO)
        if surplus <= 0:
            continue
        fee = spec.withdrawal_fees_usdt.get(venue, ZERO)
        if surplus - fee < spec.min_order_usd:
            lost += surplus  # stays on the venue as extra margin
        else:
            moves.append(("WITHDRAW_USDT_TO_WALLET", venue, surplus))
            lost += fee
    for venue in sorted(wanted):
        shortfall = wanted[venue] - held.get(venue, ZERO)
        if shortfall > 0:
            moves.append(("TRANSFER_USDT_TO_CEX", venue, shortfall))
    return moves, lost


def _funded_entry(spec: ModeSpec, view: StrategyView, amount: Decimal, spot_venue: str
                  ) -> tuple[DesiredState, list[tuple[str, str, Decimal]]]:
    """The entry's desired state and the USDT moves that fund it, from a book whose capital may sit partly on
    the venues already (after a flatten). What the moves lose (fees, surpluses too small to withdraw) is taken
    off the entry, or the last transfer would find the wallet short by it; iterated because a smaller entry
    can turn a surplus left in place into one worth withdrawing."""
    held = {venue: v.usdt for venue, v in view.venues.items()}
    if not spec.wallet_transfers:
        return _entry_in_place(spec, view, amount, spot_venue, held), []
    haircut = ZERO
    for _ in range(4):
        d = desired_state(spec, amount - haircut, view.price_usd)
        moves, lost = _venue_moves(spec, held, _wanted_usdt(d, spot_venue, _long_leg(spec, d) * view.price_usd))
        if lost <= haircut:
            break
        haircut = lost
    return d, moves


def _entry_in_place(spec: ModeSpec, view: StrategyView, amount: Decimal, spot_venue: str,
                    held: Mapping[str, Decimal]) -> DesiredState:
    """The largest entry each venue can fund from the USDT it holds, with no transfer between them: the mode's
    shape at `amount`, scaled by the scarcest venue's share (what the others hold beyond it stays as extra margin).
    Iterated because lot rounding can leave a venue a cent short of the scaled want."""
    scaled = amount
    d = desired_state(spec, scaled, view.price_usd)
    for _ in range(4):
        wanted = _wanted_usdt(d, spot_venue, _long_leg(spec, d) * view.price_usd)
        factor = min((held.get(venue, ZERO) / want for venue, want in wanted.items() if want > 0), default=ONE)
        if factor >= ONE:
            return d
        scaled = max(ZERO, scaled * factor)
        d = desired_state(spec, scaled, view.price_usd)
    return d


def _add_sequential_entry(add: Callable[..., None], spec: ModeSpec, equity_eth: Decimal, price: Decimal) -> None:
    """The loop without a flash loan (DOMAIN §3): the chain runs it round by round. The net ETH it leaves on AAVE
    is the equity, as the atomic entry's, so the hedge is the same; only the leverage (and the gas) differ."""
    add("SEQUENTIAL_LEVERAGE_ENTRY", Executor.AAVE, "aave_v3", equity_eth=equity_eth, target_ltv=spec.target_ltv,
        min_borrow_eth=spec.min_loop_usd / price, lst=spec.lst,
        max_iterations="" if spec.max_leverage_iterations is None else str(spec.max_leverage_iterations))


def _exit(spec: ModeSpec, view: StrategyView, fraction: Decimal) -> list[Instruction]:
    """Withdraw `fraction` of every leg (1 = unwind). Fast: atomic flash deleverage with a DEX swap; slow:
    protocol redemption and sequential repay/withdraw (DOMAIN §6)."""
    fraction = min(ONE, fraction)
    steps: list[Step] = []

    def add(action: str, executor: Executor, venue: str, **params: Decimal | str) -> None:
        steps.append(Step(len(steps) + 1, action, executor, venue, params))

    eth_freed = ZERO  # ETH value the on-chain legs turn into wallet ETH
    if view.aave_debt > 0:
        action, executor = ("ATOMIC_DELEVERAGE_AAVE", Executor.ATOMIC) \
            if spec.unwind == "fast" and spec.leverage == "atomic" else ("SEQUENTIAL_DELEVERAGE_AAVE", Executor.AAVE)
        add(action, executor, "aave_v3", fraction=fraction, repay_eth=view.aave_debt * fraction,
            withdraw_eth=view.aave_collateral * fraction, unwind_mode=spec.unwind)
        eth_freed += (view.aave_collateral - view.aave_debt) * fraction
    elif view.aave_collateral > 0:
        asset = spec.lst if spec.staking else ("USDT" if spec.share_class == "USDT" else "WETH")
        add("WITHDRAW", Executor.AAVE, "aave_v3", asset=asset, amount=view.aave_collateral * fraction)
        if asset == spec.lst:
            eth_freed += view.aave_collateral * fraction
    if view.wallet_lst > 0:
        action = "SWAP_LST_TO_ETH" if spec.unwind == "fast" else "REDEEM_LST"
        add(action, Executor.STAKING, spec.staking_venue, amount=view.wallet_lst * fraction, lst=spec.lst)
        eth_freed += view.wallet_lst * view.lst_rate * fraction
    if spec.share_class == "USDT" and eth_freed > 0:
        # A USDT share class holds no ETH once out: what the long leg frees is sold, as the shorts close.
        add("SWAP_ETH_TO_USDT", Executor.WALLET, "dex", amount_eth=eth_freed)
    for venue, v in sorted(view.venues.items()):
        if v.perp_size != 0:
            # The mode's own asset (btc_basis holds BTC perps and spot): without it execution trades ETH.
            add("REDUCE_PERP_SHORT" if v.perp_size < 0 else "REDUCE_PERP_LONG", Executor.CEX, venue,
                amount=_qty(abs(v.perp_size) * fraction, spec.lot(venue)), asset=spec.asset)
        spot = _qty(v.spot * fraction, spec.spot_lot_step)
        if spot > 0:  # below one lot it cannot be sold: dust (a margin top-up's ETH beyond the lots it sold)
            add("SELL_SPOT", Executor.CEX, venue, amount=spot, asset=spec.asset)
    kind = "UNWIND" if fraction == ONE else "WITHDRAWAL"
    return [Instruction(0, kind, spec.name, view.equity * fraction, tuple(steps), True, kind.lower())] if steps else []
