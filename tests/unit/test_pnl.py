from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.pnl import BASIS, BORROW, COSTS, DELTA, FUNDING, STAKING, SUPPLY, attribute_step, nav_usd

D = Decimal
VENUES = ("binance", "bybit", "okx")
NOISE = D("1e-12")


def market(p: str = "3000", marks: tuple[str, str, str] = ("3000", "3000", "3000"), o: str = "1.05",
           l_weeth: str = "1.01", l_usdt: str = "1.1", b_weth: str = "1.05") -> MarketState:
    return MarketState(
        ts_ns=0, prices_usd={"ETH": D(p), "BTC": D(60_000), "EIGEN": D(3), "ETHFI": D(2), "KING": D(5)},
        perp_marks={(v, "ETH"): D(m) for v, m in zip(VENUES, marks, strict=True)},
        lst_rates={"weETH": D(o)}, liquidity_index={"weETH": D(l_weeth), "USDT": D(l_usdt), "WETH": D(1)},
        borrow_index={"WETH": D(b_weth), "USDT": D(1)},
    )


def ledger(*tokens: TokenChange, perps: tuple[PerpChange, ...] = ()) -> Ledger:
    book = Ledger(VENUES, gas_debt_allowed=True)
    book.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tokens, perps))
    return book


def test_supply_yield_on_usdt_is_the_index_growth() -> None:
    book = ledger(TokenChange(WALLET, "aUSDT", D(1000)))
    step = attribute_step(book.snapshot(), market(l_usdt="1.1"), book.snapshot(), market(l_usdt="1.11"), [])
    assert step.components[SUPPLY] == D("10.000")
    assert step.pnl == D(10) and step.residual == 0


def test_borrow_cost_is_debt_times_index_growth_at_the_new_price() -> None:
    book = ledger(TokenChange(WALLET, "variableDebtWETH", D(10)))
    step = attribute_step(book.snapshot(), market(p="3000", b_weth="1.05"), book.snapshot(),
                          market(p="3100", b_weth="1.06"), [])
    assert step.components[BORROW] == -D(10) * D(3100) * D("0.01")
    assert step.components[DELTA] == -D(10) * D("1.05") * D(100)
    assert step.residual == 0


def test_a_hedged_position_has_no_delta_pnl_and_its_basis_is_the_marks_against_spot() -> None:
    # 10 ETH of weETH collateral value, shorts of 10 ETH: delta-neutral.
    weeth = D(10) / D("1.05")
    book = ledger(TokenChange(WALLET, "weETH", weeth),
                  perps=(PerpChange("binance", "ETHUSDT", D(-6), D(3000)),
                         PerpChange("bybit", "ETHUSDT", D(-4), D(3000))))
    m0 = market(p="3000", marks=("3000", "3000", "3000"))
    m1 = market(p="3300", marks=("3303", "3299", "3300"))
    step = attribute_step(book.snapshot(), m0, book.snapshot(), m1, [])
    assert abs(step.components[DELTA]) < NOISE
    assert step.components[BASIS] == D(-6) * D(3) + D(-4) * D(-1)
    assert step.residual == 0


def test_staking_growth_of_the_oracle_is_its_own_component() -> None:
    book = ledger(TokenChange(WALLET, "aWeETH", D(100)))
    step = attribute_step(book.snapshot(), market(o="1.05", l_weeth="1.01"), book.snapshot(),
                          market(o="1.06", l_weeth="1.01"), [])
    assert step.components[STAKING] == D(100) * D("1.01") * D(3000) * D("0.01")
    assert step.components[SUPPLY] == 0 and abs(step.residual) < NOISE


def test_funding_fees_and_slippage_land_in_their_components() -> None:
    book = ledger(TokenChange("binance", "USDT", D(50_000)))
    before = book.snapshot()
    m = market(marks=("3000", "3000", "3000"))
    trade = ChangeSet(Reason.TRADE_EXECUTED, 1, (TokenChange("binance", "USDT", D("-1.5")),),
                      (PerpChange("binance", "ETHUSDT", D(-1), D("2998")),))  # sold 2 under the mark, fee 1.5
    funding = ChangeSet(Reason.FUNDING_PAYMENT, 2, (TokenChange("binance", "USDT", D("0.3")),))
    book.apply_all([trade, funding])
    step = attribute_step(before, m, book.snapshot(), m, [trade, funding])
    assert step.components[COSTS] == D("-1.5") + D(-2)
    assert step.components[FUNDING] == D("0.3")
    assert step.residual == 0


def test_deposits_are_flows_not_pnl() -> None:
    book = ledger(TokenChange(WALLET, "USDT", D(1000)))
    before = book.snapshot()
    deposit = ChangeSet(Reason.DEPOSIT, 1, (TokenChange(WALLET, "USDT", D(500)),))
    book.apply(deposit)
    step = attribute_step(before, market(), book.snapshot(), market(), [deposit])
    assert (step.flows, step.pnl, step.residual) == (D(500), D(0), D(0))


def test_eth_share_class_holding_eth_has_no_delta_pnl_in_eth() -> None:
    book = ledger(TokenChange(WALLET, "ETH", D(10)))
    step = attribute_step(book.snapshot(), market(p="3000"), book.snapshot(), market(p="2000"), [], currency="ETH")
    assert (step.nav_before, step.nav_after) == (D(10), D(10))
    assert abs(step.components[DELTA]) < NOISE and abs(step.residual) < NOISE


