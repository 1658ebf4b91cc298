from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from daemon.domain.aave import (
    EMODE_ETH_CORRELATED,
    INFINITY,
    STANDARD,
    AaveAccount,
    AccountValue,
    ReserveParams,
    account_value,
    atomic_entry,
    close_factor,
    health_factor,
    index_from_ray,
    loan_to_value,
    loop_borrow_count,
    native_from_scaled,
    partial_deleverage,
    repay_to_target_ltv,
    scaled_from_native,
    sequential_loop,
    sequential_loop_totals,
    simulate_liquidation,
    target_ltv,
)

D = Decimal
CENT = D("0.01")
TIGHT = D("1e-20")


def close(a: Decimal, b: Decimal, rel: Decimal = TIGHT) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), D(1))


money = st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2)
index = st.decimals(min_value=D("0.5"), max_value=D("5"), places=6)
lam = st.decimals(min_value=D("0.1"), max_value=D("0.95"), places=4)
unit = st.decimals(min_value=D("0"), max_value=D("0.99"), places=4)


@st.composite
def reserve_params(draw: st.DrawFn) -> ReserveParams:
    lt = draw(st.decimals(min_value=D("0.5"), max_value=D("0.97"), places=3))
    bonus = draw(st.decimals(min_value=D("0"), max_value=D("0.10"), places=4))
    assume(lt * (1 + bonus) <= 1)
    return ReserveParams(lt - D("0.01"), lt, bonus)


# --- scaled balances (DOMAIN §3, §8 #11) ---------------------------------------------------------------------------


def test_seed_scaled_balance_example() -> None:
    scaled = scaled_from_native(D(100), D("1.05"))
    assert scaled.quantize(CENT) == D("95.24")
    assert native_from_scaled(scaled, D("1.08")).quantize(CENT) == D("102.86")
    assert native_from_scaled(scaled, D("1.10")).quantize(CENT) == D("104.76")


def test_scaled_balance_is_not_minted_one_to_one() -> None:
    """The analyzer minted aTokens 1:1 ignoring the index (DOMAIN §8 #11); the index must divide the supply."""
    assert scaled_from_native(D(100), D("1.05")) != D(100)
    assert native_from_scaled(scaled_from_native(D(100), D("1.05")), D("1.05")) == D(100)


def test_index_from_ray_is_exact_and_not_rebased() -> None:
    assert index_from_ray(1_036_200_000_000_000_000_000_000_000) == D("1.0362")
    assert index_from_ray(10**27) == 1
    big = 12_345_678_901_234_567_890_123_456_789_012  # 32 digits: more than the context's 28, still exact
    assert index_from_ray(big) == D("12345.678901234567890123456789012")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="ray"):
            index_from_ray(bad)


def test_invalid_balances_and_indexes_are_refused() -> None:
    with pytest.raises(ValueError, match="index"):
        scaled_from_native(D(1), D(0))
    with pytest.raises(ValueError, match="index"):
        native_from_scaled(D(1), D("-1.05"))
    with pytest.raises(ValueError, match="amount"):
        scaled_from_native(D(-1), D("1.05"))
    with pytest.raises(ValueError, match="debt_scaled"):
        AaveAccount(D(1), D(-1))


@given(money, index, index)
@settings(max_examples=200)
def test_scaled_native_scaled_round_trip(amount: Decimal, supply_index: Decimal, later_index: Decimal) -> None:
    scaled = scaled_from_native(amount, supply_index)
    assert close(native_from_scaled(scaled, supply_index), amount, D("1e-25"))
    assert close(scaled_from_native(native_from_scaled(scaled, later_index), later_index), scaled, D("1e-25"))


# --- parameters, HF, LTV -------------------------------------------------------------------------------------------


def test_reserve_params() -> None:
    def fields(p: ReserveParams) -> tuple[Decimal, Decimal, Decimal]:
        return p.ltv, p.liquidation_threshold, p.liquidation_bonus

    assert fields(EMODE_ETH_CORRELATED) == (D("0.93"), D("0.95"), D("0.01"))
    assert fields(STANDARD) == (D("0.80"), D("0.85"), D("0.05"))
    for ltv, lt in ((D("0.95"), D("0.95")), (D("0.96"), D("0.95")), (D("0.9"), D(1)), (D(-1), D("0.5"))):
        with pytest.raises(ValueError, match="ltv < liquidation_threshold < 1"):
            ReserveParams(ltv, lt, D("0.01"))
    with pytest.raises(ValueError, match="liquidation_bonus"):
        ReserveParams(D("0.93"), D("0.95"), D("0.06"))  # 0.95 × 1.06 > 1: AAVE's configurator refuses it
    with pytest.raises(ValueError, match="liquidation_bonus"):
        ReserveParams(D("0.93"), D("0.95"), D("-0.01"))


