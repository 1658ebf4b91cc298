"""The wallet's transfers end to end in the local world: the real AAVE world on anvil, the exchange fake over TLS
through the real ccxt, and the bridge between them (`tests/fakes/chain_bridge.py`): a venue's deposit address is an
anvil account, a deposit is credited when the bridge sees the transfer mined, a withdrawal is paid by a real
transaction. The desk (`daemon.venues.ccxt_transfers.TransferDesk`, the `WalletRails` port) follows each transfer
until it has landed and books the landing; the reconciler, fed the chain's own balances for the wallet, calls none of
it a drift.

The chain adapter's side (sending the wallet's transaction, booking its debit) is emulated here with a dev account's
unlocked transfer and the change set that adapter books (wallet −amount, transit +amount)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import pytest
import pytest_asyncio
from web3.types import Wei

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import AccountReport, BalancesChanged, VenueReport
from daemon.domain.reconcile import Reconciliation, reconcile
from daemon.domain.transit import TransitState
from daemon.ports import WalletRails
from daemon.venues.ccxt_exchange import CcxtExchange
from daemon.venues.ccxt_transfers import TransferDesk, TransferStillMoving, VenueFunds
from tests.fakes.chain.chain import AaveChain
from tests.fakes.chain_bridge import ChainBridge
from tests.integration.test_ccxt_transfers import EXCHANGES, adapter, book_reports, close

pytestmark = [pytest.mark.anvil, pytest.mark.exchange_fake, pytest.mark.asyncio]

D = Decimal
WALLET_ACCOUNT = 1  # the wallet: a dev account (the chain adapter's signer in live)
MARKET = MarketState(0, {"ETH": D(3000)}, {(v, "ETH"): D(3000) for v in EXCHANGES})
CAPITAL = {"binance": D(20_000), "bybit": D(10_000), "okx": D(10_000)}  # the fake's default accounts (USDT)
OKX_ETH = D(2)


@dataclass
class World:
    chain: AaveChain
    fake: Any
    bridge: ChainBridge
    venues: dict[str, CcxtExchange]
    desk: TransferDesk
    reports: LosslessChannel[VenueReport]
    ledger: Ledger
    wallet: str

    def book(self) -> list[BalancesChanged]:
        return book_reports(self.reports, self.ledger)

    async def wallet_report(self) -> AccountReport:
        """The chain's view of the wallet (what the chain adapter's `fetch_wallet` reports), read here directly."""
        eth = D(await self.chain.w3.eth.get_balance(self.chain.w3.to_checksum_address(self.wallet))).scaleb(-18)
        usdt = D(await self.chain.token("USDT").functions.balanceOf(self.wallet).call()).scaleb(-6)
        return AccountReport(WALLET, tuple((t, v) for t, v in (("ETH", eth), ("USDT", usdt)) if v), (), None, 0, 0)

    async def reconcile(self, *, allowances: bool = True) -> Reconciliation:
        reports = [await v.fetch_account() for v in self.venues.values()] + [await self.wallet_report()]
        moving = self.desk.allowances(WallClock().now_ns()) if allowances else ()
        return reconcile(self.ledger.snapshot(), reports, MARKET, moving)

    async def send_usdt(self, to: str, amount: Decimal) -> str:
        """The wallet's ERC-20 transfer, and its debit as the chain adapter books it once mined."""
        token = self.chain.token("USDT")
        receipt = await self.chain.send(token.functions.transfer(to, self.chain.units("USDT", amount)), self.wallet)
        tx_hash = str(receipt["transactionHash"].to_0x_hex())
        gas = D(receipt["gasUsed"] * receipt["effectiveGasPrice"]).scaleb(-18)
        self.ledger.apply(ChangeSet(Reason.VENUE_TRANSFER, 1, (TokenChange(WALLET, "USDT", -amount),
                                                               TokenChange(TRANSIT, "USDT", amount)),
                                    ref=f"wallet-tx-{tx_hash}"))
        self.ledger.apply(ChangeSet(Reason.GAS_FEE_PAID, 1, (TokenChange(WALLET, "ETH", -gas),), ref=f"gas-{tx_hash}"))
        return tx_hash


