"""A live reconciliation run while a report is between the venue and the books: it waits for the books, and compares
once they have booked it — never a drift that the late report would then book on top of a correction.

The real parts: the ccxt adapter against the exchange fake (the venue's own account read), the fills, positions and
reconciler actors under the supervisor; the run's `ReportCount` shared by the adapters as in `daemon.live_accounts`.
The test holds the adapter's reports on their way to the fills actor, as a busy inbox would."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import pytest

from actors.fills import FillsActor
from actors.positions import PositionsActor
from actors.reconciler import ReconcilerActor
from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.messages import (
    AccountReport,
    BalancesChanged,
    MarketUpdated,
    OracleRateReported,
    OrderFilled,
    PortfolioSnapshotted,
    PriceTicked,
    ReserveIndexesReported,
    Side,
    SubmitOrder,
    TradingState,
    VenueReport,
)
from daemon.domain.reconcile import ReportCount
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.telemetry import ReconciliationRecord
from daemon.trading import TradingStateCell
from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

D = Decimal
PERP = InstrumentId("binance:Perp:ETHUSDT")
USDT = D(10_000)


class Wallet:
    """The chain's side of the port as the reconciler reads it: a wallet whose transactions are reported through the
    run's shared count (as `Web3Chain` and the `LiquidationWatch` do), its balances what the chain holds."""

    venue = VenueId("chain")

    def __init__(self, count: ReportCount, eth: Decimal) -> None:
        self.count, self.eth = count, eth

    async def fetch_wallet(self) -> AccountReport:
        return AccountReport(WALLET, (("ETH", self.eth),), (), self.count.of(WALLET), 0, 0)


@dataclass
class Rig:
    venue: CcxtExchange
    held: LosslessChannel[VenueReport]  # the adapter's reports, held until `deliver`
    inbox: LosslessChannel[VenueReport]  # the fills actor's
    positions: PositionsActor
    reconciler: ReconcilerActor
    marks: ConflatingChannel[MarketUpdated]
    record: ReconciliationRecord
    trading: TradingStateCell
    count: ReportCount
    wallet: Wallet

    async def deliver(self) -> int:
        n = 0
        while len(self.held):
            await self.inbox.send(self.held.receive_nowait())
            n += 1
        return n

    def tick(self, ts: int) -> None:
        self.marks.publish(MarketUpdated((PriceTicked(PERP, D(3000), ts, ts),
                                          PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), ts, ts)), ts, ts))


@asynccontextmanager
async def running(fake: Any, wallet_eth: Decimal = Decimal(0)) -> AsyncIterator[Rig]:
    fake.binance.set_balance("USDT", USDT)
    creds = fake.credentials("binance")
    count = ReportCount()
    held: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 100)
    venue = CcxtExchange(CcxtVenueConfig(venue="binance", exchanges={"Perp": "binanceusdm"}, instruments=(PERP,),
                                         credentials=Credentials(creds.api_key, creds.secret),
                                         key_setting="credentials.binance", leverage=3, max_clock_skew_ms=1000,
                                         timeout_ms=2000, enable_rate_limit=False),
                         WallClock(), held, session=fake.session(), count=count)
    wallet = Wallet(count, wallet_eth)
    inbox: LosslessChannel[VenueReport] = LosslessChannel("fills.inbox", 100)
    books: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.reports", 100)
    strategy: LosslessChannel[OrderFilled] = LosslessChannel("strategy.fills", 100)
    marks: ConflatingChannel[MarketUpdated] = ConflatingChannel("positions.marks", 4, lambda m: "market")
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("reconciler.snapshots", 4, lambda s: s.key)
    opening = ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "USDT", USDT),
                                                    *((TokenChange(WALLET, "ETH", wallet_eth),) if wallet_eth else ())))
    positions = PositionsActor(books, marks, Fanout([snapshots]), Ledger(("binance",), gas_debt_allowed=True),
                               lambda: [opening])
    record = ReconciliationRecord(0)
    # As the live world builds it: read concurrently, counted per account (the default for concurrent reads).
    reconciler = ReconcilerActor(snapshots, {"binance": venue}, wallet, books,  # type: ignore[arg-type]
                                 positions.board.state, record, 3600, D(100), max_deferrals=1000)
    trading = TradingStateCell()
    sup = Supervisor([FillsActor(inbox, books, strategy), positions, reconciler], clock=WallClock(), trading=trading,
                     policy=RestartPolicy(), heartbeat_interval_s=0.05, heartbeat_timeout_s=5, rng=random.Random(0))
    await venue.start()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            rig = Rig(venue, held, inbox, positions, reconciler, marks, record, trading, count, wallet)
            rig.tick(1)
            with anyio.fail_after(10):
                await reconciler.first_done.wait()  # the start-up run: books and venue agree
            assert reconciler.last is not None and reconciler.last.clean
            yield rig
            tg.cancel_scope.cancel()
    finally:
        await venue.close()