def test_target_ltv() -> None:
    """DOMAIN §8 #2: one knob, λ = max_ltv × (1 − spread)."""
    assert target_ltv(D("0.93"), D("0.0225")) == D("0.909075")
    assert target_ltv(D("0.93"), D("0.02215")) == D("0.9094005")
    with pytest.raises(ValueError, match="max_stake_spread_move"):
        target_ltv(D("0.93"), D(1))
    with pytest.raises(ValueError, match="max_ltv"):
        target_ltv(D("1.2"), D("0.02"))


def test_health_factor_examples() -> None:
    assert health_factor(D(1), D("0.9094"), D("0.95")).quantize(D("0.0001")) == D("1.0446")
    assert health_factor(D(1), D("0.93"), D("0.95")).quantize(D("0.0001")) == D("1.0215")
    # DOMAIN §8 #28: the math utility printed 1.96; LT × C / D is 1.417.
    assert health_factor(D(100_000), D(60_000), D("0.85")).quantize(D("0.001")) == D("1.417")
    assert health_factor(D(100), D(0), D("0.95")) == INFINITY
    assert loan_to_value(D(100), D(0)) == 0
    assert loan_to_value(D(0), D(1)) == INFINITY
    with pytest.raises(ValueError, match="liquidation_threshold"):
        health_factor(D(1), D(1), D(0))
    with pytest.raises(ValueError, match="debt_value"):
        health_factor(D(1), D(-1), D("0.95"))


def test_account_value_converts_collateral_to_eth_before_hf() -> None:
    """DOMAIN §8 #10: collateral A·L·o in ETH against debt d·B in ETH, never weETH against WETH."""
    account = AaveAccount(collateral_scaled=scaled_from_native(D(100), D("1.05")), debt_scaled=D(90))
    value = account_value(account, liquidity_index=D("1.05"), borrow_index=D("1.02"), oracle_rate=D("1.06"))
    assert value.collateral.quantize(CENT) == D("106.00")
    assert value.debt == D("91.8")
    assert value.ltv == value.debt / value.collateral
    assert value.health_factor(D("0.95")) == D("0.95") * value.collateral / value.debt
    weeth_against_weth = health_factor(D(100), D("91.8"), D("0.95"))  # the AAVE doc's unit mix-up
    assert value.health_factor(D("0.95")) > weeth_against_weth
    with pytest.raises(ValueError, match="oracle_rate"):
        account_value(account, D(1), D(1), D(0))


@given(money, money, st.decimals(min_value=D("0.5"), max_value=D("0.97"), places=3))
@settings(max_examples=200)
def test_hf_times_ltv_is_lt(collateral: Decimal, debt: Decimal, lt: Decimal) -> None:
    hf = health_factor(collateral, debt, lt)
    assert close(hf * loan_to_value(collateral, debt), lt, D("1e-25"))
    assert close(hf, lt / AccountValue(collateral, debt).ltv, D("1e-25"))


# --- liquidation ---------------------------------------------------------------------------------------------------


def test_liquidation_example_half_close_factor() -> None:
    """ADR-38: 100 WETH repaid → 101 WETH of weETH seized at the e-mode bonus of 1 %; the user loses 1."""
    result = simulate_liquidation(D(205), D(200), EMODE_ETH_CORRELATED)
    assert result.hf_before == D("0.97375")
    assert result.close_factor == D("0.5")
    assert (result.debt_repaid, result.collateral_seized, result.loss) == (D(100), D(101), D(1))
    assert result.hf_after == D("0.95") * D(104) / D(100)
    assert result.hf_after > result.hf_before
    assert result.liquidated