@pytest_asyncio.fixture
async def world(aave_chain: AaveChain, exchange_fake: Any) -> AsyncIterator[World]:
    wallet = aave_chain.accounts[WALLET_ACCOUNT]
    await aave_chain.mint("USDT", wallet, aave_chain.units("USDT", 1_000))
    bridge = await ChainBridge(aave_chain.url, aave_chain.book,
                               {"binance": exchange_fake.binance, "bybit": exchange_fake.bybit,
                                "okx": exchange_fake.okx}, poll_s=0.02).start()
    exchange_fake.okx.set_balance("ETH", OKX_ETH)  # OKX's trading account holds ETH to withdraw
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    venues = {v: adapter(exchange_fake, v, LosslessChannel(f"{v}-fills", 100)) for v in EXCHANGES}
    for venue in venues.values():
        await venue.start()
    desk = TransferDesk({name: VenueFunds(name, v.ccxt_clients) for name, v in venues.items()}, reports, WallClock(),
                        landing_wait_s=5, landing_poll_s=0.02)
    ledger = Ledger(tuple(EXCHANGES))
    rig = World(aave_chain, exchange_fake, bridge, venues, desk, reports, ledger, wallet)
    on_chain = dict((await rig.wallet_report()).balances)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (
        *(TokenChange(v, "USDT", a) for v, a in CAPITAL.items()), TokenChange("okx", "ETH", OKX_ETH),
        TokenChange(WALLET, "ETH", on_chain["ETH"]), TokenChange(WALLET, "USDT", on_chain["USDT"]))))
    try:
        assert (await rig.reconcile(allowances=False)).clean
        yield rig
        assert not bridge.errors
    finally:
        await bridge.stop()
        for venue in venues.values():
            await close(venue)


async def test_a_usdt_transfer_to_binance_lands_when_the_venue_credits_it_on_the_chain(world: World) -> None:
    rails: WalletRails = world.desk
    address = await rails.deposit_address("binance", "USDT")
    assert address == world.bridge.address("binance") and address == world.fake.binance.deposit_address("USDT", "ETH")
    assert {await rails.deposit_address(v, "USDT") for v in EXCHANGES} == set(world.bridge.addresses.values())

    world.bridge.paused = True  # the venue has not seen it yet: the transfer is in flight
    tx_hash = await world.send_usdt(address, D(250))
    world.desk.landing_wait_s = 0.1  # a short wait, for this one call
    with pytest.raises(TransferStillMoving):
        await rails.deposit_sent("binance", "USDT", D(250), tx_hash, "dep-1")
    world.desk.landing_wait_s = 5
    assert world.desk.book.get(f"wallet:{tx_hash}").state is TransitState.IN_TRANSIT  # type: ignore[union-attr]
    assert not world.book()  # the debit was the chain adapter's; nothing landed
    # The wallet's debit is booked, the venue has not credited: the books hold it in transit and agree with both.
    assert (await world.reconcile(allowances=False)).clean
    world.bridge.paused = False  # the venue sees the transfer and credits it
    with anyio.fail_after(5):
        while world.fake.binance.balance("USDT", "spot") == D(10_000):
            await anyio.sleep(0.01)
    early = await world.reconcile()  # the venue credited before our books booked the landing: in transit, excused
    assert early.clean and [(d.account, d.delta) for d in early.in_transit] == [("binance", D(250))]
    assert not (await world.reconcile(allowances=False)).clean

    await rails.deposit_sent("binance", "USDT", D(250), tx_hash, "dep-1")  # the same call again: it has landed
    (deposit,) = [t for t in world.fake.binance.transfers if t.kind == "deposit"]
    assert (deposit.amount, deposit.tx_id) == (D(250), tx_hash)
    (land,) = world.book()
    assert land.venue == "binance" and land.change.reason is Reason.VENUE_TRANSFER
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-250)), TokenChange("binance", "USDT", D(250)))
    assert world.ledger.balance(TRANSIT, "USDT") == 0 and world.ledger.balance("binance", "USDT") == D(20_250)
    assert (await world.reconcile(allowances=False)).clean
    # Ours, not a deposit from outside; and a third call books nothing.
    assert await world.desk.poll_deposits(["USDT"]) == 0 and await world.desk.poll() == 0
    await rails.deposit_sent("binance", "USDT", D(250), tx_hash, "dep-1")
    assert not world.book()


async def test_an_eth_withdrawal_from_okx_is_paid_on_the_chain_and_lands_in_the_wallet(world: World) -> None:
    rails: WalletRails = world.desk
    before = (await world.wallet_report()).balances
    received = await rails.withdraw_to_wallet("okx", "ETH", D("0.5"), world.wallet, "wd-1")
    assert received == D("0.5")  # OKX adds its fee (0.0008 ETH) on top
    after = (await world.wallet_report()).balances
    assert dict(after)["ETH"] - dict(before)["ETH"] == received  # paid on anvil, exactly, by a real transaction
    (withdrawal,) = [t for t in world.fake.okx.transfers if t.kind == "withdrawal"]
    receipt = await world.chain.w3.eth.get_transaction_receipt(withdrawal.tx_id)
    assert receipt["status"] == 1 and receipt["from"] == world.bridge.address("okx")
    assert receipt["to"] == world.wallet

    debit, land = world.book()
    assert debit.change.tokens == (TokenChange("okx", "ETH", D("-0.5008")), TokenChange(TRANSIT, "ETH", D("0.5")))
    assert land.change.tokens == (TokenChange(TRANSIT, "ETH", D("-0.5")), TokenChange(WALLET, "ETH", D("0.5")))
    assert world.ledger.balance("okx", "ETH") == D("1.4992") and world.ledger.balance(TRANSIT, "ETH") == 0
    assert (await world.reconcile(allowances=False)).clean
    # Idempotent on the ref: the answer again, no second withdrawal, nothing booked.
    assert await rails.withdraw_to_wallet("okx", "ETH", D("0.5"), world.wallet, "wd-1") == received
    assert len([t for t in world.fake.okx.transfers if t.kind == "withdrawal"]) == 1 and not world.book()


