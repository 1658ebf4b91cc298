"""Liquidations on the real AAVE v3 market on anvil (daemon/venues/web3_liquidations.py): a levered weETH position
is pushed under HF 1 by the LST's rate, another dev account calls the real `Pool.liquidationCall`, and the watch
finds it, books exactly the wallet's change as one LIQUIDATION report (the books before + the report = the chain
after), the positions actor halts trading on it, and neither a second scan nor a restart from the persisted block
books it again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs
from web3 import AsyncWeb3

from actors.positions import PositionsActor
from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.clock import NS_PER_S, WallClock
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.messages import (
    BalancesChanged,
    MarketUpdated,
    OrderFilled,
    PortfolioSnapshotted,
    TradingState,
    VenueReport,
)
from daemon.errors import RetryableVenueError
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from daemon.venues.web3_liquidations import LiquidationWatch
from daemon.venues.web3_reads import ABI_DIR, ChainReader, ChainSnapshot
from daemon.venues.web3_wallet import wallet_balances
from tests.fakes.chain.artifacts import aave_artifact
from tests.fakes.chain.chain import AaveChain, chain_addresses
from tests.fakes.chain.market import MAX_UINT
from tests.fakes.chain.node import AnvilNode

pytestmark = pytest.mark.anvil

WAD = 10**18
REL = Decimal("1e-9")


def close(a: Decimal, b: Decimal, rel: Decimal = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


async def levered_user(chain: AaveChain) -> str:
    """10 weETH supplied in e-mode, 9 WETH borrowed: HF 0.95 × 10.6 / 9 ≈ 1.119 at the LST's rate of 1.06."""
    user = chain.accounts[1]
    await chain.supply("weETH", user, 10 * WAD)
    await chain.set_user_emode(user, 1)
    await chain.borrow("WETH", user, 9 * WAD)
    return user


async def funded_liquidator(chain: AaveChain) -> str:
    liquidator = chain.accounts[2]
    await chain.mint("WETH", liquidator, 20 * WAD)
    await chain.send(chain.token("WETH").functions.approve(chain.book["Pool"], MAX_UINT), liquidator)
    return liquidator


def liquidation_call(chain: AaveChain, user: str) -> Any:
    return chain.pool.functions.liquidationCall(chain.reserve("weETH")["underlying"],
                                                chain.reserve("WETH")["underlying"], user, MAX_UINT, False)


def watch(chain: AaveChain, user: str, reports: LosslessChannel[VenueReport], from_block: int,
          max_block_range: int = 1_000) -> LiquidationWatch:
    return LiquidationWatch(chain.w3, chain_addresses(chain.book), user, reports, WallClock(), from_block=from_block,
                            max_block_range=max_block_range)


def drain(reports: LosslessChannel[VenueReport]) -> list[VenueReport]:
    out = []
    while len(reports):
        out.append(reports.receive_nowait())
    return out


def opening(snapshot: ChainSnapshot) -> ChangeSet:
    return ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(WALLET, t, v)
                                                     for t, v in wallet_balances(snapshot).items()))


def booked_wallet(ledger: Ledger) -> dict[str, Decimal]:
    return {t: v for a, t, v in ledger.snapshot().balances if a == WALLET}


async def book_with_the_positions_actor(start: ChainSnapshot, reports: Iterable[VenueReport]) -> tuple[
        Ledger, TradingStateCell]:
    """The real positions actor under the supervisor, its books opened at `start`, fed `reports`."""
    ledger = Ledger(())
    fills: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.fills", 16)
    marks: ConflatingChannel[MarketUpdated] = ConflatingChannel("positions.marks", 4, lambda m: m.key)
    snapshots: Fanout[PortfolioSnapshotted] = Fanout([])
    actor = PositionsActor(fills, marks, snapshots, ledger, lambda: [opening(start)], currency="ETH")
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=WallClock(), trading=trading, policy=RestartPolicy(), heartbeat_interval_s=0.05,
                     heartbeat_timeout_s=5, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        for report in reports:
            assert isinstance(report, BalancesChanged)
            await fills.send(report)
        with anyio.fail_after(5):
            while len(fills) or trading.state is TradingState.ACTIVE:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)  # a second report, if any, would be booked by now
        tg.cancel_scope.cancel()
    return ledger, trading


