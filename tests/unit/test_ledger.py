from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.ledger import (
    WALLET,
    ChangeSet,
    KingVault,
    Ledger,
    LedgerError,
    PerpChange,
    Reason,
    TokenChange,
    king_unwrap,
    king_unwrap_due,
)

D = Decimal
VENUES = ("binance", "bybit", "okx")


def funded(gas_debt: bool = False) -> Ledger:
    ledger = Ledger(VENUES, gas_debt_allowed=gas_debt)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(100_000)),)))
    return ledger


def test_supplying_100_weeth_at_index_1_05_stores_the_scaled_balance() -> None:
    ledger = Ledger(VENUES)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "weETH", D(100)),)))
    index_at_supply = D("1.05")
    scaled = D(100) / index_at_supply
    ledger.apply(ChangeSet(Reason.COLLATERAL_SUPPLIED, 1, (
        TokenChange(WALLET, "weETH", D(-100)), TokenChange(WALLET, "aWeETH", scaled))))
    assert round(ledger.balance(WALLET, "aWeETH"), 2) == D("95.24")  # not 100: aTokens are scaled
    assert round(ledger.balance(WALLET, "aWeETH") * D("1.08"), 2) == D("102.86")  # claimable grows with the index
    assert ledger.balance(WALLET, "weETH") == 0


def test_token_and_derivative_changes_of_one_set_land_together_or_not_at_all() -> None:
    ledger = funded()
    ledger.apply(ChangeSet(Reason.VENUE_TRANSFER, 1, (
        TokenChange(WALLET, "USDT", D(-20_000)), TokenChange("binance", "USDT", D(20_000)))))
    fill = ChangeSet(Reason.TRADE_EXECUTED, 2, (TokenChange("binance", "USDT", D("-1.5")),),
                     (PerpChange("binance", "ETHUSDT", D(-5), D(3000)),), ref="i1-1")
    applied = ledger.apply(fill)
    assert ledger.perp("binance", "ETHUSDT").quantity == D(-5)
    assert ledger.balance("binance", "USDT") == D("19998.5")
    assert applied.sequence == 3 and ledger.history[-1].change is fill

    before = ledger.snapshot()
    bad = ChangeSet(Reason.TRADE_EXECUTED, 3, (TokenChange("binance", "USDT", D(-1)),),
                    (PerpChange("binance", "ETHUSDT", D(5), D(2900)), PerpChange("kraken", "ETHUSDT", D(-5), D(1))))
    with pytest.raises(LedgerError, match="kraken"):
        ledger.apply(bad)
    assert ledger.snapshot() == before  # neither the fee nor the binance leg was applied


def test_a_perp_reduction_realizes_pnl_into_the_venues_usdt() -> None:
    ledger = Ledger(VENUES)
    ledger.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("okx", "USDT", D(10_000)),)))
    ledger.apply(ChangeSet(Reason.TRADE_EXECUTED, 1, perps=(PerpChange("okx", "ETHUSDT", D(-2), D(3000)),)))
    applied = ledger.apply(ChangeSet(Reason.TRADE_EXECUTED, 2, perps=(PerpChange("okx", "ETHUSDT", D(1), D(2900)),)))
    assert applied.realized_pnl == (("okx:ETHUSDT", D(100)),)
    assert ledger.balance("okx", "USDT") == D(10_100)
    holding = ledger.snapshot().perps[0]
    assert (holding.quantity, holding.entry_price, holding.realized_pnl) == (D(-1), D(3000), D(100))


def test_only_usdt_share_class_gas_debt_may_go_negative() -> None:
    gas = ChangeSet(Reason.GAS_FEE_PAID, 1, (TokenChange(WALLET, "ETH", D("-0.004")),))
    with pytest.raises(LedgerError, match=r"wallet:ETH would be -0\.004"):
        funded(gas_debt=False).apply(gas)
    ledger = funded(gas_debt=True)
    ledger.apply(gas)
    assert ledger.balance(WALLET, "ETH") == D("-0.004")
    with pytest.raises(LedgerError, match="wallet:USDT"):
        ledger.apply(ChangeSet(Reason.WITHDRAWAL, 2, (TokenChange(WALLET, "USDT", D(-100_001)),)))