async def test_a_withdrawal_to_the_wallet_in_flight_is_excused_in_both_accounts(world: World) -> None:
    world.bridge.paused = True  # the venue accepted it, the chain has not paid yet
    world.desk.landing_wait_s = 0.1
    with pytest.raises(TransferStillMoving) as moving:
        await world.desk.withdraw_to_wallet("binance", "USDT", D(100), world.wallet, "wd-2")
    (debit,) = world.book()
    assert debit.change.tokens == (TokenChange("binance", "USDT", D(-100)), TokenChange(TRANSIT, "USDT", D(97)))
    allowances = {(a.account, a.token): (a.low, a.high) for a in world.desk.allowances(WallClock().now_ns())}
    assert allowances == {("binance", "USDT"): (D(-100), 0), (WALLET, "USDT"): (0, D(97))}
    assert (await world.reconcile()).clean

    world.bridge.paused = False
    with anyio.fail_after(5):  # the chain pays the wallet before the desk books it: the wallet's extra is excused
        while dict((await world.wallet_report()).balances)["USDT"] == D(1_000):
            await anyio.sleep(0.01)
    early = await world.reconcile()
    assert early.clean and [(d.account, d.delta) for d in early.in_transit] == [(WALLET, D(97))]
    assert not (await world.reconcile(allowances=False)).clean
    world.desk.landing_wait_s = 5
    assert await world.desk.withdraw_to_wallet("binance", "USDT", D(100), world.wallet, "wd-2") == D(97)
    assert world.desk.book.get(moving.value.transfer_id).state is TransitState.LANDED  # type: ignore[union-attr]
    (land,) = world.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-97)), TokenChange(WALLET, "USDT", D(97)))
    assert (await world.reconcile(allowances=False)).clean
    assert len([t for t in world.fake.binance.transfers if t.kind == "withdrawal"]) == 1


async def test_a_withdrawal_between_venues_travels_over_the_chain(world: World) -> None:
    transfer = await world.desk.withdraw("binance", "USDT", D(50), "ERC20", to="okx")
    world.book()
    with anyio.fail_after(5):
        while await world.desk.poll() == 0:
            await anyio.sleep(0.02)
    (land,) = world.book()
    (withdrawal,) = [t for t in world.fake.binance.transfers if t.kind == "withdrawal"]
    (deposit,) = [t for t in world.fake.okx.transfers if t.kind == "deposit"]
    assert deposit.tx_id == withdrawal.tx_id and deposit.amount == D(47)  # credited from the chain, once
    assert not [t for t in world.fake.binance.transfers if t.kind == "deposit"]  # its hot wallet's top-up is no deposit
    receipt = await world.chain.w3.eth.get_transaction_receipt(withdrawal.tx_id)
    assert receipt["from"] == world.bridge.address("binance")
    assert land.change.tokens == (TokenChange(TRANSIT, "USDT", D(-47)), TokenChange("okx", "USDT", D(47)))
    assert world.desk.book.get(transfer.transfer_id).state is TransitState.LANDED  # type: ignore[union-attr]
    assert (await world.reconcile(allowances=False)).clean


async def test_native_eth_sent_to_bybit_is_credited_to_funding_and_swept_into_the_trading_account(world: World) -> None:
    address = await world.desk.deposit_address("bybit", "ETH")
    assert address == world.bridge.address("bybit") == await world.desk.deposit_address("bybit", "USDT")
    w3 = world.chain.w3
    sent = await w3.eth.send_transaction({"from": world.wallet, "to": address, "value": Wei(3 * 10**17)})
    receipt = await w3.eth.wait_for_transaction_receipt(sent, poll_latency=0.01)
    tx_hash = sent.to_0x_hex()
    gas = D(receipt["gasUsed"] * receipt["effectiveGasPrice"]).scaleb(-18)
    world.ledger.apply(ChangeSet(Reason.VENUE_TRANSFER, 1, (TokenChange(WALLET, "ETH", D("-0.3") - gas),
                                                            TokenChange(TRANSIT, "ETH", D("0.3")))))
    await world.desk.deposit_sent("bybit", "ETH", D("0.3"), tx_hash, "dep-eth")
    (land,) = world.book()
    assert land.change.tokens == (TokenChange(TRANSIT, "ETH", D("-0.3")), TokenChange("bybit", "ETH", D("0.3")))
    assert world.fake.bybit.balance("ETH") == D("0.3") and world.fake.bybit.balance("ETH", "funding") == 0
    assert (await world.reconcile(allowances=False)).clean