prices = st.decimals(min_value=D(1500), max_value=D(5000), places=2)
small = st.decimals(min_value=D("-0.02"), max_value=D("0.02"), places=5)


@st.composite
def paths(draw: st.DrawFn) -> tuple[Ledger, list[tuple[MarketState, list[ChangeSet]]]]:
    book = ledger(
        TokenChange(WALLET, "aWeETH", draw(st.decimals(0, 200, places=4))),
        TokenChange(WALLET, "variableDebtWETH", draw(st.decimals(0, 150, places=4))),
        TokenChange(WALLET, "aUSDT", draw(st.decimals(0, 10_000, places=2))),
        TokenChange(WALLET, "weETH", draw(st.decimals(0, 5, places=4))),
        TokenChange(WALLET, "ETH", draw(st.decimals(-1, 1, places=4))),
        TokenChange(WALLET, "EIGEN", draw(st.decimals(0, 50, places=2))),
        *(TokenChange(v, "USDT", D(20_000)) for v in VENUES),
        TokenChange("binance", "ETH", draw(st.decimals(0, 3, places=3))),
        perps=tuple(PerpChange(v, "ETHUSDT", -draw(st.decimals(D("0.1"), 30, places=3)), D(3000)) for v in VENUES),
    )
    steps = []
    p, o, lw, lu, b = D(3000), D("1.05"), D("1.01"), D("1.1"), D("1.05")
    for _ in range(draw(st.integers(1, 6))):
        p = draw(prices)
        o *= 1 + abs(draw(small)) / 10
        lw, lu, b = lw * (1 + abs(draw(small)) / 50), lu * (1 + abs(draw(small)) / 50), b * (1 + abs(draw(small)) / 50)
        marks = tuple(str(p * (1 + draw(small) / 4)) for _ in VENUES)
        m = MarketState(0, {"ETH": p, "BTC": D(60_000), "EIGEN": draw(prices) / 1000},
                        {(v, "ETH"): D(mk) for v, mk in zip(VENUES, marks, strict=True)}, {"weETH": o},
                        {"weETH": lw, "USDT": lu, "WETH": D(1)}, {"WETH": b, "USDT": D(1)})
        changes = []
        for venue in draw(st.lists(st.sampled_from(VENUES), max_size=3)):
            qty = draw(st.decimals(D("-2"), D("2"), places=3).filter(lambda q: q != 0))
            changes.append(ChangeSet(Reason.TRADE_EXECUTED, 1, (TokenChange(venue, "USDT", -abs(qty)),),
                                     (PerpChange(venue, "ETHUSDT", qty, p * (1 + draw(small))),)))
            changes.append(ChangeSet(Reason.FUNDING_PAYMENT, 1, (TokenChange(venue, "USDT", draw(small) * 100),)))
        if draw(st.booleans()):
            changes.append(ChangeSet(Reason.GAS_FEE_PAID, 1, (TokenChange(WALLET, "ETH", D("-0.003")),)))
        if draw(st.booleans()):
            changes.append(ChangeSet(Reason.DEPOSIT, 1, (TokenChange(WALLET, "USDT", D(1000)),)))
        steps.append((m, changes))
    return book, steps


Path = tuple[Ledger, list[tuple[MarketState, list[ChangeSet]]]]


@given(paths(), st.sampled_from(["USDT", "ETH"]))
@settings(max_examples=150, deadline=None)
def test_components_sum_to_the_nav_change_on_random_paths(path: Path, currency: str) -> None:
    book, steps = path
    m_prev = market()
    for m, changes in steps:
        before = book.snapshot()
        for change in changes:
            book.apply(change)
        step = attribute_step(before, m_prev, book.snapshot(), m, changes, currency=currency)
        scale = abs(step.nav_before) + abs(step.nav_after) + 1
        assert abs(step.residual) <= scale * D("1e-20"), step
        if currency == "USDT":
            assert step.nav_after == nav_usd(book.snapshot(), m)
        m_prev = m


def test_a_balance_change_nobody_explains_shows_up_as_residual() -> None:
    """The residual is a real check: a change applied to the books but not given to the attribution remains."""
    book = ledger(TokenChange("okx", "USDT", D(1000)))
    before = book.snapshot()
    funding = ChangeSet(Reason.FUNDING_PAYMENT, 1, (TokenChange("okx", "USDT", D("4.2")),))
    book.apply(funding)
    assert attribute_step(before, market(), book.snapshot(), market(), [funding]).residual == 0
    assert attribute_step(before, market(), book.snapshot(), market(), []).residual == D("4.2")


def test_the_aave_position_is_valued_once_for_metrics_and_the_api() -> None:
    from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
    from daemon.domain.market import MarketState
    from daemon.domain.pnl import aave_position_usd

    ledger = Ledger(("binance",))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "aWeETH", Decimal(10)),
                                                       TokenChange(WALLET, "variableDebtWETH", Decimal(8)),
                                                       TokenChange("binance", "USDT", Decimal(500)))))
    market = MarketState(0, {"ETH": Decimal(2000)}, lst_rates={"weETH": Decimal("1.05")},
                         liquidity_index={"weETH": Decimal("1.01")}, borrow_index={"WETH": Decimal("1.02")})
    collateral, debt = aave_position_usd(ledger.snapshot(), market)
    assert collateral == 10 * Decimal("1.01") * Decimal("1.05") * 2000  # scaled × index × oracle × ETH
    assert debt == 8 * Decimal("1.02") * 2000  # positive, though the debt token values negative