def test_unknown_tokens_and_accounts_are_refused() -> None:
    ledger = funded()
    for change, match in [
        (TokenChange(WALLET, "DOGE", D(1)), "unknown wallet token"),
        (TokenChange("binance", "weETH", D(1)), "unknown asset"),
        (TokenChange("kraken", "USDT", D(1)), "unknown account"),
    ]:
        with pytest.raises(LedgerError, match=match):
            ledger.apply(ChangeSet(Reason.DEPOSIT, 1, (change,)))


def test_king_unwraps_into_eigen_and_ethfi_by_the_vaults_usd_composition() -> None:
    vault = KingVault(eigen=D(10), ethfi=D(10), shares=D(10))
    assert vault.per_king() == (D(1), D(1))
    vault = vault.deposit(eigen=D(10), ethfi=D(0), eigen_usd=D(2), ethfi_usd=D(2))  # 5 new shares at $2/share
    eigen, ethfi = vault.per_king()
    assert (round(eigen, 2), round(ethfi, 2)) == (D("1.33"), D("0.67"))
    ledger = Ledger(VENUES)
    ledger.apply(ChangeSet(Reason.KING_REWARD_DISTRIBUTION, 0, (TokenChange(WALLET, "KING", D(3)),)))
    ledger.apply(king_unwrap(D(3), eigen, ethfi, ts_ns=1))
    assert ledger.balance(WALLET, "KING") == 0
    assert ledger.balance(WALLET, "EIGEN") == 3 * eigen and ledger.balance(WALLET, "ETHFI") == 3 * ethfi
    with pytest.raises(LedgerError):
        ledger.apply(king_unwrap(D(1), eigen, ethfi, ts_ns=2))  # no KING left: nothing changes


def test_king_is_unwrapped_only_above_both_the_floor_and_100x_gas() -> None:
    assert not king_unwrap_due(D(150), unwrap_gas_usd=D(5))  # 100 × $5 gas = $500: the floor alone would unwrap
    assert king_unwrap_due(D(501), unwrap_gas_usd=D(5))
    assert not king_unwrap_due(D(90), unwrap_gas_usd=D("0.2"))  # 100× gas = $20: gas alone would unwrap $90
    assert king_unwrap_due(D(101), unwrap_gas_usd=D("0.2"))


def test_history_is_bounded() -> None:
    ledger = Ledger(VENUES, history_limit=5)
    for i in range(20):
        ledger.apply(ChangeSet(Reason.DEPOSIT, i, (TokenChange(WALLET, "USDT", D(1)),)))
    assert len(ledger.history) == 5 and ledger.history[-1].sequence == 20


accounts = st.sampled_from([WALLET, *VENUES])
tokens = st.sampled_from(["USDT", "ETH", "BTC"])
amounts = st.decimals(min_value=D("-1000"), max_value=D("1000"), places=6)
token_change = st.builds(TokenChange, accounts, tokens, amounts)
perp_change = st.builds(PerpChange, st.sampled_from(VENUES), st.just("ETHUSDT"),
                        st.decimals(min_value=D("-3"), max_value=D("3"), places=3).filter(lambda q: q != 0),
                        st.decimals(min_value=D("1000"), max_value=D("5000"), places=2))
change_sets = st.builds(ChangeSet, st.just(Reason.TRADE_EXECUTED), st.integers(0, 10),
                        st.lists(token_change, max_size=4).map(tuple), st.lists(perp_change, max_size=2).map(tuple))


@given(st.lists(change_sets, max_size=40))
@settings(max_examples=150, deadline=None)
def test_ledger_conservation_over_random_change_sets(changes: list[ChangeSet]) -> None:
    """Balances equal the sum of the accepted deltas (plus realized perp P&L); refused sets change nothing."""
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    expected: dict[tuple[str, str], Decimal] = {}
    for change in changes:
        before = ledger.snapshot()
        try:
            applied = ledger.apply(change)
        except LedgerError:
            assert ledger.snapshot() == before
            continue
        for tc in change.tokens:
            expected[(tc.account, tc.token)] = expected.get((tc.account, tc.token), D(0)) + tc.delta
        for instrument, pnl in applied.realized_pnl:
            key = (instrument.split(":")[0], "USDT")
            expected[key] = expected.get(key, D(0)) + pnl
    for (account, token), amount in expected.items():
        assert ledger.balance(account, token) == amount
    for account, token, amount in ledger.snapshot().balances:
        assert amount >= 0 or (account, token) == (WALLET, "ETH")