def test_full_close_factor_below_hf_095() -> None:
    result = simulate_liquidation(D(100), D(92), STANDARD)  # HF = 0.85 × 100 / 92 = 0.924
    assert result.hf_before < D("0.95")
    assert result.close_factor == 1
    assert (result.debt_repaid, result.collateral_seized, result.loss) == (D(92), D("96.6"), D("4.6"))
    assert result.hf_after == INFINITY
    assert close_factor(D("0.9499")) == 1
    assert close_factor(D("0.95")) == 1  # on chain the 50 % factor needs HF > 0.95, strictly
    assert close_factor(D("0.9501")) == D("0.5")
    assert close_factor(D(1)) == 0


def test_underwater_liquidation_seizes_everything_and_leaves_bad_debt() -> None:
    """In e-mode HF < 0.95 means LTV > 1: the cap applies and HF gets worse, not better."""
    result = simulate_liquidation(D(99), D(100), EMODE_ETH_CORRELATED)
    assert result.close_factor == 1
    assert result.collateral_seized == D(99)
    assert result.debt_repaid == D(99) / D("1.01")
    assert result.hf_after == 0 < result.hf_before


def test_healthy_position_is_not_liquidated() -> None:
    result = simulate_liquidation(D(100), D(90), EMODE_ETH_CORRELATED)
    assert not result.liquidated
    assert (result.debt_repaid, result.collateral_seized, result.loss, result.close_factor) == (D(0), D(0), D(0), D(0))
    assert result.hf_after == result.hf_before == D("0.95") * D(100) / D(90)
    assert simulate_liquidation(D(100), D(0), STANDARD).hf_after == INFINITY


@given(money, money, reserve_params())
@settings(max_examples=200)
def test_liquidation_properties(collateral: Decimal, debt: Decimal, params: ReserveParams) -> None:
    result = simulate_liquidation(collateral, debt, params)
    if result.hf_before >= 1:
        assert not result.liquidated and result.hf_after == result.hf_before
        return
    assert result.close_factor == (D("0.5") if result.hf_before > D("0.95") else D(1))
    assert 0 <= result.debt_repaid <= result.close_factor * debt
    assert result.collateral_seized <= collateral
    assert result.loss == result.collateral_seized - result.debt_repaid >= 0
    # Equal up to Decimal rounding of the repayment (28 digits): a few units in the last place of the collateral.
    assert abs(result.loss - result.debt_repaid * params.liquidation_bonus) <= D("1e-26") * collateral
    gross_debt = (1 + params.liquidation_bonus) * debt
    assume(abs(collateral - gross_debt) > D("1e-12") * collateral)  # away from the exact break-even
    if gross_debt < collateral:  # LTV < 1/(1 + bonus): the liquidation restores health
        assert result.hf_after > result.hf_before
    else:  # deeper than the bonus can pay: liquidation makes it worse
        assert result.hf_after <= result.hf_before


@given(reserve_params(), st.decimals(min_value=D("0.0001"), max_value=D("0.05"), places=4))
@settings(max_examples=200)
def test_liquidation_just_below_hf_one_always_helps(params: ReserveParams, drop: Decimal) -> None:
    """LT × (1 + bonus) ≤ 1 (enforced by ReserveParams, as by AAVE) ⇒ a position just past LT gets healthier."""
    debt = D(1000)
    collateral = debt / params.liquidation_threshold * (1 - drop)
    assume((1 + params.liquidation_bonus) * debt < collateral)
    result = simulate_liquidation(collateral, debt, params)
    assert result.liquidated and result.hf_after > result.hf_before


# --- atomic entry (DOMAIN §3, §8 #4) -------------------------------------------------------------------------------


def test_atomic_entry_reaches_lambda_not_strategy_modes_leverage() -> None:
    """STRATEGY_MODES' lev = λ/(1−λ), supply E·lev, debt E·(lev−1) gives LTV 0.889 at λ = 0.9; the entry must hit λ."""
    entry = atomic_entry(D(100), D("0.9"))
    assert (entry.flash_loan, entry.supplied, entry.borrowed) == (D(900), D(1000), D(900))
    assert entry.ltv == D("0.9")
    assert entry.leverage == 10
    wrong_leverage = D("0.9") / (1 - D("0.9"))  # 9×
    assert entry.ltv != loan_to_value(100 * wrong_leverage, 100 * (wrong_leverage - 1))


