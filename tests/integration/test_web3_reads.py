"""The chain adapter's reads (daemon/venues/web3_reads.py) against the real AAVE v3 market on anvil.

A position is built through the real Pool from an unlocked dev account (the test world's levers, web3 directly),
then read by `ChainReader`. The check is independent: HF, LTV, collateral and debt that AAVE computes
(`getUserAccountData`) must equal the domain's math (`daemon.domain.aave`) applied to the other reads — scaled
balances × live indexes × oracle prices — to 1e-9, after interest accrues and after the oracle moves.
"""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from daemon.domain.aave import AaveAccount, account_value, health_factor, loan_to_value, native_from_scaled
from daemon.errors import RetryableVenueError, VenueBadPayload
from daemon.venues.web3_reads import ABI_DIR, ChainReader, ChainSnapshot
from tests.fakes.chain import artifacts
from tests.fakes.chain.artifacts import aave_artifact
from tests.fakes.chain.chain import AaveChain, chain_addresses
from tests.fakes.chain.node import AnvilNode

pytestmark = pytest.mark.anvil

REL = Decimal("1e-9")
WAD = 10**18
DAY = 86_400


def close(a: Decimal, b: Decimal, rel: Decimal = REL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


class CountingProvider(AsyncHTTPProvider):
    """Counts HTTP round trips: a single request and a whole batch are one each."""

    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.round_trips = 0

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.round_trips += 1
        return await super().make_request(method, params)

    async def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        self.round_trips += 1
        return await super().make_batch_request(requests)


def reader(chain: AaveChain, wallet: str, batched: bool = True, lst: str = "weETH") -> ChainReader:
    return ChainReader(chain.w3, chain_addresses(chain.book, lst), wallet, batched=batched)


async def levered_user(chain: AaveChain, lst: str = "weETH", supply: int = 10, borrow: int = 9) -> str:
    """Supply `supply` LST, enter e-mode 1, borrow `borrow` WETH at the variable rate."""
    user = chain.accounts[1]
    await chain.supply(lst, user, supply * WAD)
    await chain.set_user_emode(user, 1)
    await chain.borrow("WETH", user, borrow * WAD)
    return user


def assert_matches_domain(s: ChainSnapshot, lst: str) -> None:
    """AAVE's own account figures equal the domain's math on the snapshot's other reads."""
    assert s.emode is not None
    collateral_reserve, debt_reserve = s.reserves[lst], s.reserves["WETH"]
    coll, debt = s.holdings[lst], s.holdings["WETH"]
    # balanceOf is the scaled balance at the live index (AAVE rounds half up to one unit of the token)
    assert close(native_from_scaled(coll.supplied_scaled, collateral_reserve.liquidity_index), coll.supplied)
    assert close(native_from_scaled(debt.borrowed_scaled, debt_reserve.borrow_index), debt.borrowed)

    value = account_value(AaveAccount(coll.supplied_scaled, debt.borrowed_scaled), collateral_reserve.liquidity_index,
                          debt_reserve.borrow_index, s.oracle_rate(lst))  # in ETH
    eth_usd = s.price("WETH")
    assert close(s.account.collateral, value.collateral * eth_usd)
    assert close(s.account.debt, value.debt * eth_usd)
    assert close(s.account.ltv, loan_to_value(value.collateral, value.debt))
    assert close(s.account.health_factor, health_factor(value.collateral, value.debt,
                                                        s.emode.params.liquidation_threshold))
    assert s.account.liquidation_threshold == s.emode.params.liquidation_threshold  # all collateral is in e-mode
    assert s.account.max_ltv == s.emode.params.ltv


@pytest.mark.asyncio
@pytest.mark.parametrize("lst", ["weETH", "wstETH"])
async def test_position_reads_equal_the_domain_math_through_interest_and_oracle_moves(
        aave_chain: AaveChain, lst: str) -> None:
    user = await levered_user(aave_chain, lst)
    read = reader(aave_chain, user, lst=lst)

    s0 = await read.read()
    assert s0.emode_category_id == 1 and s0.emode is not None and s0.emode.label == "ETH correlated"
    assert s0.emode.params.ltv == Decimal("0.93") and s0.emode.params.liquidation_bonus == Decimal("0.01")
    assert s0.holdings[lst].supplied_scaled == 10 and s0.holdings["WETH"].borrowed_scaled == 9
    assert s0.holdings["WETH"].free == 9  # the borrow arrived in the wallet
    assert s0.lst_rate == Decimal(aave_chain.book["reserves"][lst]["lst_rate"]) / WAD
    assert s0.oracle_rate(lst) == s0.lst_rate  # the LST's feed is ETH/USD × its rate (8 decimals, exact here)
    assert s0.reserves["WETH"].variable_borrow_rate > 0
    assert_matches_domain(s0, lst)

    await aave_chain.warp(90 * DAY)
    s1 = await read.read()
    assert s1.block_timestamp >= s0.block_timestamp + 90 * DAY
    assert s1.holdings["WETH"].borrowed > s0.holdings["WETH"].borrowed  # interest accrued on the debt
    assert s1.holdings["WETH"].borrowed_scaled == s0.holdings["WETH"].borrowed_scaled
    # the stored index waits for the next touch of the reserve; the live one (that values the balances) moved
    assert s1.reserves["WETH"].variable_borrow_index_ray == s0.reserves["WETH"].variable_borrow_index_ray
    assert s1.reserves["WETH"].borrow_index > s0.reserves["WETH"].borrow_index
    assert s1.account.health_factor < s0.account.health_factor
    assert_matches_domain(s1, lst)

    await aave_chain.set_eth_price("2500.5")  # both legs are ETH: value moves, HF does not
    s2 = await read.read()
    assert s2.price("WETH") == Decimal("2500.5") and s2.account.collateral < s1.account.collateral
    assert close(s2.account.health_factor, s1.account.health_factor, Decimal("1e-6"))
    assert_matches_domain(s2, lst)

    await aave_chain.set_lst_rate(lst, "1.01")  # the LST's own rate falls: AAVE's price of it, and HF, fall
    s3 = await read.read()
    assert s3.lst_rate == Decimal("1.01") and s3.oracle_rate(lst) == Decimal("1.01")
    assert s3.account.health_factor < s2.account.health_factor
    assert_matches_domain(s3, lst)

    await aave_chain.mint("WETH", user, WAD)  # the interest, on top of the 9 borrowed
    await aave_chain.repay("WETH", user)  # debt gone: HF is infinite, LTV 0, as in the domain
    await aave_chain.set_user_emode(user, 0)
    s4 = await read.read()
    assert s4.account.debt == 0 and s4.account.ltv == 0 and s4.account.health_factor == Decimal("Infinity")
    assert s4.emode_category_id == 0 and s4.emode is None
    assert s4.account.max_ltv == Decimal(aave_chain.book["reserves"][lst]["ltv"]) / 10_000  # the reserve's own


@pytest.mark.asyncio
async def test_wallet_balances_prices_and_gas(aave_chain: AaveChain) -> None:
    user = aave_chain.accounts[2]
    await aave_chain.mint("USDT", user, 1_234_567_891)
    await aave_chain.supply("WETH", user, 3 * WAD)
    s = await reader(aave_chain, user).read()
    assert s.eth_balance_wei == await aave_chain.w3.eth.get_balance(AsyncWeb3.to_checksum_address(user))
    assert s.holdings["USDT"].free == Decimal("1234.567891")
    assert s.holdings["WETH"].free == 0 and s.holdings["WETH"].supplied == 3
    assert s.account.collateral == 9_000 and s.account.health_factor == Decimal("Infinity")
    assert s.emode_category_id == 0 and s.emode is None
    assert s.price("USDT") == 1 and s.price("WETH") == 3_000
    assert s.price("weETH") == Decimal("3180")  # 3000 × 1.06
    assert s.block_number == await aave_chain.w3.eth.block_number
    assert s.gas.next_base_fee_wei > 0 and len(s.gas.base_fees_wei) == len(s.gas.gas_used_ratios) + 1
    assert s.gas.priority_fee_wei(50) >= 0 and s.gas.reward_percentiles == (10, 50, 90)


@pytest.mark.asyncio
async def test_one_batch_replaces_dozens_of_round_trips(aave_chain: AaveChain) -> None:
    user = await levered_user(aave_chain)
    snapshots: dict[bool, ChainSnapshot] = {}
    trips: dict[bool, int] = {}
    sent: dict[bool, int] = {}
    for batched in (True, False):
        provider = CountingProvider(aave_chain.url)
        w3 = AsyncWeb3(provider)
        try:
            r = ChainReader(w3, chain_addresses(aave_chain.book), user, batched=batched)
            snapshots[batched] = await r.read()
            trips[batched] = provider.round_trips
            assert r.round_trips == snapshots[batched].round_trips
            sent[batched] = r.round_trips
        finally:
            await provider.disconnect()
    assert trips[True] == sent[True] == 1
    # 41 reads with 4 reserves, one request each; on the wire web3's validation middleware adds two eth_chainId
    # per eth_call (115 in all): the batch carries the same 41 reads in one round trip and none of those.
    assert sent[False] == 41 and trips[False] >= sent[False]
    assert replace(snapshots[False], round_trips=1) == snapshots[True]  # same block, same answers


class MiningProvider(CountingProvider):
    """Mines a block on the node after the `after`-th request: a block landing in the middle of a read."""

    def __init__(self, url: str, after: int) -> None:
        super().__init__(url)
        self.after = after

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        response = await super().make_request(method, params)
        if self.round_trips == self.after:
            await super().make_request(RPCEndpoint("evm_mine"), [])
        return response


@pytest.mark.asyncio
async def test_a_block_mid_read_is_read_again_pinned_to_one_block(aave_chain: AaveChain) -> None:
    user = await levered_user(aave_chain)
    start = await aave_chain.w3.eth.block_number
    provider = MiningProvider(aave_chain.url, after=3)
    try:
        r = ChainReader(AsyncWeb3(provider), chain_addresses(aave_chain.book), user, batched=False)
        s = await r.read()
    finally:
        await provider.disconnect()
    assert s.block_number == start  # the header's block, not the one mined during the first pass
    assert s.round_trips == 2 * 41  # the whole read, twice
    assert await aave_chain.w3.eth.block_number == start + 1


@pytest.mark.asyncio
async def test_an_unreachable_node_is_retryable_and_the_url_stays_out(aave_chain: AaveChain,
                                                                       aave_node: AnvilNode) -> None:
    r = reader(aave_chain, aave_chain.accounts[1])
    aave_node.stop()
    with pytest.raises(RetryableVenueError) as info:
        await r.read()
    assert str(aave_node.port) not in str(info.value) and "127.0.0.1" not in str(info.value)


@pytest.mark.asyncio
async def test_reads_resume_when_the_node_is_back(aave_chain: AaveChain, aave_node: AnvilNode,
                                                 aave_world: Any) -> None:
    r = reader(aave_chain, aave_chain.accounts[1])
    before = await r.read()
    aave_node.stop()
    with pytest.raises(RetryableVenueError):
        await r.read()
    with AnvilNode(load_state=aave_world.state, timestamp=aave_world.boot_timestamp, port=aave_node.port):
        after = await r.read()  # the same reader and web3 session: nothing to rebuild
    assert after.account == before.account and after.holdings == before.holdings


@pytest.mark.parametrize("name, artifact", [("aave_pool", "IPool"), ("aave_oracle", "IAaveOracle"),
                                            ("erc20", "IERC20Detailed")])
def test_the_committed_abi_fragments_are_the_packages_own(name: str, artifact: str) -> None:
    """daemon/venues/abi/ is what the daemon ships (no node_modules in production): each entry must be the one in
    npm @aave/core-v3, so a version bump that changes a signature fails here."""
    ours = json.loads((ABI_DIR / f"{name}.json").read_text())
    theirs = {f["name"]: f for f in aave_artifact(artifact)["abi"] if f.get("type") == "function"}
    for fragment in ours:
        assert fragment == theirs[fragment["name"]]


def test_the_lst_rate_fragments_are_the_test_tokens_interface(aave_world: Any) -> None:
    ours = {f["name"]: f for f in json.loads((ABI_DIR / "lst_rate.json").read_text())}
    for contract, fn in (("TestWeETH", "getRate"), ("TestWstETH", "stEthPerToken")):
        theirs = next(f for f in aave_world.contracts[contract]["abi"] if f.get("name") == fn)
        assert ours[fn] == theirs


@pytest.mark.asyncio
async def test_a_category_outside_the_configured_ones_costs_one_more_round_trip(aave_chain: AaveChain) -> None:
    configurator = aave_chain.contract("PoolConfigurator", aave_chain.book["PoolConfigurator"])
    zero = "0x0000000000000000000000000000000000000000"
    await aave_chain.send(configurator.functions.setEModeCategory(2, 9000, 9200, 10200, zero, "stables"),
                          aave_chain.book["admin"])
    user = aave_chain.accounts[3]
    await aave_chain.supply("USDT", user, 1_000 * 10**6)
    await aave_chain.set_user_emode(user, 2)
    s = await reader(aave_chain, user).read()  # the reader knows category 1 only
    assert s.round_trips == 2
    assert s.emode is not None and (s.emode.id, s.emode.label, s.emode.ltv_bps) == (2, "stables", 9000)
    assert s.emode.params.liquidation_bonus == Decimal("0.02")


@pytest.mark.asyncio
async def test_an_answer_that_does_not_decode_is_a_bad_payload(aave_chain: AaveChain) -> None:
    addresses = replace(chain_addresses(aave_chain.book), pool=aave_chain.accounts[5])  # no code there
    with pytest.raises(VenueBadPayload, match="chain read failed"):
        await ChainReader(aave_chain.w3, addresses, aave_chain.accounts[1]).read()


@pytest.mark.asyncio
async def test_the_worlds_dex_swaps_at_the_oracle_rates_until_a_test_moves_them(aave_chain: AaveChain) -> None:
    user = aave_chain.accounts[4]
    await aave_chain.mint("weETH", user, 2 * WAD)
    assert await aave_chain.swap("weETH", "WETH", user, WAD) == WAD * 106 // 100  # the LST's rate, 1.06
    assert await aave_chain.swap("WETH", "USDT", user, WAD) == 3_000 * 10**6
    await aave_chain.set_swap_rate("weETH", "WETH", "1.05")
    await aave_chain.set_swap_fee_bps(30)
    assert await aave_chain.swap("weETH", "WETH", user, WAD) == WAD * 105 // 100 * 9970 // 10_000


def test_without_node_modules_the_world_says_to_run_npm_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("ANVIL_BIN", str(tmp_path / "anvil"))
    with pytest.raises(artifacts.ChainToolsMissing, match="run `npm ci`"):
        artifacts.anvil_binary()
    monkeypatch.setattr(artifacts, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(artifacts.ChainToolsMissing, match="run `npm ci`"):
        artifacts.npm_versions()
