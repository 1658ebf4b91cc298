"""Funds in transit (`daemon.domain.transit`), pure: each leg's change set, every unit traceable, NAV moving only by
the fees, and the reconciler's allowances explaining exactly the lag between a venue and the books."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, LedgerError, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import AccountReport
from daemon.domain.pnl import attribute_step, nav_usd
from daemon.domain.reconcile import reconcile
from daemon.domain.transit import TransitBook, TransitError, TransitState

D = Decimal
VENUES = ("binance", "bybit", "okx")
MARKET = MarketState(0, {"ETH": D(3000)})


THOUSAND = D(1000)


def funded(amount: Decimal = THOUSAND, token: str = "USDT") -> Ledger:
    ledger = Ledger(VENUES)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(v, token, amount) for v in VENUES)))
    return ledger


def test_a_transfer_moves_through_the_transit_account_and_only_the_fee_leaves_the_books() -> None:
    ledger, book = funded(), TransitBook()
    nav = nav_usd(ledger.snapshot(), MARKET)
    book.request("r1", "USDT", "binance", "okx", D(50), D(50))
    moved = book.rename("r1", "binance:w1")
    assert moved.state is TransitState.REQUESTED and book.get("r1") is None
    ledger.apply(book.debit("binance:w1", D(50), D(3), 10))
    assert (ledger.balance("binance", "USDT"), ledger.balance(TRANSIT, "USDT")) == (D(950), D(47))
    assert book.in_transit("USDT") == D(47) and nav_usd(ledger.snapshot(), MARKET) == nav - 3
    land = book.land("binance:w1", D(47), 20)
    assert land.reason is Reason.VENUE_TRANSFER and land.ref == "transfer-binance:w1-land"
    ledger.apply(land)
    assert ledger.balance(TRANSIT, "USDT") == 0 and ledger.balance("okx", "USDT") == D(1047)
    assert nav_usd(ledger.snapshot(), MARKET) == nav - 3 and book.in_transit("USDT") == 0
    assert not book.pending()


def test_eth_in_transit_is_valued_at_the_market_like_eth_on_a_venue() -> None:
    ledger, book = funded(D(2), "ETH"), TransitBook()
    nav = nav_usd(ledger.snapshot(), MARKET)
    book.request("w", "ETH", "bybit", "binance", D("1.5"), D("1.5008"))
    ledger.apply(book.debit("w", D("1.5008"), D("0.0008"), 1))
    assert nav_usd(ledger.snapshot(), MARKET) == nav - D("0.0008") * 3000


def test_events_out_of_order_are_refused_and_change_nothing() -> None:
    book = TransitBook()
    with pytest.raises(TransitError):
        book.debit("nope", D(1), D(0), 0)
    book.request("w", "USDT", "binance", "okx", D(50), D(53))
    with pytest.raises(TransitError):
        book.request("w", "USDT", "binance", "okx", D(50), D(53))
    with pytest.raises(TransitError):
        book.land("w", D(50), 0)  # not debited yet
    with pytest.raises(TransitError):
        book.debit("w", D(3), D(3), 0)  # carries nothing
    book.debit("w", D(53), D(3), 0)
    with pytest.raises(TransitError):
        book.debit("w", D(53), D(3), 0)  # twice
    with pytest.raises(TransitError):
        book.request("x", "USDT", "okx", "okx", D(5), D(5))
    with pytest.raises(TransitError):
        book.request("y", "USDT", "okx", "bybit", D(5), D(4))
    assert [t.transfer_id for t in book.transfers] == ["w"]


def test_the_transit_account_holds_only_known_tokens() -> None:
    with pytest.raises(LedgerError, match="in transit"):
        funded().apply(ChangeSet(Reason.VENUE_TRANSFER, 0, (TokenChange(TRANSIT, "DOGE", D(1)),)))


def test_finished_transfers_excuse_the_books_lag_for_a_while_then_are_forgotten() -> None:
    book = TransitBook(linger_ns=100)
    book.request("w", "USDT", "binance", "okx", D(50), D(50))
    book.debit("w", D(50), D(3), 0)
    book.land("w", D(47), 1_000)
    assert [(a.account, a.low, a.high) for a in book.allowances(1_050)] == [("binance", D(-50), 0), ("okx", 0, D(47))]
    assert book.allowances(1_100) == () and book.prune(1_100) == 1 and not book.transfers


def test_an_abandoned_request_excuses_nothing() -> None:
    book = TransitBook()
    book.request("w", "USDT", "binance", "okx", D(50), D(50))
    assert {a.account for a in book.allowances(0)} == {"binance", "okx"}
    book.abandon("w", 0)
    assert book.allowances(0) == () and not book.pending()


# --- property: any mix of transfers, any lag of the books behind the venues ----------------------------------------

amounts = st.decimals(min_value=D("10"), max_value=D("300"), places=2)
fees = st.decimals(min_value=D("0"), max_value=D("5"), places=2)
outcome = st.sampled_from(["requested", "debited", "landed", "returned", "out"])
transfer = st.tuples(st.sampled_from(VENUES), st.sampled_from(VENUES), amounts, fees, st.booleans(), outcome,
                     st.decimals(min_value=D("-1"), max_value=D("0"), places=2))


@settings(max_examples=200, deadline=None)
@given(st.lists(transfer, max_size=6))
def test_every_unit_is_traceable(transfers: list[tuple[str, str, Decimal, Decimal, bool, str, Decimal]]) -> None:
    """Any mix of transfers, each as far as it got: (1) the books' total is the start less the fees, the deposit
    shortfalls and what left the books; (2) the transit account holds exactly what is in transit; (3) NAV moved by
    exactly that much, never by an amount still travelling."""
    start = D(10_000)
    books, book = funded(start), TransitBook()
    nav = nav_usd(books.snapshot(), MARKET)
    lost = D(0)
    for i, (source, destination, amount, fee, on_top, result, shortfall) in enumerate(transfers):
        if source == destination:
            continue
        to = None if result == "out" else destination
        debit = amount + fee if on_top else amount
        carried = debit - fee
        if carried <= 0:
            continue
        tid = f"{source}:w{i}"
        book.request(tid, "USDT", source, to, amount, debit)
        if result == "requested":
            continue
        books.apply(book.debit(tid, debit, fee, i))
        lost += fee
        if result == "landed":
            credited = carried + shortfall if carried + shortfall > 0 else carried  # a deposit fee credits less
            books.apply(book.land(tid, credited, i))
            lost += carried - credited
        elif result == "returned":
            books.apply(book.give_back(tid, debit, i))
            lost -= fee
        elif result == "out":
            books.apply(book.land(tid, carried, i))
            lost += carried
    snapshot = books.snapshot()
    assert sum((v for _, t, v in snapshot.balances if t == "USDT"), D(0)) == 3 * start - lost  # (1)
    assert snapshot.balance(TRANSIT, "USDT") == book.in_transit("USDT")  # (2)
    assert nav_usd(snapshot, MARKET) == nav - lost  # (3)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VENUES), st.sampled_from(VENUES), amounts, fees, st.booleans(),
       st.sampled_from(["requested", "debited", "landed", "returned"]), st.integers(0, 2))
def test_the_books_lagging_a_transfer_are_explained_by_the_allowances(
        source: str, destination: str, amount: Decimal, fee: Decimal, on_top: bool, result: str,
        booked: int) -> None:
    """The venues apply each leg at once, the books only the first `booked` legs (they are published in order):
    whatever the books have not booked yet is in transit, not a drift; and an extra unit anywhere still is one."""
    if source == destination:
        return
    venue_books, books, book = funded(), funded(), TransitBook(linger_ns=10**18)
    debit = amount + fee if on_top else amount
    book.request("w", "USDT", source, destination, amount, debit)
    legs = []
    if result != "requested":
        legs.append(book.debit("w", debit, fee, 1))
    if result == "landed":
        legs.append(book.land("w", debit - fee, 2))
    elif result == "returned":
        legs.append(book.give_back("w", debit, 2))
    for n, leg in enumerate(legs):
        venue_books.apply(leg)
        if n < booked:
            books.apply(leg)
    truth = venue_books.snapshot()
    reports = [AccountReport(v, (("USDT", truth.balance(v, "USDT")),), (), None, 0, 0) for v in VENUES]
    result_ = reconcile(books.snapshot(), reports, MARKET, book.allowances(3))
    assert result_.clean, result_.drifts
    drifted = [AccountReport(r.account, (("USDT", r.balances[0][1] + (1000 if r.account == source else 0)),), (),
                             None, 0, 0) for r in reports]
    assert not reconcile(books.snapshot(), drifted, MARKET, book.allowances(3)).clean


def test_the_pnl_attribution_of_a_transfer_sums_exactly_the_fee_a_cost_the_travel_delta() -> None:
    ledger = Ledger(("binance", "okx"))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "ETH", D(2)),)))
    book = TransitBook()
    book.request("w", "ETH", "binance", "okx", D(1), D(1))
    before, m0, m1 = ledger.snapshot(), MarketState(0, {"ETH": D(3000)}), MarketState(1, {"ETH": D(3100)})
    debit = book.debit("w", D(1), D("0.001"), 1)
    ledger.apply(debit)
    step = attribute_step(before, m0, ledger.snapshot(), m1, [debit])
    assert step.residual == 0 and step.components["transaction_costs"] == D("-3.1")  # 0.001 ETH at 3100
    assert step.components["delta_pnl"] == 200  # 2 ETH held (one of them about to travel) gained 100 each
    middle, m2 = ledger.snapshot(), MarketState(2, {"ETH": D(3050)})
    land = book.land("w", D("0.999"), 2)
    ledger.apply(land)
    step = attribute_step(middle, m1, ledger.snapshot(), m2, [land])
    assert step.residual == 0 and step.components["transaction_costs"] == 0  # the landing itself costs nothing
    assert step.components["delta_pnl"] == D("1.999") * -50  # the ETH in transit still moves with the market


def test_the_book_survives_a_state_file_exactly() -> None:
    book = TransitBook()
    book.request("a", "USDT", "binance", "okx", D("50.123456789"), D("53.123456789"))
    book.request("b", "ETH", "bybit", None, D("1.5"), D("1.5008"))
    book.debit("b", D("1.5008"), D("0.0008"), 7)
    book.land("b", D("1.5"), 9)
    restored = TransitBook.load(json.loads(json.dumps(book.dump())))
    assert restored.transfers == book.transfers and restored.allowances(10) == book.allowances(10)


# --- the wallet's transfers: a debit booked by the chain adapter, a landing in the wallet ---------------------------


def test_a_transfer_from_the_wallet_is_carried_from_its_mined_debit_to_its_landing() -> None:
    ledger, book = Ledger(VENUES), TransitBook(linger_ns=100)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(500)),)))
    # The chain adapter books the mined transaction itself; the book only carries it on.
    ledger.apply(ChangeSet(Reason.VENUE_TRANSFER, 1, (TokenChange(WALLET, "USDT", D(-200)),
                                                      TokenChange(TRANSIT, "USDT", D(200)))))
    carried = book.carry("wallet:0xabc", "USDT", WALLET, "binance", D(200))
    assert (carried.state, carried.debited, carried.carried) == (TransitState.IN_TRANSIT, D(200), D(200))
    assert book.in_transit("USDT") == ledger.balance(TRANSIT, "USDT") == D(200)
    # In flight: the chain may show the debit before the books do, the venue the credit.
    assert [(a.account, a.low, a.high) for a in book.allowances(2)] == [("binance", 0, D(200)),
                                                                         (WALLET, D(-200), 0)]
    with pytest.raises(TransitError):
        book.carry("wallet:0xabc", "USDT", WALLET, "binance", D(200))  # once
    with pytest.raises(TransitError):
        book.carry("wallet:0xdef", "USDT", WALLET, "binance", D(0))
    ledger.apply(book.land("wallet:0xabc", D(200), 10))
    assert ledger.balance(TRANSIT, "USDT") == 0 and ledger.balance("binance", "USDT") == D(200)
    assert book.allowances(200) == () and not book.pending()


def test_a_withdrawal_to_the_wallet_lands_in_the_wallet_account() -> None:
    ledger, book = funded(D(2), "ETH"), TransitBook()
    book.request("okx:w1", "ETH", "okx", WALLET, D("0.5"), D("0.5008"))
    assert {(a.account, a.high) for a in book.allowances(0)} == {("okx", 0), (WALLET, D("0.5"))}
    ledger.apply(book.debit("okx:w1", D("0.5008"), D("0.0008"), 1))
    land = book.land("okx:w1", D("0.5"), 2)
    assert land.reason is Reason.VENUE_TRANSFER and land.tokens == (TokenChange(TRANSIT, "ETH", D("-0.5")),
                                                                    TokenChange(WALLET, "ETH", D("0.5")))
    ledger.apply(land)
    assert ledger.balance(WALLET, "ETH") == D("0.5") and ledger.balance("okx", "ETH") == D("1.4992")
    restored = TransitBook.load(json.loads(json.dumps(book.dump())))
    assert restored.transfers == book.transfers
