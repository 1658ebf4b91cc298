"""Reconciliation, pure: our books against the venues' view, what differs, what is booked, what halts."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import AccountReport, BalancesChanged, OrderFilled, Side
from daemon.domain.reconcile import (
    ReportCount,
    Tolerance,
    accounts_behind,
    accounts_touched,
    correction,
    must_halt,
    reconcile,
    reports_expected,
)

D = Decimal
MARKET = MarketState(0, {"ETH": D(3000)}, {("binance", "ETH"): D(3001)}, {"weETH": D("1.05")},
                     {"weETH": D("1.01"), "WETH": D(1)}, {"WETH": D("1.02")})


def books() -> Ledger:
    ledger = Ledger(("binance",), gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "USDT", D(50_000)),
                                                       TokenChange(WALLET, "aWeETH", D(10)),
                                                       TokenChange(WALLET, "variableDebtWETH", D(9)))))
    ledger.apply(ChangeSet(Reason.TRADE_EXECUTED, 0, (), (PerpChange("binance", "ETHUSDT", D(-5), D(3000)),)))
    return ledger


def venues(usdt: str = "50000", perp: str = "-5", a_token: str = "10", sent: int | None = 3) -> list[AccountReport]:
    return [AccountReport("binance", (("USDT", D(usdt)),), (("ETHUSDT", D(perp)),), sent, 0, 0),
            AccountReport(WALLET, (("aWeETH", D(a_token)), ("variableDebtWETH", D(9))), (), sent, 0, 0)]


def test_books_that_agree_reconcile_clean() -> None:
    result = reconcile(books().snapshot(), venues(), MARKET)
    assert result.clean and result.total_usd() == 0 and result.drift_usd() == {"binance": 0, WALLET: 0}
    assert correction(result, 1, "r") is None and must_halt(result, D(100)) == ""


def test_a_token_drift_is_valued_booked_to_the_venues_figure_and_halts_only_above_the_limit() -> None:
    ledger = books()
    result = reconcile(ledger.snapshot(), venues(usdt="50040", a_token="9.99"), MARKET)
    (usdt, collateral) = sorted(result.drifts, key=lambda d: d.account)
    assert (usdt.account, usdt.holding, usdt.delta, usdt.value_usd) == ("binance", "USDT", D(40), D(40))
    # 0.01 scaled aWeETH × index 1.01 × 1.05 ETH/weETH × 3000 USD
    assert collateral.delta == D("-0.01") and collateral.value_usd == D("0.01") * D("1.01") * D("1.05") * 3000
    assert must_halt(result, D(100)) == ""  # 71.8 USD in all
    assert "more than 50" in must_halt(result, D(50))
    change = correction(result, 7, "reconcile-1")
    assert change is not None and change.reason is Reason.RECONCILIATION and not change.perps
    ledger.apply(change)  # after booking the correction, the books agree with the venues
    assert reconcile(ledger.snapshot(), venues(usdt="50040", a_token="9.99"), MARKET).clean


def test_a_perp_size_difference_always_halts_and_is_never_booked() -> None:
    result = reconcile(books().snapshot(), venues(perp="-4.9"), MARKET)
    (drift,) = result.drifts
    assert drift.is_perp and drift.delta == D("0.1") and drift.value_usd == D("0.1") * 3000
    assert "perp size differs" in must_halt(result, D(10**9))
    assert correction(result, 1, "r") is None


def test_a_holding_the_books_do_not_know_is_a_drift_too() -> None:
    reports = [*venues()[:1], AccountReport(WALLET, (("aWeETH", D(10)), ("variableDebtWETH", D(9)), ("EIGEN", D(3))),
                                            (), 3, 0, 0)]
    result = reconcile(books().snapshot(), reports, MARKET)
    (drift,) = result.drifts
    assert drift.holding == "EIGEN" and drift.value_usd is None  # no EIGEN price in this market
    assert "no price" in must_halt(result, D(10**9))


def test_the_books_are_current_only_once_every_venue_report_is_booked() -> None:
    assert reports_expected(venues(sent=3)) == 6
    assert reports_expected([*venues(sent=3)[:1], *venues(sent=None)[1:]]) is None


@given(st.decimals(min_value=-1000, max_value=1000, places=8), st.decimals(min_value=-5, max_value=5, places=3))
def test_booking_the_correction_always_makes_the_books_agree(usdt_drift: Decimal, a_drift: Decimal) -> None:
    ledger = books()
    truth = venues(usdt=str(D(50_000) + usdt_drift), a_token=str(D(10) + a_drift))
    change = correction(reconcile(ledger.snapshot(), truth, MARKET), 1, "r")
    if change is not None:
        ledger.apply(change)
    assert reconcile(ledger.snapshot(), truth, MARKET).clean


def test_a_difference_inside_the_tolerance_agrees_but_is_still_booked_to_the_venues_figure() -> None:
    tolerance = Tolerance({"USDT": D("0.5")}, D("0.01"))
    ledger = books()
    # 0.4 USDT: inside the dust; 0.05 of 10 aWeETH: inside 1 %; a perp is never tolerated.
    result = reconcile(ledger.snapshot(), venues(usdt="50000.4", a_token="9.95", perp="-4.999"), MARKET,
                       tolerance=tolerance)
    assert [d.holding for d in result.drifts] == ["perp:ETHUSDT"]
    assert sorted((d.account, d.holding, d.delta) for d in result.tolerated) == [
        ("binance", "USDT", D("0.4")), (WALLET, "aWeETH", D("-0.05"))]
    assert result.total_usd() == D("0.001") * 3000  # the tolerated differences are not drift
    change = correction(result, 1, "r")
    assert change is not None and {(t.account, t.token) for t in change.tokens} == {("binance", "USDT"),
                                                                                    (WALLET, "aWeETH")}
    # Beyond both levels it is a drift: 2 % of the aTokens.
    beyond = reconcile(ledger.snapshot(), venues(a_token="9.8"), MARKET, tolerance=tolerance)
    assert [(d.holding, d.delta) for d in beyond.drifts] == [("aWeETH", D("-0.2"))] and not beyond.tolerated


def fill(trade: str, instrument: str = "binance:Perp:ETHUSDT") -> OrderFilled:
    return OrderFilled(VenueId("binance"), TradeId(trade), ClientOrderId("c"), InstrumentId(instrument), Side.BUY,
                       D(1), D(3000), D(0), "USDT", 0, 0)


def test_reports_are_counted_once_each_under_every_account_they_touch() -> None:
    leg = BalancesChanged(VenueId("binance"), "w1", ChangeSet(Reason.VENUE_TRANSFER, 0, (
        TokenChange("binance", "USDT", D(-50)), TokenChange("transit", "USDT", D(50)))), 0, 0)
    landing = BalancesChanged(VenueId("binance"), "w1-landed", ChangeSet(Reason.VENUE_TRANSFER, 0, (
        TokenChange("transit", "USDT", D(-50)), TokenChange(WALLET, "USDT", D(50)))), 0, 0)
    assert accounts_touched(leg) == {"binance", "transit"} and accounts_touched(fill("t1")) == {"binance"}
    count = ReportCount()
    for report in (fill("t1"), fill("t1"), leg, landing, leg):  # a resent report is counted once
        count.count(report)
    # The landing at the wallet is published under the exchange's venue and still counts for the wallet.
    assert count.by_account() == (("binance", 2), ("transit", 2), (WALLET, 1))
    assert count.of("okx") == 0


def test_an_account_is_behind_until_its_books_have_booked_what_its_venue_sent_and_our_corrections() -> None:
    reports = venues(sent=2)
    assert accounts_behind(reports, {"binance": 2, WALLET: 2}, {}) == {}
    assert accounts_behind(reports, {"binance": 1, WALLET: 5}, {}) == {"binance": (1, 2)}
    assert accounts_behind(reports, {"binance": 3, WALLET: 2}, {"binance": 2}) == {"binance": (3, 4)}
    assert accounts_behind(venues(sent=None), {}, {}) == {}  # a venue that cannot count is never waited for
