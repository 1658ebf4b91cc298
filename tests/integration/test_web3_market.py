"""The chain's market data (daemon/venues/web3_market.py) and the live feed polling it, against the real AAVE v3
market on anvil: the messages are the snapshot's values, the books' health factor computed from them equals AAVE's
own to 1e-9 through interest and oracle moves, and an RPC node restart degrades the chain source (logged once) and
is recovered from with no restart of the source, at the values the node had.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TypeVar

import pytest
from structlog.testing import capture_logs

from daemon.clock import WallClock
from daemon.domain.aave import AaveAccount, account_value, health_factor
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    GasPriceReported,
    MarketData,
    OracleRateReported,
    PriceTicked,
    ReserveIndexesReported,
)
from daemon.domain.risk import RiskLimits, stale_series
from daemon.errors import RetryableVenueError
from daemon.replay.live_feed import LiveFeed
from daemon.venues.web3_market import DEX_INSTRUMENT, FIXED_RATE_ABI, ChainMarketSource, FixedRateDex
from daemon.venues.web3_reads import ChainReader, ChainSnapshot
from daemon.venues.web3_wallet import wallet_balances
from tests.fakes.chain.artifacts import SWAP_ROUTER_ARTIFACT
from tests.fakes.chain.chain import AaveChain, chain_addresses
from tests.fakes.chain.node import AnvilNode

pytestmark = pytest.mark.anvil

T = TypeVar("T")
REL = Decimal("1e-9")
WAD = 10**18
DAY = 86_400
GWEI = Decimal("1e-9")


def close(a: Decimal, b: Decimal, rel: Decimal = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def of(batch: Sequence[object], kind: type[T]) -> list[T]:
    return [m for m in batch if isinstance(m, kind)]


async def levered_user(chain: AaveChain) -> str:
    user = chain.accounts[1]
    await chain.supply("weETH", user, 10 * WAD)
    await chain.set_user_emode(user, 1)
    await chain.borrow("WETH", user, 9 * WAD)
    return user


def source(chain: AaveChain, user: str, dex: bool = True) -> tuple[ChainMarketSource, ChainReader]:
    addresses = chain_addresses(chain.book)
    reader = ChainReader(chain.w3, addresses, user)
    return ChainMarketSource(reader, addresses, dex=FixedRateDex(chain.book["SwapRouter"]) if dex else None,
                             w3=chain.w3), reader


def books_health_factor(snapshot: ChainSnapshot, board: MarketBoard) -> Decimal:
    """HF as the books compute it: the wallet's booked (scaled) balances × the board's indexes and oracle rate."""
    booked = wallet_balances(snapshot)
    assert snapshot.emode is not None
    value = account_value(AaveAccount(booked["aWeETH"], booked["variableDebtWETH"]), board.supply["weETH"],
                          board.borrow["WETH"], board.lst["weETH"])
    return health_factor(value.collateral, value.debt, snapshot.emode.params.liquidation_threshold)


@pytest.mark.asyncio
async def test_a_poll_is_the_snapshot_s_market_and_the_books_hf_is_aave_s(aave_chain: AaveChain) -> None:
    user = await levered_user(aave_chain)
    market, _ = source(aave_chain, user)
    board = MarketBoard()

    async def poll() -> tuple[list[MarketData], ChainSnapshot]:
        batch = await market.poll(WallClock().now_ns())
        for m in batch:
            board.update(m)
        assert market.snapshot is not None
        return list(batch), market.snapshot

    batch, s = await poll()
    (oracle,) = of(batch, OracleRateReported)
    assert oracle.pair == "weETH/ETH" and oracle.rate == s.oracle_rate("weETH") == Decimal("1.06")
    indexes = {m.reserve: m for m in of(batch, ReserveIndexesReported)}
    assert set(indexes) == {"WETH", "weETH", "wstETH", "USDT"}
    for symbol, m in indexes.items():
        r = s.reserves[symbol]
        assert m.liquidity_index == Decimal(r.normalized_income_ray) / 10**27
        assert m.borrow_index == Decimal(r.normalized_variable_debt_ray) / 10**27
    (gas,) = of(batch, GasPriceReported)
    tip = max(s.gas.priority_fee_wei(50), 10**6)
    assert gas.gwei == Decimal(s.gas.next_base_fee_wei + tip) * GWEI and gas.gwei > 0
    (dex,) = of(batch, PriceTicked)
    assert dex.instrument_id == DEX_INSTRUMENT and dex.price == Decimal(3000)  # the router's WETH→USDT rate
    assert board.dex_prices["ETH"] == Decimal(3000)
    assert all(m.ts_event == m.ts_recv for m in batch)  # the wall clock of the poll (see the module)
    assert market.lst_rate == Decimal("1.06") and market.oracle_rate == Decimal("1.06")
    assert market.oracle_discount == 0
    assert close(books_health_factor(s, board), s.account.health_factor)
    assert market.health_factor is not None and market.health_factor.value == s.account.health_factor

    await aave_chain.warp(120 * DAY)  # interest: the live indexes move, the booked scaled balances do not
    batch, s1 = await poll()
    assert board.borrow["WETH"] > indexes["WETH"].borrow_index
    assert s1.account.health_factor < s.account.health_factor
    assert close(books_health_factor(s1, board), s1.account.health_factor)

    await aave_chain.set_eth_price("2750.25")  # AAVE's prices move (both legs ETH: HF holds); the DEX does not
    await aave_chain.set_lst_rate("weETH", "1.02")  # the LST's rate falls: AAVE's price of it, and HF
    await aave_chain.set_swap_rate("WETH", "USDT", "2749.5")
    batch, s2 = await poll()
    assert board.lst["weETH"] == s2.oracle_rate("weETH") == Decimal("1.02")
    assert of(batch, PriceTicked)[0].price == Decimal("2749.5")
    assert s2.account.health_factor < s1.account.health_factor
    assert close(books_health_factor(s2, board), s2.account.health_factor)
    assert market.worst_health_factor is not None and market.worst_health_factor.value == s2.account.health_factor


@pytest.mark.asyncio
async def test_without_a_dex_read_the_tick_is_aave_s_eth_price_and_it_says_so(aave_chain: AaveChain) -> None:
    await aave_chain.set_eth_price("3100")
    with capture_logs() as logs:
        market, _ = source(aave_chain, aave_chain.accounts[2], dex=False)
    assert [e["event"] for e in logs] == ["dex_price_from_oracle"]
    batch = await market.poll(1)
    assert [(m.instrument_id, m.price) for m in of(batch, PriceTicked)] == [(DEX_INSTRUMENT, Decimal(3100))]
    assert market.health_factor is None  # no debt: no reading


@pytest.mark.asyncio
async def test_a_dex_without_a_rate_leaves_its_tick_out_and_says_so_once(aave_chain: AaveChain) -> None:
    market, _ = source(aave_chain, aave_chain.accounts[2])
    no_rate = aave_chain.swap_router.functions.setRate(aave_chain.reserve("WETH")["underlying"],
                                                       aave_chain.reserve("USDT")["underlying"], 0)
    await aave_chain.send(no_rate, aave_chain.book["admin"])
    with capture_logs() as logs:
        first, second = await market.poll(1), await market.poll(2)
    assert not of(first, PriceTicked) and not of(second, PriceTicked) and of(second, OracleRateReported)
    assert [e["event"] for e in logs] == ["dex_price_unavailable"]
    await aave_chain.set_swap_rate("WETH", "USDT", "3001")
    with capture_logs() as logs:
        assert of(await market.poll(3), PriceTicked)[0].price == Decimal(3001)
    assert [e["event"] for e in logs] == ["dex_price_recovered"]


def test_the_dex_fragment_is_the_router_s_own() -> None:
    router = json.loads(SWAP_ROUTER_ARTIFACT.read_text())["abi"]
    assert [f for f in router if f.get("name") == "rate"] == FIXED_RATE_ABI


@pytest.mark.asyncio
async def test_the_feed_polls_the_chain_survives_an_rpc_node_restart_and_recovers_its_values(
        aave_chain: AaveChain, aave_node: AnvilNode) -> None:
    user = await levered_user(aave_chain)
    await aave_chain.warp(30 * DAY)  # a state the world's own file does not have: a restart must keep it
    await aave_chain.set_lst_rate("weETH", "1.04")
    market, _ = source(aave_chain, user)
    board = MarketBoard()
    feed = LiveFeed({}, WallClock(), {}, board, assets=(), spot_venue="none", poll_interval_s=0.01,
                    request_timeout_s=5, gas_gwei=Decimal(12), chain=market)
    try:
        batch = await feed.next_batch()
        assert batch is not None
        before = market.snapshot
        assert before is not None
        (gas,) = of(batch, GasPriceReported)
        assert gas.gwei == market.gas_gwei(before) != Decimal(12)  # the chain's gas, not the fixed setting
        assert board.lst["weETH"] == Decimal("1.04") and "WETH" in board.borrow

        aave_node.save_state()
        aave_node.stop()
        with capture_logs() as logs:
            down = await feed.next_batch()
            again = await feed.next_batch()
        assert down is not None and again is not None
        # The feed goes on: the chain's last gas at the wall clock keeps market time moving; nothing else.
        assert [type(m) for m in down] == [GasPriceReported] == [type(m) for m in again]
        assert of(down, GasPriceReported)[0].gwei == gas.gwei
        health = feed.health["chain"]
        assert health.degraded and health.failures == 2 and "RetryableVenueError" in health.last_error
        assert str(aave_node.port) not in health.last_error
        warned = [e for e in logs if e["event"] == "market_venue_degraded"]
        assert len(warned) == 1 and warned[0]["venue"] == "chain"  # one log line, not one per poll
        stale = stale_series(board.ages_s(), RiskLimits(data_stale_after_s=Decimal("0.001")))
        assert "oracle:weETH/ETH" in stale and "aave:WETH" in stale and DEX_INSTRUMENT in stale
        assert "gas" not in stale

        aave_node.start_again()  # same port, same state
        with capture_logs() as logs:
            back = await feed.next_batch()
        assert back is not None and not feed.health["chain"].degraded
        assert [e["failed_polls"] for e in logs if e["event"] == "market_venue_recovered"] == [2]
        after = market.snapshot
        assert after is not None and after is not before  # read anew, by the same source and web3 session
        assert (after.block_number, after.account, after.holdings) == (before.block_number, before.account,
                                                                      before.holdings)
        assert board.lst["weETH"] == Decimal("1.04")
        assert board.borrow["WETH"] == before.reserves["WETH"].borrow_index
        assert not stale_series(board.ages_s(), RiskLimits(data_stale_after_s=Decimal(60)))
    finally:
        await feed.close()


@pytest.mark.asyncio
async def test_a_chain_that_never_answered_leaves_the_fixed_gas_tick(aave_chain: AaveChain,
                                                                     aave_node: AnvilNode) -> None:
    market, _ = source(aave_chain, aave_chain.accounts[1])
    aave_node.stop()
    with pytest.raises(RetryableVenueError):
        await market.poll(1)
    feed = LiveFeed({}, WallClock(), {}, MarketBoard(), assets=(), spot_venue="none", poll_interval_s=0.01,
                    request_timeout_s=5, gas_gwei=Decimal(12), chain=market)
    try:
        batch = await feed.next_batch()
    finally:
        await feed.close()
    assert batch is not None and [(type(m), m.gwei) for m in of(batch, GasPriceReported)] == [
        (GasPriceReported, Decimal(12))] and len(batch) == 1
    assert feed.health["chain"].degraded and feed.health["chain"].polls == 1