async def deferred(rig: Rig, ts: int) -> None:
    """Ask for a run and give it snapshots until it has deferred at least once."""
    before = rig.reconciler.deferrals
    rig.reconciler.request()
    with anyio.fail_after(10):
        while rig.reconciler.deferrals <= before:
            rig.tick(ts)
            ts += 1
            await anyio.sleep(0.01)


async def compared(rig: Rig) -> None:
    runs = rig.record.runs
    with anyio.fail_after(10):
        while rig.record.runs == runs:
            await anyio.sleep(0.01)


async def test_a_fill_between_the_venue_and_the_books_is_waited_for_then_compared(exchange_fake: Any) -> None:
    async with running(exchange_fake) as rig:
        order = SubmitOrder(ClientOrderId("i1-1-1"), InstructionId("i1"), PERP, Side.SELL, D("0.1"), False, "test",
                            0, 0)
        assert (await rig.venue.submit_order(order)).status == "filled"
        assert len(rig.held) == 1 and rig.count.of("binance") == 1  # published (counted), not booked
        runs = rig.record.runs
        await deferred(rig, 10)
        # The venue holds the short and the books do not yet: no comparison, no drift, no correction, no halt.
        assert rig.record.runs == runs and rig.reconciler.corrections_sent == 0
        assert rig.trading.state is TradingState.ACTIVE
        # Once booked, the run asked for compares, and finds the books and the venue in agreement.
        assert await rig.deliver() == 1
        await compared(rig)
        result = rig.reconciler.last
        assert result is not None and result.clean, result
        assert dict(rig.positions.latest.booked_by_account if rig.positions.latest else ()) == {"binance": 1}
        assert rig.reconciler.corrections_sent == 0 and rig.trading.state is TradingState.ACTIVE


async def test_a_wallet_report_in_flight_is_waited_for_and_a_real_drift_is_still_found(exchange_fake: Any) -> None:
    async with running(exchange_fake, wallet_eth=D(2)) as rig:
        # A liquidation (or a transaction) took 0.5 ETH from the wallet: published under the venue "chain".
        report = BalancesChanged(VenueId("chain"), "liq-1", ChangeSet(Reason.LIQUIDATION, 5, (
            TokenChange(WALLET, "ETH", D("-0.5")),)), 5, 5)
        rig.wallet.eth = D("1.5")
        rig.count.count(report)
        await rig.held.send(report)
        await deferred(rig, 10)
        assert rig.reconciler.corrections_sent == 0
        assert await rig.deliver() == 1
        await compared(rig)
        assert rig.reconciler.last is not None and rig.reconciler.last.clean
        # The liquidation halted trading (the positions actor's doing); the reconciler found nothing to correct.
        assert rig.reconciler.corrections_sent == 0
        # Something the venue did that no report explains is still a drift, at once: nothing is in flight.
        rig.wallet.eth = D("1.4")
        rig.reconciler.request()
        rig.tick(100)
        await compared(rig)
        result = rig.reconciler.last
        assert result is not None and [(d.account, d.holding, d.delta) for d in result.drifts] == \
            [(WALLET, "ETH", D("-0.1"))]
        assert rig.reconciler.corrections_sent == 1


# --- the chain: a real liquidation on anvil ------------------------------------------------------------------------


class NoRails:
    """The exchanges' side of the wallet's transfers: not used here."""

    async def deposit_address(self, venue: str, asset: str) -> str:
        raise AssertionError("no transfers in this test")

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        raise AssertionError("no transfers in this test")

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        raise AssertionError("no transfers in this test")


def chain_market(ts: int) -> MarketUpdated:
    return MarketUpdated((PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), ts, ts),
                          ReserveIndexesReported("weETH", D(1), D(1), ts, ts),
                          ReserveIndexesReported("WETH", D(1), D(1), ts, ts),
                          OracleRateReported("weETH/ETH", D("1.06"), ts, ts)), ts, ts)