def test_atomic_entry_at_target_and_through_the_index() -> None:
    lam_ = target_ltv(D("0.93"), D("0.02215"))
    entry = atomic_entry(D(50), lam_)
    oracle, liquidity, borrow = D("1.0550"), D("1.0003"), D("1.0271")
    account = AaveAccount(
        scaled_from_native(entry.supplied / oracle, liquidity), scaled_from_native(entry.borrowed, borrow)
    )
    value = account_value(account, liquidity, borrow, oracle)
    assert close(value.ltv, lam_)
    assert close(value.health_factor(D("0.95")), D("0.95") / lam_)
    with pytest.raises(ValueError, match="target_ltv"):
        atomic_entry(D(50), D(1))
    with pytest.raises(ValueError, match="equity"):
        atomic_entry(D(-50), D("0.9"))


@given(money, lam, st.decimals(min_value=D(0), max_value=D(50), places=2))
@settings(max_examples=200)
def test_atomic_entry_properties(equity: Decimal, lam_: Decimal, fee_bps: Decimal) -> None:
    plain = atomic_entry(equity, lam_)
    assert plain.borrowed == plain.flash_loan
    assert plain.supplied == equity + plain.flash_loan
    assert close(plain.ltv, lam_)
    assert close(plain.supplied, equity / (1 - lam_))
    with_fee = atomic_entry(equity, lam_, fee_bps)
    assert with_fee.borrowed == with_fee.flash_loan + with_fee.flash_fee  # the borrow repays flash + fee
    assert close(with_fee.flash_fee, with_fee.flash_loan * fee_bps / 10_000)
    assert close(with_fee.ltv, lam_)


# --- sequential loop (DOMAIN §3) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lam_", "supplies", "c_over_e", "ltv"),
    [(D("0.93"), 23, D("11.59"), D("0.9137")), (D("0.9094"), 17, D("8.84"), D("0.8869"))],
)
def test_published_sequential_loop_figures(lam_: Decimal, supplies: int, c_over_e: Decimal, ltv: Decimal) -> None:
    equity, minimum = D(50_000), D(10_000)
    loop = sequential_loop(equity, lam_, minimum)
    totals = sequential_loop_totals(equity, lam_, minimum)
    for result in (loop, totals):
        assert (result.supplies, result.borrows) == (supplies, supplies - 1)
        assert (result.total_supplied / equity).quantize(CENT) == c_over_e
        assert result.ltv.quantize(ltv) == ltv
    assert loop.ltv < lam_  # a sequential loop undershoots
    assert loop.iterations[-1].borrowed == 0
    assert all(i.borrowed >= minimum for i in loop.iterations[:-1])
    assert lam_ * loop.iterations[-1].supplied < minimum


def test_sequential_loop_iteration_caps() -> None:
    once = sequential_loop(D(50_000), D("0.93"), D(10_000), max_iterations=0)
    assert [(i.supplied, i.borrowed) for i in once.iterations] == [(D(50_000), D(0))]
    capped = sequential_loop(D(50_000), D("0.93"), D(10_000), max_iterations=3)
    assert (capped.supplies, capped.borrows) == (4, 3)
    assert capped.iterations[1].supplied == D(46_500)
    assert sequential_loop_totals(D(50_000), D("0.93"), D(10_000), max_iterations=3).borrows == 3
    small = sequential_loop(D(5_000), D("0.93"), D(10_000))  # E < m: DOMAIN's formula gives n ≤ 0, the loop 1
    assert (small.supplies, sequential_loop_totals(D(5_000), D("0.93"), D(10_000)).supplies) == (1, 1)
    exact = sequential_loop(D(40_000), D("0.5"), D(10_000))  # 20k, 10k: a borrow of exactly m is taken
    assert [i.borrowed for i in exact.iterations] == [D(20_000), D(10_000), D(0)]
    assert loop_borrow_count(D(40_000), D("0.5"), D(10_000)) == 2
    assert sequential_loop_totals(D(40_000), D("0.5"), D(0), max_iterations=5).borrows == 5
    with pytest.raises(ValueError, match="min_size"):
        sequential_loop(D(1), D("0.5"), D(0))
    with pytest.raises(ValueError, match="max_iterations"):
        sequential_loop(D(1), D("0.5"), D(1), max_iterations=-1)


