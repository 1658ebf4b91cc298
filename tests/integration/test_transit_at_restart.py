"""Funds between our accounts when the daemon dies: the next start opens its books on the venues' reads *and* what is
still moving between them, so NAV does not drop by a transfer in flight and its landing is booked once, as a landing
(`TransferDesk.sight` / `open_at`, `daemon.live_opening`). Each test is a run that died at one point of a transfer
(its desk's state file is what it left), then a restart against the same exchange fake, through the real ccxt."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.messages import VenueReport
from daemon.domain.pnl import nav_usd
from daemon.domain.reconcile import reconcile
from daemon.domain.transit import TransitState
from daemon.state_store import StateStore
from daemon.venues.ccxt_transfers import Sightings, Stage, TransferDesk, VenueFunds
from tests.integration.test_ccxt_transfers import EXCHANGES, MARKET, WALLET_ADDRESS, Rig, book_reports, rig

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]
__all__ = ["rig"]  # the fixture, from the desk's own tests

D = Decimal


class Killed(BaseException):
    """The process died here (a BaseException: nothing in the desk catches it, as nothing runs after a SIGKILL)."""


class DiesAtWithdraw(VenueFunds):
    """A venue's funds whose next withdrawal kills the process: before the request leaves (`after=False`), or after
    the venue accepted it and before its answer is handled (`after=True`)."""

    def __init__(self, *args: Any, after: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after = after

    async def withdraw(self, *args: Any, **kwargs: Any) -> str:
        if self.after:
            await super().withdraw(*args, **kwargs)
        raise Killed


def funds(r: Rig, dying: str | None = None, after: bool = False) -> dict[str, VenueFunds]:
    return {name: (DiesAtWithdraw(name, v.ccxt_clients, after=after) if name == dying
                   else VenueFunds(name, v.ccxt_clients)) for name, v in r.venues.items()}


class Restart:
    """A new run on the same state directory: its desk, its books opened as the live start opens them."""

    def __init__(self, r: Rig, store: StateStore) -> None:
        self.reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
        self.desk = TransferDesk(funds(r), self.reports, WallClock(), store=store, landing_poll_s=0.01)
        self.rig = r
        self.ledger = Ledger((*EXCHANGES, WALLET))
        self.transit: tuple[TokenChange, ...] = ()
        self.sighted: Sightings | None = None

    async def open(self, wallet: dict[str, Decimal] | None = None) -> None:
        before = await self.desk.sight(["USDT"])
        reads = [await v.fetch_account() for v in self.rig.venues.values()]
        after = await self.desk.sight(["USDT"])
        assert after == before  # nothing moves in these tests while the accounts are read
        self.sighted = after
        self.transit = self.desk.open_at(after, WallClock().now_ns())
        tokens = [TokenChange(r.account, t, a) for r in reads for t, a in r.balances]
        tokens += [TokenChange(WALLET, t, a) for t, a in (wallet or {}).items()]
        self.ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (*tokens, *self.transit)))

    def book(self) -> list[Any]:
        return book_reports(self.reports, self.ledger)

    def nav(self) -> Decimal:
        return nav_usd(self.ledger.snapshot(), MARKET)

    async def clean(self) -> bool:
        reads = [await v.fetch_account() for v in self.rig.venues.values()]
        return reconcile(self.ledger.snapshot(), reads, MARKET, ()).clean


async def test_a_withdrawal_debited_and_not_yet_credited_opens_in_transit_and_lands_once(rig: Rig,
                                                                                         tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    dead = TransferDesk(funds(rig), rig.reports, WallClock(), store=store)
    transfer = await dead.withdraw("binance", "USDT", D(80), "ERC20", to="okx")
    rig.book()
    nav = rig.nav()  # the books of the run that died: 77 in transit, Binance's 3 fee gone

    restart = Restart(rig, store)
    await restart.open()
    assert restart.transit == (TokenChange(TRANSIT, "USDT", D(77)),)
    assert restart.nav() == nav  # not 77 short: no drawdown at start-up
    assert await restart.clean()  # the venues agree with the opening without any allowance

    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"), tx_id="0xland")
    assert await restart.desk.poll() == 1
    (land,) = restart.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-77)), TokenChange("okx", "USDT", D(77)))
    assert restart.ledger.balance(TRANSIT, "USDT") == 0 and restart.nav() == nav and await restart.clean()
    assert await restart.desk.poll_deposits(["USDT"]) == 0  # the landing, not a deposit from outside


async def test_a_withdrawal_that_landed_while_down_is_in_the_reads_and_booked_no_more(rig: Rig,
                                                                                   tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    dead = TransferDesk(funds(rig), rig.reports, WallClock(), store=store)
    transfer = await dead.withdraw("binance", "USDT", D(50), "ERC20", to="okx")
    rig.book()
    nav = rig.nav()
    # While the daemon is down the chain delivers: OKX credits its funding account (not in the account read).
    rig.fake.binance.complete_withdrawal(transfer.transfer_id.removeprefix("binance:"), tx_id="0xdown")
    assert rig.fake.okx.balance("USDT", "funding") == D(47)

    restart = Restart(rig, store)
    await restart.open()
    assert restart.sighted is not None and [s.stage for s in restart.sighted.transfers] == [Stage.LANDED]
    assert rig.fake.okx.balance("USDT", "funding") == 0  # swept into trading before the read
    assert restart.transit == () and restart.ledger.balance("okx", "USDT") == D(10_047)
    assert restart.nav() == nav and await restart.clean()
    assert await restart.desk.poll() == 0 and await restart.desk.poll_deposits(["USDT"]) == 0
    assert not restart.book()  # both legs are in the reads: nothing booked again
    landed = restart.desk.book.get(transfer.transfer_id)
    assert landed is None or landed.state is TransitState.LANDED


async def test_a_request_that_never_reached_okx_is_abandoned_and_its_funding_sweep_undone(rig: Rig,
                                                                                       tmp_path: Any) -> None:
    """OKX withdraws from its funding account: the desk moves the amount there first. A run that died after that
    move and before the request left held 20 + fee in funding, out of the trading account's read."""
    store = StateStore(tmp_path)
    dead = TransferDesk(funds(rig, dying="okx"), rig.reports, WallClock(), store=store, landing_poll_s=0.01)
    with pytest.raises(Killed):
        await dead.withdraw_to_wallet("okx", "USDT", D(20), WALLET_ADDRESS, "wd-dead")
    assert rig.fake.okx.balance("USDT", "funding") > 0 and rig.fake.okx.balance("USDT") < D(10_000)
    assert not [t for t in rig.fake.okx.transfers if t.kind == "withdrawal"]

    restart = Restart(rig, store)
    await restart.open()
    assert restart.sighted is not None and [s.stage for s in restart.sighted.transfers] == [Stage.UNSEEN]
    assert (rig.fake.okx.balance("USDT"), rig.fake.okx.balance("USDT", "funding")) == (D(10_000), D(0))
    assert restart.transit == () and not restart.desk.book.pending() and not restart.desk.allowances(0)
    assert restart.nav() == rig.nav() and await restart.clean()
    # The ref is free: the new run's withdrawal is a request of its own, sent once.
    restart.desk.landing_wait_s = 0.05
    with pytest.raises(Exception, match="not landed"):
        await restart.desk.withdraw_to_wallet("okx", "USDT", D(20), WALLET_ADDRESS, "wd-dead")
    assert len([t for t in rig.fake.okx.transfers if t.kind == "withdrawal"]) == 1


