"""Funds through the real ccxt against the exchange fake (TLS, the venues' real host names): Binance's spot ↔ futures
move, deposit addresses, withdrawal fees and minimums, and a withdrawal from one venue to another carried in transit
by the books until the destination is credited, with the reconciler calling none of it a drift
(`daemon.venues.ccxt_transfers`, `daemon.domain.transit`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import pytest
import pytest_asyncio

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import BalancesChanged, VenueReport
from daemon.domain.pnl import nav_usd
from daemon.domain.reconcile import reconcile
from daemon.domain.transit import TransitState
from daemon.errors import RetryableVenueError, UnknownOrderOutcome, VenueDegraded, VenueError, VenueRejected
from daemon.state_store import StateStore
from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials
from daemon.venues.ccxt_transfers import (
    TransferDesk,
    TransferStillMoving,
    VenueFunds,
    WalletMoveNotNeeded,
    WithdrawalRefused,
)

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

D = Decimal
MARKET = MarketState(0, {"ETH": D(3000)}, {("binance", "ETH"): D(3000), ("okx", "ETH"): D(3000),
                                          ("bybit", "ETH"): D(3000)})
EXCHANGES = {"binance": {"Perp": "binanceusdm", "Spot": "binance"}, "bybit": {"Perp": "bybit", "Spot": "bybit"},
             "okx": {"Perp": "okx", "Spot": "okx"}}
CAPITAL = {"binance": D(20_000), "bybit": D(10_000), "okx": D(10_000)}  # the fake's default accounts


def adapter(fake: Any, venue: str, reports: LosslessChannel[VenueReport]) -> CcxtExchange:
    creds = fake.credentials(venue)
    config = CcxtVenueConfig(venue=venue, exchanges=EXCHANGES[venue], instruments=(f"{venue}:Perp:ETHUSDT",),
                             credentials=Credentials(creds.api_key, creds.secret,
                                                     creds.passphrase if venue == "okx" else None),
                             leverage=3, enable_rate_limit=False)
    return CcxtExchange(config, WallClock(), reports, session=fake.session())


async def close(venue: CcxtExchange) -> None:
    """Close the adapter without ccxt's 0.25 s pause per client on exit (it is for a session ccxt owns: here the
    fake's session is the test's, closed by the fake)."""
    for client in venue.ccxt_clients.values():
        getattr(client, "raw", client).timeout_on_exit = 0
    await venue.close()



def book_reports(reports: LosslessChannel[VenueReport], ledger: Ledger) -> list[BalancesChanged]:
    """Book every report published so far, as the positions actor does; the reports booked."""
    booked = []
    while len(reports):
        report = reports.receive_nowait()
        assert isinstance(report, BalancesChanged)
        ledger.apply(report.change)
        booked.append(report)
    return booked

@dataclass
class Rig:
    fake: Any
    venues: dict[str, CcxtExchange]
    desk: TransferDesk
    reports: LosslessChannel[VenueReport]
    ledger: Ledger

    def book(self) -> list[BalancesChanged]:
        return book_reports(self.reports, self.ledger)

    async def reconcile(self, *, allowances: bool = True) -> Any:
        reports = [await v.fetch_account() for v in self.venues.values()]
        moving = self.desk.allowances(WallClock().now_ns()) if allowances else ()
        return reconcile(self.ledger.snapshot(), reports, MARKET, moving)

    def nav(self) -> Decimal:
        return nav_usd(self.ledger.snapshot(), MARKET)


@pytest_asyncio.fixture
async def rig(exchange_fake: Any) -> AsyncIterator[Rig]:
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    venues = {v: adapter(exchange_fake, v, LosslessChannel(f"{v}-fills", 100)) for v in EXCHANGES}
    for venue in venues.values():
        await venue.start()
    funds = {name: VenueFunds(name, venue.ccxt_clients) for name, venue in venues.items()}
    ledger = Ledger(tuple(EXCHANGES))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(v, "USDT", a) for v, a in CAPITAL.items())))
    try:
        yield Rig(exchange_fake, venues, TransferDesk(funds, reports, WallClock()), reports, ledger)
    finally:
        for venue in venues.values():
            await close(venue)


async def test_binance_moves_between_spot_and_futures_and_the_books_need_nothing(rig: Rig) -> None:
    st = rig.fake.binance
    before = await rig.venues["binance"].fetch_account()
    transfer_id = await rig.desk.venue("binance").move("USDT", D("250.5"), "spot", "futures")
    assert transfer_id
    assert (st.balance("USDT", "spot"), st.balance("USDT", "futures")) == (D("9749.5"), D("10250.5"))
    assert [t.transfer_type for t in st.transfers] == ["MAIN_UMFUTURE"]
    await rig.desk.venue("binance").move("USDT", D(100), "futures", "spot")
    assert st.transfers[-1].transfer_type == "UMFUTURE_MAIN" and st.balance("USDT", "spot") == D("9849.5")
    # One account per venue in the books: the venue's total did not move, and the books agree without a change.
    assert (await rig.venues["binance"].fetch_account()).balances == before.balances
    assert (await rig.reconcile(allowances=False)).clean and not len(rig.reports)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
async def test_a_unified_account_has_nothing_to_move(rig: Rig, venue: str) -> None:
    calls = len(rig.fake.requests)
    with pytest.raises(WalletMoveNotNeeded, match="share one wallet"):
        await rig.desk.venue(venue).move("USDT", D(10), "spot", "futures")
    assert len(rig.fake.requests) == calls  # the venue was not asked


async def test_each_venue_has_its_own_deposit_address_for_the_configured_chain(rig: Rig) -> None:
    addresses = {}
    for venue in EXCHANGES:
        found = await rig.desk.venue(venue).deposit_address("USDT", "ERC20")
        assert found.address == getattr(rig.fake, venue).deposit_address("USDT", "ETH")
        assert (await rig.desk.venue(venue).deposit_address("USDT", "ERC20")).address == found.address  # stable
        addresses[venue] = found.address
    assert len(set(addresses.values())) == 3
    tron = await rig.desk.venue("okx").deposit_address("USDT", "TRC20")
    assert tron.address.startswith("T") and tron.address != addresses["okx"]


async def test_the_fee_and_minimum_come_from_the_venue_else_from_the_config(rig: Rig) -> None:
    rule = await rig.desk.venue("bybit").withdrawal_rule("USDT", "ERC20")
    assert (rule.fee, rule.minimum, rule.source, rule.fee_on_top) == (D(3), D(10), "venue", True)
    rig.fake.okx.withdraw_rules[("USDT", "ETH")] = (D("1.5"), D(25))
    rule = await rig.desk.venue("okx").withdrawal_rule("USDT", "ERC20")
    assert (rule.fee, rule.minimum, rule.source) == (D("1.5"), D(25), "venue")
    rig.fake.faults.http_error(502, body="<html>bad gateway</html>", path="/sapi/v1/capital/config/getall")
    with pytest.raises(WithdrawalRefused, match="no withdrawal fee and minimum known"):
        await rig.desk.venue("binance").withdrawal_rule("USDT", "ERC20")
    configured = VenueFunds("binance", rig.venues["binance"].ccxt_clients, rules={("USDT", "ERC20"): (D(4), D(20))})
    rig.fake.faults.http_error(502, body="<html>bad gateway</html>", path="/sapi/v1/capital/config/getall")
    rule = await configured.withdrawal_rule("USDT", "ERC20")
    assert (rule.fee, rule.minimum, rule.source, rule.fee_on_top) == (D(4), D(20), "config", False)


@pytest.mark.parametrize("venue", list(EXCHANGES))
async def test_a_withdrawal_below_the_minimum_is_refused_with_its_reason_and_nothing_is_sent(
        rig: Rig, venue: str) -> None:
    destination = "okx" if venue != "okx" else "binance"
    with pytest.raises(WithdrawalRefused) as refused:
        await rig.desk.withdraw(venue, "USDT", D("9.99"), "ERC20", to=destination)
    assert refused.value.reason == f"9.99 USDT is below {venue}'s minimum withdrawal of 10 USDT on ERC20"
    assert not [r for r in rig.fake.requests if "withdraw" in r.path and r.method == "POST"]
    assert getattr(rig.fake, venue).balance("USDT", getattr(rig.fake, venue).spot_wallet) == D(10_000)
    assert not rig.desk.book.transfers and not len(rig.reports)


async def test_a_withdrawal_to_another_venue_is_in_transit_until_the_destination_is_credited(rig: Rig) -> None:
    nav = rig.nav()
    transfer = await rig.desk.withdraw("binance", "USDT", D(50), "ERC20", to="okx")
    assert transfer.state is TransitState.IN_TRANSIT and transfer.transfer_id.startswith("binance:")
    assert rig.fake.binance.balance("USDT", "spot") == D(9950)  # the venue debited at once

    # The venue's debit is already there, our books have not booked it yet: in transit, not a drift.
    lagging = await rig.reconcile()
    assert lagging.clean and [(d.account, d.delta) for d in lagging.in_transit] == [("binance", D(-50))]
    assert not (await rig.reconcile(allowances=False)).clean  # (without the transfer it would be one)

    (debit,) = rig.book()
    assert debit.change.reason is Reason.VENUE_TRANSFER and debit.venue == "binance"
    assert rig.ledger.balance("binance", "USDT") == D(19_950) and rig.ledger.balance(TRANSIT, "USDT") == D(47)
    assert rig.nav() == nav - 3  # only Binance's fee left the books: the 47 on their way are still ours
    assert (await rig.reconcile()).clean

    assert await rig.desk.poll() == 0  # still processing at Binance
    assert (await rig.reconcile()).clean
    # The chain delivers: OKX credits its funding account, which the account report does not show.
    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"), tx_id="0xfeed")
    assert (rig.fake.okx.balance("USDT", "funding"), rig.fake.okx.balance("USDT")) == (D(47), D(10_000))
    assert (await rig.reconcile()).clean

    # Found in OKX's deposit history by the chain's transaction id, swept into the trading account, landed: the
    # venue shows the 47 before our books have booked the landing — in transit still, not a drift.
    assert await rig.desk.poll() == 1
    assert (rig.fake.okx.balance("USDT", "funding"), rig.fake.okx.balance("USDT")) == (D(0), D(10_047))
    early = await rig.reconcile()
    assert early.clean and [(d.account, d.delta) for d in early.in_transit] == [("okx", D(47))]
    assert not (await rig.reconcile(allowances=False)).clean
    (land,) = rig.book()
    assert land.venue == "okx" and land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-47)),
                                                          TokenChange("okx", "USDT", D(47)))
    assert rig.ledger.balance(TRANSIT, "USDT") == 0 and rig.ledger.balance("okx", "USDT") == D(10_047)
    assert rig.nav() == nav - 3
    settled = await rig.reconcile(allowances=False)
    assert settled.clean and not settled.in_transit
    assert rig.desk.book.get(transfer.transfer_id).state is TransitState.LANDED  # type: ignore[union-attr]
    assert await rig.desk.poll() == 0 and not rig.book()  # nothing twice


async def test_okx_withdraws_from_its_funding_account_and_adds_the_fee_on_top(rig: Rig) -> None:
    transfer = await rig.desk.withdraw("okx", "USDT", D(20), "ERC20", to="bybit")
    assert (transfer.debited, transfer.carried) == (D(23), D(20))
    (moved, sent) = [t for t in rig.fake.okx.transfers]
    assert (moved.kind, moved.transfer_type, moved.amount) == ("transfer", "futures->funding", D(23))
    assert (sent.kind, sent.wallet, sent.debited) == ("withdrawal", "funding", D(23))
    rig.book()
    assert rig.ledger.balance("okx", "USDT") == D(9_977) and (await rig.reconcile()).clean
    rig.fake.okx.complete_withdrawal(transfer.transfer_id.removeprefix("okx:"))
    assert await rig.desk.poll() == 1
    rig.book()
    # Bybit credited its FUND account; the desk swept it into the unified account the books mirror.
    assert rig.fake.bybit.transfers[-1].transfer_type == "funding->futures"
    assert rig.ledger.balance("bybit", "USDT") == D(10_020) == rig.fake.bybit.balance("USDT")
    assert rig.fake.bybit.balance("USDT", "funding") == 0
    assert (await rig.reconcile(allowances=False)).clean


async def test_a_sweep_repeated_after_a_lost_answer_moves_nothing_twice(rig: Rig) -> None:
    rig.fake.bybit.credit_deposit("USDT", D(40), "ETH", "0xabc")
    for _ in range(2):  # the same key twice: Bybit says "TransferId exist" the second time, which is success
        await rig.desk.venue("bybit").sweep("USDT", D(40), to_trading=True, key="land-x")
    assert rig.fake.bybit.balance("USDT") == D(10_040) and rig.fake.bybit.balance("USDT", "funding") == 0
    rig.fake.okx.credit_deposit("USDT", D(40), "ETH", "0xdef")
    for _ in range(2):
        await rig.desk.venue("okx").sweep("USDT", D(40), to_trading=True, key="land-y")
    assert rig.fake.okx.balance("USDT") == D(10_040) and rig.fake.okx.balance("USDT", "funding") == 0
    with pytest.raises(WalletMoveNotNeeded):
        await rig.desk.venue("binance").sweep("USDT", D(1), to_trading=True, key="z")


@pytest.mark.parametrize("venue", ["bybit", "okx"])
async def test_a_withdrawal_the_venue_gives_up_on_comes_back_to_the_source(rig: Rig, venue: str) -> None:
    transfer = await rig.desk.withdraw(venue, "USDT", D(100), "ERC20", to="binance")
    rig.book()
    getattr(rig.fake, venue).fail_withdrawal(transfer.transfer_id.removeprefix(f"{venue}:"))
    assert await rig.desk.poll() == 1
    (back,) = rig.book()
    assert back.change.tokens == (TokenChange(TRANSIT, "USDT", D(-100)), TokenChange(venue, "USDT", D(103)))
    assert rig.ledger.balance(venue, "USDT") == D(10_000) and rig.ledger.balance(TRANSIT, "USDT") == 0
    assert getattr(rig.fake, venue).balance("USDT") == D(10_000)  # (OKX: refunded to funding, swept back)
    assert (await rig.reconcile(allowances=False)).clean


async def test_a_withdrawal_out_of_the_books_is_a_capital_flow_once_done(rig: Rig) -> None:
    transfer = await rig.desk.withdraw("binance", "USDT", D(500), "ERC20", address="0x" + "ab" * 20)
    rig.book()
    nav = rig.nav()
    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"))
    assert await rig.desk.poll() == 1
    (out,) = rig.book()
    assert out.change.reason is Reason.WITHDRAWAL and out.change.tokens == (TokenChange(TRANSIT, "USDT", D(-497)),)
    assert rig.nav() == nav - 497 and (await rig.reconcile(allowances=False)).clean


async def test_a_withdrawal_completed_by_the_fake_after_a_delay_lands_on_the_next_polls(rig: Rig) -> None:
    rig.fake.binance.withdrawal_delay_s = 0.05
    transfer = await rig.desk.withdraw("binance", "USDT", D(30), "ERC20", to="bybit")
    rig.book()
    with anyio.fail_after(5):
        while await rig.desk.poll() == 0:
            await anyio.sleep(0.02)
    rig.book()
    assert rig.desk.book.get(transfer.transfer_id).state is TransitState.LANDED  # type: ignore[union-attr]
    assert rig.ledger.balance("bybit", "USDT") == D(10_027) and (await rig.reconcile(allowances=False)).clean


async def test_a_withdrawal_whose_answer_was_lost_is_found_in_the_history_and_carried_on(rig: Rig) -> None:
    rig.fake.faults.timeout_after_place(path="/sapi/v1/capital/withdraw/apply", delay=5.0)
    client = rig.venues["binance"].ccxt_clients["binance"]
    getattr(client, "raw", client).timeout = 300  # (the adapter's clients pass through its request gate)
    with pytest.raises(UnknownOrderOutcome):
        await rig.desk.withdraw("binance", "USDT", D(60), "ERC20", to="bybit")
    (pending,) = rig.desk.book.pending()
    assert pending.state is TransitState.REQUESTED and not len(rig.reports)
    assert rig.fake.binance.balance("USDT", "spot") == D(9_940)  # the venue did it
    assert (await rig.reconcile()).clean  # its debit is excused while we find out

    assert await rig.desk.poll() == 1  # adopted: the venue's record with this address and amount
    (adopted,) = rig.desk.book.pending()
    assert adopted.state is TransitState.IN_TRANSIT and adopted.transfer_id.startswith("binance:")
    rig.book()
    assert rig.ledger.balance("binance", "USDT") == D(19_940) and (await rig.reconcile(allowances=False)).clean
    rig.fake.binance.complete_withdrawal(adopted.transfer_id.removeprefix("binance:"))
    assert await rig.desk.poll() == 1
    rig.book()
    assert rig.ledger.balance("bybit", "USDT") == D(10_057) and (await rig.reconcile(allowances=False)).clean
    assert len([t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]) == 1  # sent once


async def test_a_deposit_from_outside_is_booked_once_as_a_capital_flow(rig: Rig) -> None:
    rig.fake.okx.credit_deposit("USDT", D(250), "ETH", "0xoutside")  # into OKX's funding account
    rig.fake.binance.credit_deposit("USDT", D(70), "ETH", "0xoutside2")  # into Binance's spot wallet
    nav = rig.nav()
    assert await rig.desk.poll_deposits(["USDT"]) == 2
    booked = {str(r.venue): r for r in rig.book()}
    assert {v: r.change.reason for v, r in booked.items()} == {"binance": Reason.DEPOSIT, "okx": Reason.DEPOSIT}
    assert booked["okx"].change.tokens == (TokenChange("okx", "USDT", D(250)),)
    assert rig.fake.okx.balance("USDT") == D(10_250)  # swept into the trading account
    assert rig.nav() == nav + 320 and (await rig.reconcile(allowances=False)).clean
    assert await rig.desk.poll_deposits(["USDT"]) == 0 and not rig.book()  # once


async def test_the_landing_of_our_own_transfer_is_not_a_deposit_from_outside(rig: Rig) -> None:
    transfer = await rig.desk.withdraw("binance", "USDT", D(50), "ERC20", to="bybit")
    rig.book()
    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"), tx_id="0xours")
    assert await rig.desk.poll_deposits(["USDT"]) == 0  # still moving: not told apart yet, left alone
    assert await rig.desk.poll() == 1
    assert await rig.desk.poll_deposits(["USDT"]) == 0  # ours: booked by the transfer's landing
    (land,) = rig.book()
    assert land.change.reason is Reason.VENUE_TRANSFER
    assert rig.ledger.balance("bybit", "USDT") == D(10_047) and (await rig.reconcile(allowances=False)).clean


async def test_a_transfer_in_flight_survives_a_restart_of_the_desk(rig: Rig, tmp_path: Any) -> None:
    store = StateStore(tmp_path / "state")
    funds = {name: VenueFunds(name, venue.ccxt_clients) for name, venue in rig.venues.items()}
    desk = TransferDesk(funds, rig.reports, WallClock(), store=store)
    transfer = await desk.withdraw("binance", "USDT", D(80), "ERC20", to="okx")
    rig.book()
    # The daemon restarts: a new desk from the state file carries the transfer on, excusing it meanwhile.
    resumed = TransferDesk(funds, rig.reports, WallClock(), store=store)
    (carried,) = resumed.book.pending()
    assert carried == transfer and resumed.allowances(0) == desk.allowances(0)
    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"))
    assert await resumed.poll_deposits(["USDT"]) == 0  # ours, still moving: not a deposit from outside
    assert await resumed.poll() == 1
    (land,) = rig.book()
    assert land.report_id == f"transfer-{transfer.transfer_id}-land"
    assert rig.ledger.balance("okx", "USDT") == D(10_077) and (await rig.reconcile(allowances=False)).clean
    again = TransferDesk(funds, rig.reports, WallClock(), store=store)
    assert not again.book.pending() and await again.poll_deposits(["USDT"]) == 0 and await again.poll() == 0


async def test_a_venue_that_cannot_be_read_does_not_hold_up_the_other_transfers(rig: Rig) -> None:
    stuck = await rig.desk.withdraw("bybit", "USDT", D(40), "ERC20", to="binance")
    moving = await rig.desk.withdraw("binance", "USDT", D(40), "ERC20", to="okx")
    rig.book()
    rig.fake.binance.complete_withdrawal(moving.transfer_id.removeprefix("binance:"))
    rig.fake.faults.maintenance(host="api.bybit.com")
    with pytest.raises(VenueDegraded):
        await rig.desk.poll()
    rig.fake.faults.clear()
    assert rig.desk.book.get(moving.transfer_id).state is TransitState.LANDED  # type: ignore[union-attr]
    assert rig.desk.book.get(stuck.transfer_id).state is TransitState.IN_TRANSIT  # type: ignore[union-attr]
    assert [r.change.ref for r in rig.book()] == [f"transfer-{moving.transfer_id}-land"]


# --- the wallet's transfers (the WalletRails port): the chain side is the test's here, see test_wallet_rails.py ---


WALLET_ADDRESS = "0x" + "cd" * 20


def wallet_desk(rig: Rig, **kwargs: Any) -> TransferDesk:
    funds = {name: VenueFunds(name, venue.ccxt_clients) for name, venue in rig.venues.items()}
    return TransferDesk(funds, rig.reports, WallClock(), landing_poll_s=0.01, **kwargs)


def sent_from_wallet(rig: Rig, amount: Decimal, asset: str = "USDT") -> None:
    """The wallet's capital, and its transaction's debit as the chain adapter books it once mined."""
    rig.ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, asset, amount),)))
    rig.ledger.apply(ChangeSet(Reason.VENUE_TRANSFER, 1, (TokenChange(WALLET, asset, -amount),
                                                          TokenChange(TRANSIT, asset, amount))))


async def test_a_deposit_from_the_wallet_lands_when_the_venue_lists_its_transaction(rig: Rig) -> None:
    desk = wallet_desk(rig)
    address = await desk.deposit_address("bybit", "USDT")
    assert address == rig.fake.bybit.deposit_address("USDT", "ETH")
    calls = len(rig.fake.requests)
    assert await desk.deposit_address("bybit", "USDT") == address and len(rig.fake.requests) == calls  # cached
    sent_from_wallet(rig, D(120))
    waiting = asyncio.create_task(desk.deposit_sent("bybit", "USDT", D(120), "0xAbC123", "dep-1"))
    await anyio.sleep(0.05)
    assert not waiting.done() and desk.allowances(WallClock().now_ns())  # excused while it travels
    rig.fake.bybit.credit_deposit("USDT", D(120), "ETH", "abc123")  # the venue spells the hash its own way
    with anyio.fail_after(5):
        await waiting
    (land,) = rig.book()
    assert land.venue == "bybit" and land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-120)),
                                                            TokenChange("bybit", "USDT", D(120)))
    assert rig.fake.bybit.balance("USDT") == D(10_120) and rig.fake.bybit.balance("USDT", "funding") == 0  # swept
    assert (await rig.reconcile(allowances=False)).clean
    assert await desk.poll_deposits(["USDT"]) == 0 and await desk.poll() == 0  # ours: not a deposit from outside
    await desk.deposit_sent("bybit", "USDT", D(120), "0xAbC123", "dep-1")  # again: landed already, nothing booked
    assert not rig.book()


async def test_a_deposit_not_credited_within_the_wait_stays_in_transit_across_a_restart(
        rig: Rig, tmp_path: Any) -> None:
    store = StateStore(tmp_path / "state")
    desk = wallet_desk(rig, store=store, landing_wait_s=0.05)
    sent_from_wallet(rig, D(60))
    with pytest.raises(TransferStillMoving) as moving:
        await desk.deposit_sent("okx", "USDT", D(60), "0xfeed01", "dep-2")
    assert isinstance(moving.value, RetryableVenueError) and moving.value.transfer_id == "wallet:0xfeed01"
    assert (await rig.reconcile()).clean
    resumed = wallet_desk(rig, store=store)  # the daemon restarts: the transfer is carried on
    assert [t.transfer_id for t in resumed.book.pending()] == ["wallet:0xfeed01"]
    rig.fake.okx.credit_deposit("USDT", D(60), "ETH", "0xfeed01")
    assert await resumed.poll_deposits(["USDT"]) == 0  # known by its transaction: never a deposit from outside
    assert await resumed.poll() == 1
    (land,) = rig.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-60)), TokenChange("okx", "USDT", D(60)))
    assert (await rig.reconcile(allowances=False)).clean


async def test_a_withdrawal_to_the_wallet_lands_when_paid_and_the_ref_is_not_sent_twice(rig: Rig) -> None:
    rig.ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(1)),)))
    desk = wallet_desk(rig)
    waiting = asyncio.create_task(desk.withdraw_to_wallet("binance", "USDT", D(40), WALLET_ADDRESS, "wd-1"))
    with anyio.fail_after(5):
        while not [t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]:
            await anyio.sleep(0.01)
    (withdrawal,) = [t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]
    assert withdrawal.address == WALLET_ADDRESS
    rig.fake.binance.complete_withdrawal(withdrawal.id, tx_id="0xpaid")
    with anyio.fail_after(5):
        assert await waiting == D(37)  # Binance takes its fee out of the amount
    debit, land = rig.book()
    assert debit.change.tokens == (TokenChange("binance", "USDT", D(-40)), TokenChange(TRANSIT, "USDT", D(37)))
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-37)), TokenChange(WALLET, "USDT", D(37)))
    assert rig.ledger.balance(WALLET, "USDT") == D(38) and rig.ledger.balance("binance", "USDT") == D(19_960)
    assert await desk.withdraw_to_wallet("binance", "USDT", D(40), WALLET_ADDRESS, "wd-1") == D(37)
    assert len([t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]) == 1 and not rig.book()


async def test_a_withdrawal_to_the_wallet_the_venue_gives_back_frees_its_ref(rig: Rig) -> None:
    desk = wallet_desk(rig)
    waiting = asyncio.create_task(desk.withdraw_to_wallet("okx", "USDT", D(30), WALLET_ADDRESS, "wd-2"))
    with anyio.fail_after(5):
        while not [t for t in rig.fake.okx.transfers if t.kind == "withdrawal"]:
            await anyio.sleep(0.01)
    rig.fake.okx.fail_withdrawal(next(t.id for t in rig.fake.okx.transfers if t.kind == "withdrawal"))
    with anyio.fail_after(5), pytest.raises(VenueRejected, match="nothing reached the wallet"):
        await waiting
    rig.book()
    assert rig.ledger.balance("okx", "USDT") == D(10_000) and (await rig.reconcile(allowances=False)).clean
    desk.landing_wait_s = 0.05
    with pytest.raises(TransferStillMoving):  # the same ref again: a new request (the first is settled)
        await desk.withdraw_to_wallet("okx", "USDT", D(30), WALLET_ADDRESS, "wd-2")
    assert len([t for t in rig.fake.okx.transfers if t.kind == "withdrawal"]) == 2


async def test_a_withdrawal_a_spot_fee_left_short_takes_what_is_held_and_says_what_arrived(rig: Rig) -> None:
    """Binance (as Bybit and OKX) takes a spot buy's fee in the asset bought: the strategy planned to withdraw the
    ETH it bought, and 0.1 % less is there. The whole balance goes, and the caller is told what arrived (the next
    step, the leveraged entry, sizes on it); a larger shortfall is asked as planned, for the venue to refuse."""
    held = D("0.999")
    rig.fake.binance.set_balance("ETH", held, wallet="spot")
    rig.ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "ETH", held),)))
    desk = wallet_desk(rig)
    waiting = asyncio.create_task(desk.withdraw_to_wallet("binance", "ETH", D(1), WALLET_ADDRESS, "wd-eth"))
    with anyio.fail_after(5):
        while not [t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]:
            await anyio.sleep(0.01)
    (withdrawal,) = [t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]
    assert withdrawal.amount == held  # not the planned 1 ETH
    rig.fake.binance.complete_withdrawal(withdrawal.id, tx_id="0xeth")
    with anyio.fail_after(5):
        arrived = await waiting
    fee = held - arrived
    assert D(0) < fee < D("0.01") and rig.fake.binance.balance("ETH", wallet="spot") == 0
    debit, land = rig.book()
    assert debit.change.tokens[0] == TokenChange("binance", "ETH", -held)
    assert land.change.tokens[-1] == TokenChange(WALLET, "ETH", arrived)
    rig.fake.binance.set_balance("ETH", D("0.9"), wallet="spot")  # 10 % short: not a fee's worth
    with pytest.raises(VenueError):
        await desk.withdraw_to_wallet("binance", "ETH", D(1), WALLET_ADDRESS, "wd-eth-2")
