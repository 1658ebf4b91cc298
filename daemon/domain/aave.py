"""Pure AAVE v3 math: scaled balances, health factor, liquidation, leverage entry and deleverage sizing.

Everything is exact Decimal in the caller's context (the global context is never changed). Money is valued in ONE
unit before any ratio is taken (DOMAIN §8 #10): collateral A·L·o ETH against debt d·B ETH. Indexes are the on-chain
ray / 1e27 (e.g. 1.0362), never rebased to 1, and a supply is always divided by the index (DOMAIN §8 #11).
Sizing functions work in value terms (ETH); converting a value to weETH (÷ o) and to scaled units (÷ L) is the
caller's step, with `scaled_from_native`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext

ZERO = Decimal(0)
ONE = Decimal(1)
INFINITY = Decimal("Infinity")
BPS = Decimal(10_000)
RAY_EXPONENT = -27
# AAVE v3 LiquidationLogic: HF > 0.95 ⇒ 50 % of the debt may be repaid, HF ≤ 0.95 ⇒ 100 % (the comparison is strict).
CLOSE_FACTOR_HF_THRESHOLD = Decimal("0.95")
DEFAULT_CLOSE_FACTOR = Decimal("0.5")
MAX_CLOSE_FACTOR = ONE


def _non_negative(name: str, value: Decimal) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be ≥ 0, got {value}")


def _positive(name: str, value: Decimal) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _unit_interval(name: str, value: Decimal) -> None:
    """λ-like ratios live in [0, 1): at 1 the leverage 1/(1−λ) is infinite."""
    if not ZERO <= value < ONE:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


# --- scaled balances -----------------------------------------------------------------------------------------------


def index_from_ray(ray: int) -> Decimal:
    """An on-chain ray (1e27 fixed point) as a Decimal index, exactly (the string constructor never rounds)."""
    if isinstance(ray, bool) or not isinstance(ray, int):
        raise ValueError(f"ray must be an int, got {ray!r}")
    if ray <= 0:
        raise ValueError(f"ray must be > 0, got {ray}")
    return Decimal(f"{ray}e{RAY_EXPONENT}")


def scaled_from_native(amount: Decimal, index: Decimal) -> Decimal:
    """Supplying (or borrowing) `amount` at `index` stores amount / index: the scaled balance is what stays constant."""
    _non_negative("amount", amount)
    _positive("index", index)
    return amount / index


def native_from_scaled(scaled: Decimal, index: Decimal) -> Decimal:
    """What a scaled balance is worth at `index` (what `aToken.balanceOf` returns; `scaledBalanceOf` is the input)."""
    _non_negative("scaled", scaled)
    _positive("index", index)
    return scaled * index


# --- reserve parameters --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReserveParams:
    """LTV (max borrow), liquidation threshold and liquidation bonus, as fractions (0.93, not 9300 bps)."""

    ltv: Decimal
    liquidation_threshold: Decimal
    liquidation_bonus: Decimal

    def __post_init__(self) -> None:
        if not ZERO <= self.ltv < self.liquidation_threshold < ONE:
            raise ValueError(
                f"need 0 ≤ ltv < liquidation_threshold < 1, got ltv={self.ltv}, "
                f"liquidation_threshold={self.liquidation_threshold}"
            )
        _non_negative("liquidation_bonus", self.liquidation_bonus)
        # AAVE's PoolConfigurator rejects LT × (1 + bonus) > 1: a position just past LT must hold enough
        # collateral to pay the liquidator's bonus, so a liquidation at HF just below 1 improves HF.
        if self.liquidation_threshold * (ONE + self.liquidation_bonus) > ONE:
            raise ValueError(
                f"liquidation_threshold × (1 + liquidation_bonus) must be ≤ 1, got "
                f"{self.liquidation_threshold} × (1 + {self.liquidation_bonus})"
            )


# e-mode weETH/WETH, wstETH/WETH (DOMAIN §8 #12: use these for the LST loop; refresh from chain at start).
EMODE_ETH_CORRELATED = ReserveParams(Decimal("0.93"), Decimal("0.95"), Decimal("0.01"))
# The JSON's standard (non-e-mode) parameters; the mainnet CSV snapshot differs and is only a snapshot.
STANDARD = ReserveParams(Decimal("0.80"), Decimal("0.85"), Decimal("0.05"))


# --- valuation, HF, LTV --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AaveAccount:
    """What AAVE stores for one user: scaled aLST collateral A and scaled WETH variable debt d."""

    collateral_scaled: Decimal
    debt_scaled: Decimal

    def __post_init__(self) -> None:
        _non_negative("collateral_scaled", self.collateral_scaled)
        _non_negative("debt_scaled", self.debt_scaled)


@dataclass(frozen=True, slots=True)
class AccountValue:
    """Collateral and debt in the same unit (ETH), the only form in which HF and LTV mean anything."""

    collateral: Decimal
    debt: Decimal

    @property
    def equity(self) -> Decimal:
        return self.collateral - self.debt

    @property
    def ltv(self) -> Decimal:
        return loan_to_value(self.collateral, self.debt)

    def health_factor(self, liquidation_threshold: Decimal) -> Decimal:
        return health_factor(self.collateral, self.debt, liquidation_threshold)


def account_value(
    account: AaveAccount, liquidity_index: Decimal, borrow_index: Decimal, oracle_rate: Decimal
) -> AccountValue:
    """Collateral A·L·o ETH (o = ETH per 1 LST) and debt d·B ETH (WETH = ETH)."""
    _positive("oracle_rate", oracle_rate)
    collateral = native_from_scaled(account.collateral_scaled, liquidity_index) * oracle_rate
    debt = native_from_scaled(account.debt_scaled, borrow_index)
    return AccountValue(collateral, debt)


def health_factor(collateral_value: Decimal, debt_value: Decimal, liquidation_threshold: Decimal) -> Decimal:
    """LT × C / D (liquidatable below 1); Infinity with no debt, as on chain (type(uint256).max)."""
    _non_negative("collateral_value", collateral_value)
    _non_negative("debt_value", debt_value)
    if not ZERO < liquidation_threshold <= ONE:
        raise ValueError(f"liquidation_threshold must be in (0, 1], got {liquidation_threshold}")
    if debt_value == 0:
        return INFINITY
    return liquidation_threshold * collateral_value / debt_value


def loan_to_value(collateral_value: Decimal, debt_value: Decimal) -> Decimal:
    """D / C; 0 with no debt, Infinity for debt with no collateral. HF = LT / LTV."""
    _non_negative("collateral_value", collateral_value)
    _non_negative("debt_value", debt_value)
    if debt_value == 0:
        return ZERO
    if collateral_value == 0:
        return INFINITY
    return debt_value / collateral_value


def target_ltv(max_ltv: Decimal, max_stake_spread_move: Decimal) -> Decimal:
    """λ = max_ltv × (1 − spread): an oracle drop of `spread` moves LTV from λ up to max_ltv (DOMAIN §8 #2)."""
    _unit_interval("max_ltv", max_ltv)
    _unit_interval("max_stake_spread_move", max_stake_spread_move)
    return max_ltv * (ONE - max_stake_spread_move)


# --- liquidation ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiquidationResult:
    """One liquidation call, in value terms. A healthy position (HF ≥ 1) gives all zeros and hf_after = hf_before."""

    debt_repaid: Decimal
    collateral_seized: Decimal
    loss: Decimal  # seized − repaid = repaid × bonus: the user's equity lost to the liquidator
    close_factor: Decimal
    hf_before: Decimal
    hf_after: Decimal

    @property
    def liquidated(self) -> bool:
        return self.debt_repaid > 0


def close_factor(hf: Decimal) -> Decimal:
    """Share of the debt one liquidation may repay: 0 when healthy, 50 % for 0.95 < HF < 1, 100 % for HF ≤ 0.95."""
    if hf >= ONE:
        return ZERO
    return DEFAULT_CLOSE_FACTOR if hf > CLOSE_FACTOR_HF_THRESHOLD else MAX_CLOSE_FACTOR


def simulate_liquidation(collateral_value: Decimal, debt_value: Decimal, params: ReserveParams) -> LiquidationResult:
    """The largest single liquidation AAVE v3 allows (ADR-38, DOMAIN §3).

    The liquidator repays close_factor × D and receives repaid × (1 + bonus) of collateral; when the collateral
    cannot cover that, the repayment shrinks to C / (1 + bonus) and all collateral is seized, as on chain. Ignores
    the protocol's cut of the bonus (it changes who gets the bonus, not what the user loses).

    HF rises iff (1 + bonus) × D < C, i.e. LTV < 1 / (1 + bonus); a deeper position (possible after a price gap) is
    made worse by liquidation — the bad-debt spiral.
    """
    hf_before = health_factor(collateral_value, debt_value, params.liquidation_threshold)
    factor = close_factor(hf_before)
    if factor == 0:
        return LiquidationResult(ZERO, ZERO, ZERO, ZERO, hf_before, hf_before)
    gross = ONE + params.liquidation_bonus
    repaid = factor * debt_value
    seized = repaid * gross
    if seized >= collateral_value:  # capped: seize exactly everything, never a rounding ulp more
        seized = collateral_value
        repaid = min(collateral_value / gross, repaid)
    hf_after = health_factor(collateral_value - seized, debt_value - repaid, params.liquidation_threshold)
    return LiquidationResult(repaid, seized, seized - repaid, factor, hf_before, hf_after)


# --- atomic flash-loan entry ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AtomicEntry:
    """One transaction: flash F, stake E + F, supply it, borrow F + fee, repay the flash. Values in one unit."""

    equity: Decimal
    flash_loan: Decimal
    flash_fee: Decimal
    supplied: Decimal
    borrowed: Decimal

    @property
    def ltv(self) -> Decimal:
        return loan_to_value(self.supplied, self.borrowed)

    @property
    def leverage(self) -> Decimal:
        """Supplied / equity = 1/(1−λ) without a fee (not λ/(1−λ), DOMAIN §8 #4)."""
        return self.supplied / self.equity if self.equity else ZERO


def atomic_entry(equity: Decimal, target_ltv: Decimal, flash_fee_bps: Decimal = ZERO) -> AtomicEntry:
    """Size an atomic entry so that LTV after is λ and the borrow repays the flash exactly.

    Without a fee: F = λE/(1−λ), S = E + F = E/(1−λ), D = F. With fee φ the borrow must also cover the fee,
    D = F(1+φ), and D/S = λ gives F = λE/(1+φ−λ). A safety buffer is taken by lowering λ, never by borrowing
    less than the flash (the transaction would revert).
    """
    _non_negative("equity", equity)
    _unit_interval("target_ltv", target_ltv)
    _non_negative("flash_fee_bps", flash_fee_bps)
    phi = flash_fee_bps / BPS
    flash = target_ltv * equity / (ONE + phi - target_ltv)
    fee = flash * phi
    return AtomicEntry(equity, flash, fee, equity + flash, flash + fee)


# --- sequential loop -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopIteration:
    index: int  # 1-based
    supplied: Decimal
    borrowed: Decimal  # 0 on the final iteration


@dataclass(frozen=True, slots=True)
class SequentialLoop:
    iterations: tuple[LoopIteration, ...]
    total_supplied: Decimal
    total_borrowed: Decimal
    gas_paid: Decimal

    @property
    def supplies(self) -> int:
        return len(self.iterations)

    @property
    def borrows(self) -> int:
        return sum(1 for i in self.iterations if i.borrowed > 0)

    @property
    def ltv(self) -> Decimal:
        return loan_to_value(self.total_supplied, self.total_borrowed)


@dataclass(frozen=True, slots=True)
class LoopTotals:
    supplies: int  # n
    borrows: int  # n − 1
    total_supplied: Decimal
    total_borrowed: Decimal

    @property
    def ltv(self) -> Decimal:
        return loan_to_value(self.total_supplied, self.total_borrowed)


def _check_loop_args(equity: Decimal, lam: Decimal, min_size: Decimal, max_iterations: int | None) -> None:
    _non_negative("equity", equity)
    _unit_interval("target_ltv", lam)
    _non_negative("min_size", min_size)
    if max_iterations is None:
        if min_size <= 0:
            raise ValueError("min_size must be > 0 when max_iterations is None, or the loop never ends")
    elif isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 0:
        raise ValueError(f"max_iterations must be None or an int ≥ 0, got {max_iterations!r}")


def sequential_loop(
    equity: Decimal,
    target_ltv: Decimal,
    min_size: Decimal,
    max_iterations: int | None = None,
    gas_per_iteration: Decimal = ZERO,
) -> SequentialLoop:
    """Step by step: supply, then borrow λ × that and supply the borrow (less gas) in the next iteration.

    A borrow happens only if it is ≥ `min_size` (and > gas, so the next supply is positive); the iteration that
    does not borrow is the last. `max_iterations` caps the number of borrows: None = until below the minimum,
    0 = supply once with no borrow, N = at most N borrows (N + 1 supplies). Gas is in the same unit as equity and
    paid before each supply, so total_supplied − total_borrowed = equity − gas_paid.
    """
    _check_loop_args(equity, target_ltv, min_size, max_iterations)
    _non_negative("gas_per_iteration", gas_per_iteration)
    if equity < gas_per_iteration:
        raise ValueError(f"equity {equity} does not cover the first iteration's gas {gas_per_iteration}")
    iterations: list[LoopIteration] = []
    supply = equity - gas_per_iteration
    while True:
        k = len(iterations) + 1
        borrow = target_ltv * supply
        allowed = max_iterations is None or k <= max_iterations
        if not (allowed and borrow > 0 and borrow >= min_size and borrow > gas_per_iteration):
            iterations.append(LoopIteration(k, supply, ZERO))
            break
        iterations.append(LoopIteration(k, supply, borrow))
        supply = borrow - gas_per_iteration
    return SequentialLoop(
        tuple(iterations),
        sum((i.supplied for i in iterations), ZERO),
        sum((i.borrowed for i in iterations), ZERO),
        gas_per_iteration * len(iterations),
    )


def loop_borrow_count(
    equity: Decimal, target_ltv: Decimal, min_size: Decimal, max_iterations: int | None = None
) -> int:
    """n − 1 = the largest k with E·λ^k ≥ m (each borrow E·λ^k is smaller than the last), capped by max_iterations.

    DOMAIN's n = 1 + ⌊ln(m/E)/ln λ⌋ is the estimate; it must be clamped to n ≥ 1 (E·λ < m gives no borrow at all,
    and for E < m the formula goes to 0 or below), and it is corrected here against the exact comparison so that a
    borrow of exactly m counts, whatever the rounding of the logarithms.
    """
    _check_loop_args(equity, target_ltv, min_size, max_iterations)
    lam = target_ltv
    if equity == 0 or lam == 0:
        return 0
    cap = max_iterations
    if min_size == 0 and cap is not None:  # _check_loop_args refuses min_size 0 without a cap
        return cap

    def fits(k: int) -> bool:
        return equity * lam**k >= min_size

    if not fits(1):
        return 0
    with localcontext() as ctx:
        ctx.prec += 20
        estimate = int(((min_size / equity).ln() / lam.ln()).to_integral_value(rounding=ROUND_FLOOR))
    k = max(1, estimate if cap is None else min(estimate, cap + 1))
    while fits(k + 1) and (cap is None or k < cap):
        k += 1
    while k > 1 and not fits(k):
        k -= 1
    return k if cap is None else min(k, cap)


def sequential_loop_totals(
    equity: Decimal, target_ltv: Decimal, min_size: Decimal, max_iterations: int | None = None
) -> LoopTotals:
    """Closed form of `sequential_loop` without gas: C = E(1−λⁿ)/(1−λ), D = λE(1−λ^(n−1))/(1−λ).

    E = 50k, λ = 0.93, m = 10k: n = 23, C/E = 11.594, LTV 0.9137; λ = 0.9094: n = 17, C/E = 8.841, LTV 0.8869
    (as DOMAIN §3 publishes). A sequential loop always undershoots the atomic 1/(1−λ).
    """
    borrows = loop_borrow_count(equity, target_ltv, min_size, max_iterations)
    n = borrows + 1
    lam = target_ltv
    total_supplied = equity * (ONE - lam**n) / (ONE - lam)
    total_borrowed = lam * equity * (ONE - lam**borrows) / (ONE - lam)
    return LoopTotals(n, borrows, total_supplied, total_borrowed)


# --- deleverage ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deleverage:
    """Repay `repaid` of debt and withdraw `withdrawn` of collateral value in one transaction."""

    repaid: Decimal
    withdrawn: Decimal

    @property
    def freed_equity(self) -> Decimal:
        return self.withdrawn - self.repaid


def partial_deleverage(collateral_value: Decimal, debt_value: Decimal, fraction: Decimal) -> Deleverage:
    """Shrink the position by `fraction` p at constant LTV: R = p·D, W = R/λ = p·C, freed = R(1−λ)/λ = p·(C − D).

    W is computed as p·C, which equals R/λ_current exactly in real numbers and also works with no debt.
    """
    _non_negative("collateral_value", collateral_value)
    _non_negative("debt_value", debt_value)
    if not ZERO <= fraction <= ONE:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if debt_value > collateral_value:
        raise ValueError(f"debt {debt_value} exceeds collateral {collateral_value}: no equity to free")
    return Deleverage(fraction * debt_value, fraction * collateral_value)


def repay_to_target_ltv(collateral_value: Decimal, debt_value: Decimal, target: Decimal) -> Decimal:
    """R to repay with R of withdrawn collateral (flash deleverage) so that (D−R)/(C−R) = t: R = (D − t·C)/(1 − t).

    0 when LTV is already ≤ t. Needs C ≥ D: an underwater position cannot be deleveraged with its own collateral.
    """
    _non_negative("collateral_value", collateral_value)
    _non_negative("debt_value", debt_value)
    _unit_interval("target", target)
    if debt_value > collateral_value:
        raise ValueError(f"debt {debt_value} exceeds collateral {collateral_value}: cannot reach LTV {target}")
    excess = debt_value - target * collateral_value
    if excess <= 0:
        return ZERO
    return excess / (ONE - target)