@pytest.mark.asyncio
async def test_a_real_liquidation_is_booked_exactly_halts_trading_and_is_counted_once(aave_chain: AaveChain) -> None:
    user = await levered_user(aave_chain)
    liquidator = await funded_liquidator(aave_chain)
    # AAVE's protocol fee takes 10 % of the bonus from the user's aTokens as well: the event does not show it.
    configurator = aave_chain.contract("PoolConfigurator", aave_chain.book["PoolConfigurator"])
    await aave_chain.send(configurator.functions.setLiquidationProtocolFee(aave_chain.reserve("weETH")["underlying"],
                                                                           1_000), aave_chain.book["admin"])
    start = await aave_chain.w3.eth.block_number + 1
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue.reports", 16)
    w = watch(aave_chain, user, reports, start, max_block_range=2)  # several ranges to cover
    assert await w.scan() == 0 and w.liquidations == 0

    await aave_chain.set_lst_rate("weETH", "0.93")  # HF 0.95 × 9.3 / 9 ≈ 0.98
    reader = ChainReader(aave_chain.w3, chain_addresses(aave_chain.book), user)
    before = await reader.read()
    assert before.account.health_factor < 1
    receipt = await aave_chain.send(liquidation_call(aave_chain, user), liquidator)
    after = await reader.read()
    for _ in range(3):  # blocks after it, so that more than one range is scanned
        await aave_chain.rpc("evm_mine", [])

    assert await w.scan() == 1
    (report,) = drain(reports)
    assert isinstance(report, BalancesChanged) and report.venue == "chain"
    topic = AsyncWeb3.to_hex(hexstr=w._event.topic)
    (log,) = [entry for entry in receipt["logs"] if AsyncWeb3.to_hex(entry["topics"][0]) == topic]
    assert report.report_id == f"{AsyncWeb3.to_hex(receipt['transactionHash'])}:{log['logIndex']}"
    assert report.change.reason is Reason.LIQUIDATION
    assert report.ts_event == after.block_timestamp * NS_PER_S
    assert w.last_scanned_block == await aave_chain.w3.eth.block_number

    # The books before + the report = the chain after, to the last unit; and trading stops.
    ledger, trading = await book_with_the_positions_actor(before, [report])
    assert booked_wallet(ledger) == wallet_balances(after)
    assert trading.state is TradingState.HALTED and "liquidated on chain" in trading.reason
    tokens = {t.token: t.delta for t in report.change.tokens}
    assert set(tokens) == {"aWeETH", "variableDebtWETH"}  # the liquidated pays no gas; nothing else moved

    event = w._event.process_log(log)["args"]
    repaid = Decimal(event["debtToCover"]) / WAD
    seized_in_event = Decimal(event["liquidatedCollateralAmount"]) / WAD
    seized = -tokens["aWeETH"] * after.reserves["weETH"].liquidity_index
    assert close(repaid, -tokens["variableDebtWETH"] * after.reserves["WETH"].borrow_index)
    assert seized > seized_in_event  # the protocol fee went too: measured, not taken from the event
    (booked,) = w.liquidation_events
    assert (booked.venue, booked.trigger, booked.unit) == ("aave_v3", "health_factor", "ETH")
    assert booked.value_before == before.account.health_factor and booked.closed == repaid
    # The e-mode bonus is 1 % of the debt repaid, all of it lost by the user (the liquidator's 90 % and the fee)
    assert close(booked.loss, seized * Decimal("0.93") - repaid) and close(booked.loss, repaid / 100, Decimal("1e-6"))
    assert w.worst_health_factor is not None and w.worst_health_factor.value == before.account.health_factor

    # Scanned twice, or the range asked again: nothing new.
    assert await w.scan() == 0 and await w.scan(from_block=start) == 0
    assert not drain(reports) and w.liquidations == 1
    # A restart from the persisted block books nothing; one from before the liquidation would (the check can fail).
    assert await watch(aave_chain, user, reports, w.last_scanned_block + 1).scan() == 0 and not drain(reports)
    assert await watch(aave_chain, user, reports, start).scan() == 1 and len(drain(reports)) == 1