def test_sequential_loop_with_gas() -> None:
    loop = sequential_loop(D(50_000), D("0.93"), D(10_000), gas_per_iteration=D(5))
    assert loop.iterations[0].supplied == D(49_995)
    assert loop.iterations[1].supplied == D("0.93") * D(49_995) - 5
    assert loop.gas_paid == 5 * loop.supplies
    assert loop.total_supplied - loop.total_borrowed == D(50_000) - loop.gas_paid
    with pytest.raises(ValueError, match="gas"):
        sequential_loop(D(4), D("0.93"), D(1), gas_per_iteration=D(5))


@given(money, lam, money, st.one_of(st.none(), st.integers(min_value=0, max_value=40)))
@settings(max_examples=200)
def test_sequential_closed_form_matches_loop(
    equity: Decimal, lam_: Decimal, minimum: Decimal, cap: int | None
) -> None:
    loop = sequential_loop(equity, lam_, minimum, cap)
    totals = sequential_loop_totals(equity, lam_, minimum, cap)
    assert (loop.supplies, loop.borrows) == (totals.supplies, totals.borrows)
    assert close(loop.total_supplied, totals.total_supplied)
    assert close(loop.total_borrowed, totals.total_borrowed)
    assert close(loop.total_supplied - loop.total_borrowed, equity)
    assert loop.ltv <= lam_


@given(money, lam, money, st.decimals(min_value=D(0), max_value=D(100), places=2))
@settings(max_examples=200)
def test_sequential_loop_with_gas_conserves_equity(
    equity: Decimal, lam_: Decimal, minimum: Decimal, gas: Decimal
) -> None:
    assume(equity >= gas)
    loop = sequential_loop(equity, lam_, minimum, gas_per_iteration=gas)
    assert close(loop.total_supplied - loop.total_borrowed, equity - loop.gas_paid)
    assert all(i.supplied >= 0 for i in loop.iterations)
    assert all(i.borrowed >= minimum for i in loop.iterations[:-1])


# --- deleverage ----------------------------------------------------------------------------------------------------


def test_partial_deleverage_example() -> None:
    result = partial_deleverage(D(1000), D(900), D("0.2"))
    assert (result.repaid, result.withdrawn, result.freed_equity) == (D(180), D(200), D(20))
    assert result.withdrawn == result.repaid / D("0.9")
    with pytest.raises(ValueError, match="fraction"):
        partial_deleverage(D(1000), D(900), D("1.1"))
    with pytest.raises(ValueError, match="exceeds"):
        partial_deleverage(D(900), D(1000), D("0.5"))


@given(money, money, st.decimals(min_value=D(0), max_value=D("0.99"), places=4))
@settings(max_examples=200)
def test_partial_deleverage_keeps_ltv_and_frees_p_equity(a: Decimal, b: Decimal, p: Decimal) -> None:
    collateral, debt = max(a, b), min(a, b)
    result = partial_deleverage(collateral, debt, p)
    assert result.repaid == p * debt
    assert close(result.withdrawn, result.repaid / (debt / collateral))
    assert close(loan_to_value(collateral - result.withdrawn, debt - result.repaid), debt / collateral)
    assert close(result.freed_equity, p * (collateral - debt))
    assert close(result.freed_equity, result.repaid * (1 - debt / collateral) / (debt / collateral))


def test_repay_to_target_ltv_example() -> None:
    repay = repay_to_target_ltv(D(1000), D(930), D("0.9"))  # (930 − 900) / 0.1
    assert repay == D(300)
    assert loan_to_value(D(1000) - repay, D(930) - repay) == D("0.9")
    assert repay_to_target_ltv(D(1000), D(800), D("0.9")) == 0
    assert repay_to_target_ltv(D(1000), D(800), D(0)) == D(800)
    with pytest.raises(ValueError, match="exceeds"):
        repay_to_target_ltv(D(900), D(1000), D("0.9"))


@given(money, money, unit)
@settings(max_examples=200)
def test_repay_to_target_ltv_reaches_target(a: Decimal, b: Decimal, t: Decimal) -> None:
    assume(a != b)
    collateral, debt = max(a, b), min(a, b)
    repay = repay_to_target_ltv(collateral, debt, t)
    if debt / collateral <= t:
        assert repay == 0
        return
    assert 0 < repay <= debt
    assert close(loan_to_value(collateral - repay, debt - repay), t, D("1e-15"))
