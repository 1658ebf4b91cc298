"""A restart's books: the journal's reports replayed (daemon.journal_books), and a strategy that does not plan
capital that is still travelling between our accounts (StrategyView.in_transit_usd)."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, FillReport, Side
from daemon.domain.strategy import Change, decide
from daemon.journal import Journal
from daemon.journal_books import JournalBooksError, opening_key, read_journal_books
from tests.unit.test_strategy import empty_view, running_view, spec

D = Decimal
VENUES = ("binance", "bybit", "okx")


def report(venue: str, report_id: str, *tokens: TokenChange, reason: Reason = Reason.VENUE_TRANSFER,
           perps: tuple[PerpChange, ...] = ()) -> BalancesChanged:
    return BalancesChanged(VenueId(venue), report_id, ChangeSet(reason, 1, tokens, perps, ref=report_id), 1, 1)


def fill(trade_id: str, quantity: str, side: Side = Side.SELL) -> FillReport:
    return FillReport(VenueId("binance"), TradeId(trade_id), ClientOrderId("c1"), VenueOrderId("v1"),
                      InstrumentId("binance:Perp:ETHUSDT"), side, D(quantity), D(3000), D("1.5"), "USDT", 2, 2)


def run(path: Path, mode: str = "live") -> Journal:
    return Journal(path, mode, "{}", time.time_ns())


def journal_opening(j: Journal, change: ChangeSet) -> None:
    key = opening_key(j.run)
    venue, rid = key.split(":", 1)
    j.record_report(0, venue, key, "BalancesChanged", BalancesChanged(VenueId(venue), rid, change, 0, 0))


def test_the_books_are_every_live_run_s_reports_from_the_last_first_run_on_each_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = run(path)
    journal_opening(first, ChangeSet(Reason.INITIAL_CAPITAL, 5, (TokenChange("binance", "USDT", D(20_000)),
                                                                  TokenChange(WALLET, "USDT", D(1000)))))
    first.record_report(0, "binance", "binance:T1", "FillReport", fill("T1", "2"))
    out = report("chain", "0xaa", TokenChange(WALLET, "USDT", D(-400)), TokenChange(TRANSIT, "USDT", D(400)))
    first.record_report(0, "chain", "chain:0xaa", "BalancesChanged", out)
    first.close("killed")  # (a kill leaves no end marker; which does not matter to the books)
    paper = run(path, "paper")  # another runtime's reports are not the live books
    paper.record_report(0, "binance", "binance:T9", "FillReport", fill("T9", "50"))
    paper.close()
    second = run(path)
    second.record_report(0, "binance", "binance:T1", "FillReport", fill("T1", "2"))  # a backstop re-read it
    land = report("okx", "transfer-wallet:0xaa-land", TokenChange(TRANSIT, "USDT", D(-400)),
                  TokenChange("okx", "USDT", D(400)))
    second.record_report(0, "okx", "okx:transfer-wallet:0xaa-land", "BalancesChanged", land)
    journal_opening(second, ChangeSet(Reason.RECONCILIATION, 9, (), (PerpChange("okx", "ETHUSDT", D(-1), D(3100)),)))

    books = read_journal_books(path)
    assert books.base_run == first.run and books.runs == (first.run, second.run) and books.since_ns == 5
    keys = [k for k, _ in books.changes]
    assert keys == [opening_key(first.run), "binance:T1", "chain:0xaa", "okx:transfer-wallet:0xaa-land",
                    opening_key(second.run)]  # T1 once, T9 (paper) never
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    for _, change in books.changes:
        ledger.apply(change)
    assert ledger.balance("binance", "USDT") == D(20_000) - D("1.5") and ledger.balance(TRANSIT, "USDT") == 0
    assert ledger.balance("okx", "USDT") == D(400) and ledger.balance(WALLET, "USDT") == D(600)
    assert ledger.perp("binance", "ETHUSDT").quantity == D(-2) and ledger.perp("okx", "ETHUSDT").quantity == D(-1)
    second.close()


def test_no_first_run_in_the_journal_means_no_books_to_continue(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    assert read_journal_books(path).base_run is None  # no journal at all
    old = run(path)  # a run from before openings were journaled: its reports alone are not a book
    old.record_report(0, "binance", "binance:T1", "FillReport", fill("T1", "2"))
    old.close()
    books = read_journal_books(path)
    assert books.base_run is None and books.changes == ()


def test_a_report_the_books_cannot_read_back_is_named(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = run(path)
    journal_opening(j, ChangeSet(Reason.INITIAL_CAPITAL, 5, (TokenChange("binance", "USDT", D(1)),)))
    j.record_report(0, "binance", "binance:bad", "FillReport", {"venue": "binance"})  # a damaged row
    with pytest.raises(JournalBooksError, match="binance:bad"):
        read_journal_books(path)
    j.close()


def test_an_entry_waits_while_funds_travel_and_a_reduction_does_not() -> None:
    mode = spec()
    idle = empty_view()
    assert decide(Change.INITIAL_SETUP, mode, idle).instructions  # nothing moving: it enters
    moving = replace(idle, in_transit_usd=D(15_000))
    waiting = decide(Change.INITIAL_SETUP, mode, moving)
    assert not waiting.instructions and "in transit" in waiting.hold_reason
    dust = replace(idle, in_transit_usd=mode.min_order_usd - 1)  # less than an order's worth: not worth waiting for
    assert decide(Change.INITIAL_SETUP, mode, dust).instructions
    held = replace(running_view(), in_transit_usd=D(15_000))
    unwind = decide(Change.UNWIND, mode, held)
    assert unwind.instructions and all(i.reduces_exposure for i in unwind.instructions)  # risk off goes at once