@pytest.mark.asyncio
async def test_two_liquidations_in_one_block_book_the_block_s_difference_once(aave_chain: AaveChain) -> None:
    user = await levered_user(aave_chain)
    liquidator = await funded_liquidator(aave_chain)
    start = await aave_chain.w3.eth.block_number + 1
    await aave_chain.set_lst_rate("weETH", "0.92")  # HF ≈ 0.971: closed at 50 %, then ≈ 0.983, and again
    reader = ChainReader(aave_chain.w3, chain_addresses(aave_chain.book), user)
    before = await reader.read()
    await aave_chain.rpc("evm_setAutomine", [False])
    hashes = [await liquidation_call(aave_chain, user).transact({"from": liquidator, "gas": 1_500_000})
              for _ in range(2)]
    await aave_chain.rpc("evm_mine", [])
    await aave_chain.rpc("evm_setAutomine", [True])
    receipts = [await aave_chain.w3.eth.get_transaction_receipt(h) for h in hashes]
    assert [r["status"] for r in receipts] == [1, 1] and receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    after = await reader.read()

    reports: LosslessChannel[VenueReport] = LosslessChannel("venue.reports", 16)
    w = watch(aave_chain, user, reports, start)
    assert await w.scan() == 2 and w.liquidations == 2
    (report,) = drain(reports)
    assert isinstance(report, BalancesChanged)
    assert report.report_id.startswith(AsyncWeb3.to_hex(receipts[0]["transactionHash"]))  # on the first
    ledger = Ledger(())
    ledger.apply(opening(before))
    ledger.apply(report.change)
    assert booked_wallet(ledger) == wallet_balances(after)
    first, second = w.liquidation_events
    assert first.closed > 0 and second.closed > 0 and first.loss > 0 and second.loss == 0
    assert await w.scan(from_block=start) == 0 and not drain(reports)


@pytest.mark.asyncio
async def test_a_liquidation_whose_blocks_the_node_no_longer_holds_is_booked_from_the_event(
        aave_chain: AaveChain, aave_node: AnvilNode) -> None:
    user = await levered_user(aave_chain)
    liquidator = await funded_liquidator(aave_chain)
    start = await aave_chain.w3.eth.block_number + 1
    await aave_chain.set_lst_rate("weETH", "0.93")
    reader = ChainReader(aave_chain.w3, chain_addresses(aave_chain.book), user)
    before = await reader.read()
    await aave_chain.send(liquidation_call(aave_chain, user), liquidator)
    after = await reader.read()
    aave_node.restart()  # blocks and the latest state survive; the states of past blocks do not
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue.reports", 16)
    w = watch(aave_chain, user, reports, start)
    with capture_logs() as logs:
        assert await w.scan() == 1
    assert [e["event"] for e in logs] == ["liquidation_booked_from_event"]
    (report,) = drain(reports)
    assert isinstance(report, BalancesChanged) and report.change.reason is Reason.LIQUIDATION
    assert report.ts_event == after.block_timestamp * NS_PER_S
    ledger = Ledger(())
    ledger.apply(opening(before))
    ledger.apply(report.change)
    booked, chain = booked_wallet(ledger), wallet_balances(after)
    assert set(booked) == set(chain)  # the same tokens, the amounts estimated (the indexes moved a second since)
    assert all(close(booked[t], chain[t], Decimal("1e-6")) for t in chain)
    (event,) = w.liquidation_events
    assert event.value_before.is_nan() and event.closed > 0 and close(event.loss, event.closed / 100, Decimal("1e-6"))
    assert await w.scan(from_block=start) == 0 and not drain(reports)


@pytest.mark.asyncio
async def test_an_unreachable_node_is_retryable_and_nothing_is_marked_scanned(aave_chain: AaveChain,
                                                                              aave_node: AnvilNode) -> None:
    reports: LosslessChannel[VenueReport] = LosslessChannel("venue.reports", 16)
    # web3's own retries of a refused connection (~2 s of back-off) off: the error is what is tested here.
    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(aave_chain.url, exception_retry_configuration=None))
    w = LiquidationWatch(w3, chain_addresses(aave_chain.book), aave_chain.accounts[1], reports, WallClock(),
                         from_block=1)
    aave_node.stop()
    with pytest.raises(RetryableVenueError) as info:
        await w.scan()
    assert str(aave_node.port) not in str(info.value)
    assert w.last_scanned_block == 0
    await w3.provider.disconnect()


def test_the_event_fragment_is_the_package_s_own() -> None:
    ours = json.loads((ABI_DIR / "aave_pool_events.json").read_text())
    theirs = {f["name"]: f for f in aave_artifact("IPool")["abi"] if f.get("type") == "event"}
    assert [f["name"] for f in ours] == ["LiquidationCall"]
    for fragment in ours:
        assert fragment == theirs[fragment["name"]]