async def test_a_request_the_venue_accepted_before_the_kill_is_adopted_in_transit(rig: Rig, tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    dead = TransferDesk(funds(rig, dying="binance", after=True), rig.reports, WallClock(), store=store)
    with pytest.raises(Killed):
        await dead.withdraw_to_wallet("binance", "USDT", D(40), WALLET_ADDRESS, "wd-accepted")
    (withdrawal,) = [t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]
    assert not len(rig.reports)  # the run died before booking the debit

    restart = Restart(rig, store)
    await restart.open(wallet={"USDT": D(1)})
    (sighting,) = restart.sighted.transfers if restart.sighted else ()
    assert sighting.stage is Stage.DEBITED and sighting.venue_id == withdrawal.id
    assert restart.transit == (TokenChange(TRANSIT, "USDT", D(37)),)  # 40 less Binance's fee
    assert restart.ledger.balance("binance", "USDT") == D(19_960) and await restart.clean()
    rig.fake.binance.complete_withdrawal(withdrawal.id, tx_id="0xpaid")
    assert await restart.desk.poll() == 1
    (land,) = restart.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-37)), TokenChange(WALLET, "USDT", D(37)))
    # A repeat of the dead run's ref is answered from the landing: nothing is sent again.
    assert await restart.desk.withdraw_to_wallet("binance", "USDT", D(40), WALLET_ADDRESS, "wd-accepted") == D(37)
    assert len([t for t in rig.fake.binance.transfers if t.kind == "withdrawal"]) == 1


async def test_a_wallet_deposit_the_dead_run_never_followed_is_adopted_and_lands_as_a_landing(
        rig: Rig, tmp_path: Any) -> None:
    """Mined on chain (the wallet's read holds the debit) by a run that died before handing it to the desk."""
    store = StateStore(tmp_path)
    restart = Restart(rig, store)
    assert not restart.desk.knows_deposit("0xfeed77")
    restart.desk.adopt_deposit("bybit", "USDT", D(300), "0xfeed77", int(WallClock().now_ns() / 1e6))
    assert restart.desk.knows_deposit("0xFEED77".lower())
    await restart.open(wallet={"USDT": D(5)})
    assert restart.transit == (TokenChange(TRANSIT, "USDT", D(300)),)
    rig.fake.bybit.credit_deposit("USDT", D(300), "ETH", "0xfeed77")  # into Bybit's funding account
    assert await restart.desk.poll_deposits(["USDT"]) == 0  # ours, by its hash: never a deposit from outside
    assert await restart.desk.poll() == 1
    (land,) = restart.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-300)), TokenChange("bybit", "USDT", D(300)))
    assert restart.ledger.balance(TRANSIT, "USDT") == 0 and await restart.clean()


async def test_deposits_from_outside_made_while_down_are_in_the_opening_and_not_booked_again(
        rig: Rig, tmp_path: Any) -> None:
    store = StateStore(tmp_path)
    first = TransferDesk(funds(rig), rig.reports, WallClock(), store=store, deposits_since_ms=0)
    assert await first.poll_deposits(["USDT"]) == 0
    rig.fake.binance.credit_deposit("USDT", D(70), "ETH", "0xop1")  # Binance: into the spot wallet (in the read)
    rig.fake.okx.credit_deposit("USDT", D(250), "ETH", "0xop2")  # OKX: into funding (out of the read until swept)

    restart = Restart(rig, store)
    await restart.open()
    assert restart.sighted is not None and len(restart.sighted.outside_deposits) == 2
    assert rig.fake.okx.balance("USDT") == D(10_250)  # swept before the read: the opening holds both
    assert restart.ledger.balance("okx", "USDT") == D(10_250) and restart.ledger.balance("binance", "USDT") == D(20_070)
    assert await restart.desk.poll_deposits(["USDT"]) == 0 and not restart.book()  # not booked a second time
    assert await restart.clean()