@pytest.mark.anvil
async def test_a_liquidation_between_the_chain_and_the_books_is_waited_for_then_compared(aave_chain: Any) -> None:
    from web3 import AsyncWeb3

    from daemon.venues.web3_chain import Web3Chain
    from daemon.venues.web3_liquidations import LiquidationWatch
    from daemon.venues.web3_reads import ChainReader
    from daemon.venues.web3_tx import TxPolicy, TxSender
    from tests.fakes.chain.chain import chain_addresses, chain_contracts, dev_key
    from tests.integration.test_web3_liquidations import funded_liquidator, levered_user, liquidation_call

    user = await levered_user(aave_chain)
    liquidator = await funded_liquidator(aave_chain)
    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(aave_chain.url, request_kwargs={"timeout": 30}))
    addresses = chain_addresses(aave_chain.book, "weETH")
    count = ReportCount()
    held: LosslessChannel[VenueReport] = LosslessChannel("venue-reports", 100)
    chain = Web3Chain(w3, TxSender(w3, dev_key(1), TxPolicy(max_fee_cap_wei=500 * 10**9)),
                      ChainReader(w3, addresses, user), addresses, chain_contracts(aave_chain.book, "weETH"), held,
                      NoRails(), WallClock(), count=count)
    watch = LiquidationWatch(w3, addresses, user, held, WallClock(), from_block=await w3.eth.block_number + 1,
                             count=count)
    start = await chain.fetch_wallet()
    assert start.reports_sent == 0

    inbox: LosslessChannel[VenueReport] = LosslessChannel("fills.inbox", 100)
    books: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.reports", 100)
    marks: ConflatingChannel[MarketUpdated] = ConflatingChannel("positions.marks", 4, lambda m: "market")
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("reconciler.snapshots", 4, lambda s: s.key)
    opening = ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(WALLET, t, v) for t, v in start.balances))
    positions = PositionsActor(books, marks, Fanout([snapshots]), Ledger((), gas_debt_allowed=True), lambda: [opening],
                               currency="ETH")
    record = ReconciliationRecord(0)
    reconciler = ReconcilerActor(snapshots, {}, chain, books, positions.board.state, record, 3600, D(100),
                                 max_deferrals=1000)
    trading = TradingStateCell()
    sup = Supervisor([FillsActor(inbox, books, LosslessChannel("strategy.fills", 100)), positions, reconciler],
                     clock=WallClock(), trading=trading, policy=RestartPolicy(), heartbeat_interval_s=0.05,
                     heartbeat_timeout_s=5, rng=random.Random(0))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            marks.publish(chain_market(1))
            with anyio.fail_after(10):
                await reconciler.first_done.wait()
            assert reconciler.last is not None and reconciler.last.clean

            await aave_chain.set_lst_rate("weETH", "0.93")  # HF ≈ 0.98: liquidated by another account
            await aave_chain.send(liquidation_call(aave_chain, user), liquidator)
            assert await watch.scan() == 1 and len(held) == 1  # published (counted), held before the books
            # The watch publishes under the chain's venue: the wallet's report counts it.
            assert (await chain.fetch_wallet()).reports_sent == 1

            runs = record.runs
            reconciler.request()
            with anyio.fail_after(10):
                ts = 2
                while reconciler.deferrals == 0:
                    marks.publish(chain_market(ts))
                    ts += 1
                    await anyio.sleep(0.01)
            assert record.runs == runs and reconciler.corrections_sent == 0  # waited: no drift called

            await inbox.send(held.receive_nowait())
            with anyio.fail_after(10):
                while record.runs == runs:
                    await anyio.sleep(0.01)
            result = reconciler.last
            assert result is not None and result.clean, result
            assert reconciler.corrections_sent == 0
            assert trading.state is TradingState.HALTED and "liquidated" in trading.reason  # the positions actor's
            tg.cancel_scope.cancel()
    finally:
        await w3.provider.disconnect()


async def test_an_order_being_placed_is_waited_for_though_the_venue_traded_before_answering(
        exchange_fake: Any) -> None:
    async with running(exchange_fake) as rig:
        # The venue fills the order at once and holds its answer: meanwhile it shows the short, and no fill of it
        # has been published yet.
        exchange_fake.faults.timeout_after_place(delay=0.5)
        order = SubmitOrder(ClientOrderId("i2-1-1"), InstructionId("i2"), PERP, Side.BUY, D("0.1"), False, "test",
                            0, 0)
        async with anyio.create_task_group() as tg:
            placed: list[str] = []

            async def place() -> None:
                placed.append((await rig.venue.submit_order(order)).status)

            tg.start_soon(place)
            with anyio.fail_after(5):
                while exchange_fake.binance.position("ETHUSDT") is None:
                    await anyio.sleep(0.01)
            assert not len(rig.held) and rig.count.of("binance") == 0
            runs = rig.record.runs
            await deferred(rig, 10)  # the order in flight holds the comparison
            assert rig.record.runs == runs and rig.trading.state is TradingState.ACTIVE
        assert placed == ["filled"] and len(rig.held) == 1
        assert await rig.deliver() == 1
        await compared(rig)
        result = rig.reconciler.last
        assert result is not None and result.clean, result
        assert rig.reconciler.corrections_sent == 0 and rig.trading.state is TradingState.ACTIVE
