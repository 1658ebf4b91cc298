"""The chain adapter's transactions (daemon/venues/web3_tx.py) against the real AAVE v3 market on anvil.

Everything the sender sends is signed locally with a dev account's key (anvil's public test mnemonic) and goes
through the real Pool of the fixture world (`aave_chain`). The world's levers (unlocked dev accounts) only mint
tokens and read state; anvil's `evm_setAutomine` / `evm_mine` make a transaction stay pending on demand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound
from web3.providers import AsyncHTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from daemon.errors import RetryableVenueError, VenueInsufficientFunds
from daemon.venues.web3_reverts import AAVE_ERRORS, FLASH_LEVERAGE_ERRORS, decode_revert
from daemon.venues.web3_tx import (
    FeeAboveCap,
    SentTx,
    TxCall,
    TxNotMined,
    TxPolicy,
    TxReverted,
    TxSender,
    TxState,
    TxStuck,
    UnknownTxOutcome,
    _Signer,
)
from tests.fakes.chain.artifacts import aave_artifact
from tests.fakes.chain.chain import AaveChain, dev_key
from tests.fakes.chain.node import free_port

pytestmark = pytest.mark.anvil

ROOT = Path(__file__).resolve().parents[2]
USER = 1
GWEI = 10**9
POLICY = TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01, receipt_timeout_s=30)
SEEN_ERRORS: list[BaseException] = []  # every error a test provoked: none may carry the key
OPEN: list[AsyncHTTPProvider] = []  # the senders' providers, closed after each test


@pytest_asyncio.fixture(autouse=True)
async def _close_providers() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().disconnect()


class LossyProvider(AsyncHTTPProvider):
    """Loses the answer to `eth_sendRawTransaction`: after the node got it (`deliver`) or before (not)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.lose: str | None = None  # "after" | "before"
        self.raw_sent: list[str] = []  # every submission, answered or not
        self.down_after_send = 0  # requests after the next submission that find the node gone (a connection error)

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if self.down_after_send < 0:
            self.down_after_send += 1
            raise aiohttp.ClientConnectionError("the node is gone")
        if method == "eth_sendRawTransaction":
            self.raw_sent.append(str(params[0]))
            self.down_after_send = -self.down_after_send
        if method == "eth_sendRawTransaction" and self.lose is not None:
            lose, self.lose = self.lose, None
            if lose == "after":
                await super().make_request(method, params)
            raise TimeoutError("the answer was lost")
        return await super().make_request(method, params)


def sender(chain: AaveChain, policy: TxPolicy = POLICY, persisted: list[SentTx] | None = None,
           ) -> tuple[TxSender, LossyProvider]:
    provider = LossyProvider(chain.url)
    OPEN.append(provider)

    async def persist(sent: SentTx) -> None:
        if persisted is not None:
            persisted.append(sent)

    return TxSender(AsyncWeb3(provider), dev_key(USER), policy, persist), provider


def supply_call(chain: AaveChain, who: str, amount: int, symbol: str = "WETH") -> TxCall:
    asset = chain.reserve(symbol)["underlying"]
    return TxCall(chain.book["Pool"], bytes.fromhex(chain.pool.encode_abi("supply", [asset, amount, who, 0])[2:]),
                  label=f"supply {symbol}")


def approve_call(chain: AaveChain, amount: int, symbol: str = "WETH") -> TxCall:
    data = chain.token(symbol).encode_abi("approve", [chain.book["Pool"], amount])
    return TxCall(chain.reserve(symbol)["underlying"], bytes.fromhex(data[2:]), label=f"approve {symbol}")


def borrow_call(chain: AaveChain, who: str, amount: int, symbol: str = "WETH") -> TxCall:
    data = chain.pool.encode_abi("borrow", [chain.reserve(symbol)["underlying"], amount, 2, 0, who])
    return TxCall(chain.book["Pool"], bytes.fromhex(data[2:]), label=f"borrow {symbol}")


async def nonce(chain: AaveChain, who: str, block: str = "latest") -> int:
    return int(await chain.w3.eth.get_transaction_count(AsyncWeb3.to_checksum_address(who), block))  # type: ignore[arg-type]


async def supplied(chain: AaveChain, who: str, amount: int) -> TxSender:
    """The user holds `amount` WETH supplied, through the sender."""
    s, _ = sender(chain)
    await chain.mint("WETH", who, amount)
    await s.transact(approve_call(chain, amount))
    await s.transact(supply_call(chain, who, amount))
    return s


@pytest.mark.asyncio
async def test_a_supply_signed_locally_lands_and_is_confirmed(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    persisted: list[SentTx] = []
    s, _ = sender(chain, TxPolicy(max_fee_cap_wei=500 * GWEI, confirmations=3, poll_interval_s=0.01), persisted)
    assert s.address == who
    amount = chain.units("WETH", 5)
    await chain.mint("WETH", who, amount)
    start = await nonce(chain, who)

    async def miner() -> None:  # automine mines the transaction itself; depth needs blocks after it
        while True:
            await asyncio.sleep(0.02)
            await chain.rpc("evm_mine", [])

    mining = asyncio.create_task(miner())
    try:
        await s.transact(approve_call(chain, amount))
        receipt = await s.transact(supply_call(chain, who, amount))
    finally:
        mining.cancel()
    assert receipt["status"] == 1
    assert await chain.w3.eth.block_number - receipt["blockNumber"] + 1 >= 3
    assert receipt["from"] == who
    a_weth = chain.contract("AToken", chain.reserve("WETH")["aToken"])
    assert await a_weth.functions.balanceOf(who).call() == amount
    assert await nonce(chain, who) == start + 2
    assert [p.nonce for p in persisted] == [start, start + 1]  # each handed to the journal hook before it left
    assert s.nonces.in_flight == {}
    tx = await chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 2 and tx["gas"] > receipt["gasUsed"]  # EIP-1559, estimate with its margin


@pytest.mark.asyncio
async def test_a_borrow_breaching_ltv_is_named_and_changes_nothing(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s = await supplied(chain, who, chain.units("WETH", 10))
    before = await chain.pool.functions.getUserAccountData(who).call()
    start = await nonce(chain, who, "pending")
    with pytest.raises(TxReverted) as caught:
        await s.transact(borrow_call(chain, who, chain.units("WETH", 9)))  # WETH's LTV is below 90 %
    SEEN_ERRORS.append(caught.value)
    assert caught.value.reason == "COLLATERAL_CANNOT_COVER_NEW_BORROW"
    assert caught.value.revert.code == "36" and caught.value.tx_hash is None
    assert "COLLATERAL_CANNOT_COVER_NEW_BORROW" in str(caught.value)
    assert await nonce(chain, who, "pending") == start  # nothing was sent
    assert await chain.pool.functions.getUserAccountData(who).call() == before


@pytest.mark.asyncio
async def test_a_revert_mined_is_named_from_a_replay(aave_chain: AaveChain) -> None:
    """Given gas (no estimate), the borrow is mined and fails: the receipt has no reason, the replay names it."""
    chain, who = aave_chain, aave_chain.accounts[USER]
    s = await supplied(chain, who, chain.units("WETH", 10))
    before = await chain.pool.functions.getUserAccountData(who).call()
    call = borrow_call(chain, who, chain.units("WETH", 9))
    with pytest.raises(TxReverted) as caught:
        await s.transact(TxCall(call.to, call.data, label=call.label, gas=600_000))
    SEEN_ERRORS.append(caught.value)
    assert caught.value.reason == "COLLATERAL_CANNOT_COVER_NEW_BORROW"
    assert caught.value.tx_hash is not None
    receipt = await chain.w3.eth.get_transaction_receipt(caught.value.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 0
    after = await chain.pool.functions.getUserAccountData(who).call()
    assert after == before


@pytest.mark.asyncio
async def test_the_fee_cap_refuses_and_sends_nothing(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    await chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(40 * GWEI)])
    await chain.rpc("evm_mine", [])  # the next base fee follows from this block's (empty: it falls 12.5 %)
    s, _ = sender(chain, TxPolicy(max_fee_cap_wei=20 * GWEI))
    start = await nonce(chain, who, "pending")
    with pytest.raises(FeeAboveCap) as caught:
        await s.send(approve_call(chain, 1))
    SEEN_ERRORS.append(caught.value)
    assert caught.value.cap_wei == 20 * GWEI and caught.value.fee_wei > 20 * GWEI
    assert "above the cap of 20 gwei" in str(caught.value)
    assert re.search(r"gas fee 3\d\.\d+ gwei", str(caught.value))
    assert await nonce(chain, who, "pending") == start
    assert s.nonces.in_flight == {}
    # Under the cap, the same call goes (the max fee offered never exceeds the cap).
    receipt = await sender(chain, TxPolicy(max_fee_cap_wei=60 * GWEI))[0].transact(approve_call(chain, 1))
    tx = await chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["maxFeePerGas"] <= 60 * GWEI


@pytest.mark.asyncio
async def test_a_stuck_transaction_is_replaced_with_a_bumped_fee(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s, _ = sender(chain)
    await chain.mint("WETH", who, 1)
    await chain.rpc("evm_setAutomine", [False])
    start = await nonce(chain, who)
    stuck = await s.send(approve_call(chain, 1))
    assert stuck.nonce == start
    assert (await s.resolve(stuck)).state is TxState.PENDING
    with pytest.raises(TxNotMined) as caught:
        await s.wait(stuck, timeout_s=0.05)
    SEEN_ERRORS.append(caught.value)

    again = await s.replace(stuck)
    assert again.nonce == stuck.nonce and again.tx_hash != stuck.tx_hash
    assert again.replaces == (stuck.tx_hash,)
    assert again.fees.max_priority_fee_per_gas * 10 >= stuck.fees.max_priority_fee_per_gas * 11
    assert again.fees.max_fee_per_gas * 10 >= stuck.fees.max_fee_per_gas * 11
    assert s.nonces.in_flight[start].tx_hash == again.tx_hash

    await chain.rpc("evm_mine", [])
    receipt = await s.wait(again)
    assert receipt["transactionHash"].to_0x_hex() == again.tx_hash
    assert await nonce(chain, who) == start + 1
    assert (await s.resolve(again)).state is TxState.MINED
    # The first attempt alone: its hash never mined, its nonce is used by the replacement — never resent.
    assert (await s.resolve(stuck)).state is TxState.NONCE_USED
    block = await chain.w3.eth.get_block(receipt["blockNumber"])
    assert len(block["transactions"]) == 1


@pytest.mark.asyncio
async def test_a_lost_answer_is_found_by_hash_not_resent(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s, provider = sender(chain)
    start = await nonce(chain, who)
    provider.lose = "after"  # the node got it; its answer is lost
    with pytest.raises(UnknownTxOutcome) as caught:
        await s.send(approve_call(chain, 7))
    SEEN_ERRORS.append(caught.value)
    sent = caught.value.sent
    assert caught.value.client_order_id == sent.tx_hash and sent.nonce == start
    assert s.nonces.in_flight[start] == sent  # still tracked: the next send must not reuse its nonce
    # Anvil mines an automined transaction just after answering it: under load the first look can still find it
    # pending (CI saw it), which is a right answer too. It must become MINED without anything being sent again.
    resolution = await s.resolve(sent)
    for _ in range(100):
        if resolution.state is not TxState.PENDING:
            break
        await asyncio.sleep(0.05)
        resolution = await s.resolve(sent)
    assert resolution.state is TxState.MINED and resolution.receipt is not None
    assert resolution.receipt["transactionHash"].to_0x_hex() == sent.tx_hash
    assert await nonce(chain, who) == start + 1  # it landed once
    weth = chain.token("WETH")
    assert await weth.functions.allowance(who, chain.book["Pool"]).call() == 7


@pytest.mark.asyncio
async def test_a_lost_answer_pending_or_never_received(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s, provider = sender(chain)
    await chain.rpc("evm_setAutomine", [False])
    start = await nonce(chain, who)
    provider.lose = "after"
    with pytest.raises(UnknownTxOutcome) as first:
        await s.send(approve_call(chain, 1))
    assert (await s.resolve(first.value.sent)).state is TxState.PENDING
    # A second call meanwhile takes the next nonce, not the lost one's.
    provider.lose = "before"  # this one never reached the node
    with pytest.raises(UnknownTxOutcome) as second:
        await s.send(approve_call(chain, 2))
    SEEN_ERRORS.extend([first.value, second.value])
    assert second.value.sent.nonce == start + 1
    assert (await s.resolve(second.value.sent)).state is TxState.DROPPED
    await s.rebroadcast(second.value.sent)  # the same signed bytes: same hash, cannot land twice
    await s.rebroadcast(second.value.sent)  # "already known": as sent
    await chain.rpc("evm_mine", [])
    for lost in (first.value.sent, second.value.sent):
        assert (await s.wait(lost))["status"] == 1
    assert await nonce(chain, who) == start + 2
    weth = chain.token("WETH")
    assert await weth.functions.allowance(who, chain.book["Pool"]).call() == 2


# --- transact() as a policy ---------------------------------------------------------------------------------------


async def pool_hashes(chain: AaveChain, who: str) -> dict[int, str]:
    """The node's pending pool for `who`: nonce → hash."""
    content = await chain.rpc("txpool_content", [])
    pending: dict[str, dict[str, Any]] = content["pending"]
    mine = next((txs for address, txs in pending.items() if address.lower() == who.lower()), {})
    return {int(n): tx["hash"] for n, tx in mine.items()}


@pytest.mark.asyncio
async def test_transact_replaces_a_stuck_transaction_by_itself_and_it_lands_once(aave_chain: AaveChain) -> None:
    """Automine off; the test's miner mines only once the pool's transaction at our nonce has changed (the
    replacement arrived): `transact` must replace it by itself after `stuck_after_s`."""
    chain, who = aave_chain, aave_chain.accounts[USER]
    persisted: list[SentTx] = []  # the journal hook's view: the first attempt, before it left
    s, provider = sender(chain, TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01, stuck_after_s=0.3),
                         persisted)
    start = await nonce(chain, who)
    await chain.rpc("evm_setAutomine", [False])
    first: list[str] = []

    async def miner() -> None:
        while True:
            await asyncio.sleep(0.01)
            pending = await pool_hashes(chain, who)
            if persisted and start in pending and pending[start] != persisted[0].tx_hash:
                first.append(persisted[0].tx_hash)
                await chain.rpc("evm_mine", [])
                return

    mining = asyncio.create_task(miner())
    try:
        with structlog.testing.capture_logs() as logs:
            receipt = await s.transact(replace(approve_call(chain, 8), ref="op-8"))
    finally:
        mining.cancel()
    landed = receipt["transactionHash"].to_0x_hex()
    assert first and landed != first[0] and receipt["status"] == 1
    assert len(provider.raw_sent) == 2  # the original and one replacement, nothing more
    replaced = [e for e in logs if e["event"] == "tx_replaced"]
    assert [(e["nonce"], e["tx_hash"], e["replaces"], e["ref"]) for e in replaced] == [(start, landed, first, "op-8")]
    assert await nonce(chain, who) == start + 1
    with pytest.raises(TransactionNotFound):  # the first attempt never mined: its nonce went to the replacement
        await chain.w3.eth.get_transaction_receipt(first[0])  # type: ignore[arg-type]
    assert len((await chain.w3.eth.get_block(receipt["blockNumber"]))["transactions"]) == 1
    assert await chain.token("WETH").functions.allowance(who, chain.book["Pool"]).call() == 8
    assert s.nonces.in_flight == {}


@pytest.mark.asyncio
async def test_transact_gives_up_naming_nonce_and_hash_and_keeps_following_it(aave_chain: AaveChain,
                                                                              tmp_path: Path) -> None:
    from daemon.venues.web3_tx_journal import TxJournal

    chain, who = aave_chain, aave_chain.accounts[USER]
    provider = LossyProvider(chain.url)
    OPEN.append(provider)
    journal = TxJournal(tmp_path / "txs.sqlite")
    s = TxSender(AsyncWeb3(provider), dev_key(USER), TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01,
                                                              stuck_after_s=0.05, max_replacements=1),
                 journal=journal)
    start = await nonce(chain, who)
    await chain.rpc("evm_setAutomine", [False])
    with pytest.raises(TxStuck) as caught:
        await s.transact(approve_call(chain, 4))
    SEEN_ERRORS.append(caught.value)
    stuck = caught.value.sent
    assert stuck.nonce == start and len(stuck.replaces) == 1
    assert f"nonce {start}" in str(caught.value) and stuck.tx_hash in str(caught.value)
    assert stuck.replaces[0] in str(caught.value)
    assert not isinstance(caught.value, RetryableVenueError)  # never an invitation to build it again
    assert s.nonces.in_flight[start] == stuck
    assert journal.in_flight(await chain.w3.eth.chain_id, who) == [stuck]  # a restart would follow it too
    await chain.rpc("evm_mine", [])
    assert (await s.follow(stuck))["transactionHash"].to_0x_hex() == stuck.tx_hash
    assert await nonce(chain, who) == start + 1 and len(provider.raw_sent) == 2
    assert journal.in_flight(await chain.w3.eth.chain_id, who) == []
    assert sorted(r["state"] for r in journal.rows(who)) == ["mined", "replaced"]
    journal.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("lose", ["before", "after"])
async def test_transact_resolves_a_lost_answer_and_rebroadcasts_only_a_dropped_one(aave_chain: AaveChain,
                                                                                   lose: str) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s, provider = sender(chain)
    start = await nonce(chain, who)
    provider.lose = lose
    receipt = await s.transact(approve_call(chain, 12))
    assert receipt["status"] == 1
    assert await nonce(chain, who) == start + 1  # landed once
    # Lost before the node got it: resolved DROPPED, the same bytes sent again; after: found, nothing resent.
    assert len(provider.raw_sent) == (2 if lose == "before" else 1)
    assert len(set(provider.raw_sent)) == 1
    assert await chain.token("WETH").functions.allowance(who, chain.book["Pool"]).call() == 12


@pytest.mark.asyncio
async def test_transact_waits_for_the_fee_to_fall_under_the_cap_saying_so_once(aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    await chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(40 * GWEI)])
    await chain.rpc("evm_mine", [])  # the next base fee: 35 gwei; each empty block after it, 12.5 % less
    start = await nonce(chain, who)
    patient = TxPolicy(max_fee_cap_wei=30 * GWEI, poll_interval_s=0.01, fee_wait_s=30, fee_retry_s=0.02)
    s, _ = sender(chain, patient)

    async def blocks() -> None:
        await asyncio.sleep(0.1)
        for _ in range(3):
            await chain.rpc("evm_mine", [])

    falling = asyncio.create_task(blocks())
    with structlog.testing.capture_logs() as logs:
        receipt = await s.transact(approve_call(chain, 2))
    await falling
    waits = [e for e in logs if e["event"] == "tx_waiting_for_fee_under_cap"]
    assert len(waits) == 1 and waits[0]["cap_gwei"] == "30" and waits[0]["label"] == "approve WETH"
    assert receipt["status"] == 1 and await nonce(chain, who) == start + 1
    tx = await chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["maxFeePerGas"] <= 30 * GWEI

    # No fall within fee_wait_s: FeeAboveCap, saying it waited, nothing sent.
    await chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(40 * GWEI)])
    await chain.rpc("evm_mine", [])
    impatient, _ = sender(chain, TxPolicy(max_fee_cap_wei=30 * GWEI, fee_wait_s=0.1, fee_retry_s=0.02))
    with pytest.raises(FeeAboveCap) as caught:
        await impatient.transact(approve_call(chain, 3))
    SEEN_ERRORS.append(caught.value)
    assert "after waiting" in str(caught.value)
    assert await nonce(chain, who, "pending") == start + 1



@pytest.mark.asyncio
async def test_transact_rides_out_a_node_that_stops_answering_and_never_invites_a_resend(
        aave_chain: AaveChain) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    s, provider = sender(chain)
    start = await nonce(chain, who)
    provider.down_after_send = 20  # the next 20 requests after the submission fail: receipts, resolve, ...
    receipt = await s.transact(approve_call(chain, 13))
    assert receipt["status"] == 1 and provider.down_after_send == 0
    assert len(provider.raw_sent) == 1 and await nonce(chain, who) == start + 1

    # Gone for good: after receipt_timeout_s it is an unknown outcome (resolve it), not a plain retryable error.
    await chain.rpc("evm_setAutomine", [False])
    brief, provider = sender(chain, TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01, receipt_timeout_s=0.2,
                                             stuck_after_s=0.05))
    provider.down_after_send = 10**6
    with pytest.raises(UnknownTxOutcome) as caught:
        await brief.transact(approve_call(chain, 14))
    SEEN_ERRORS.append(caught.value)
    assert "did not answer" in str(caught.value) and caught.value.sent.nonce == start + 1
    assert brief.nonces.in_flight[start + 1] == caught.value.sent


@pytest.mark.asyncio
async def test_the_key_never_appears(aave_chain: AaveChain, caplog: pytest.LogCaptureFixture) -> None:
    """Every error the sender raises here (and those the tests before provoked), its reprs and the debug log."""
    caplog.set_level(logging.DEBUG)
    chain, who = aave_chain, aave_chain.accounts[USER]
    key = dev_key(USER)
    bare = key.removeprefix("0x")
    s, provider = sender(chain)
    seen: list[BaseException] = list(SEEN_ERRORS)
    sent = await s.send(approve_call(chain, 3))
    for attempt in (
        lambda: s.transact(borrow_call(chain, who, 1)),  # no collateral: a named revert
        lambda: sender(chain, TxPolicy(max_fee_cap_wei=1))[0].send(approve_call(chain, 1)),  # the fee cap
        lambda: s.wait(SentTx("ghost", 99, "0x" + "00" * 32, b"", who, b"", 0, 21_000, sent.fees, 0.0),
                       timeout_s=0.01),  # never mined
    ):
        with pytest.raises(Exception) as caught:
            await attempt()
        seen.append(caught.value)
    provider.lose = "after"
    with pytest.raises(UnknownTxOutcome) as lost:
        await s.send(approve_call(chain, 4))
    seen.append(lost.value)
    with pytest.raises(ValueError) as bad:
        _Signer(bare[:-2] + "zz")  # not a key: the error must not echo what it was given
    seen.append(bad.value)
    texts = [repr(s), str(s), repr(s._signer), repr(sent), repr(lost.value.sent), caplog.text]
    texts += [f"{e!s} {e!r} {e.args!r} {e.__cause__!r} {e.__context__!r}" for e in seen]
    for text in texts:
        assert bare.lower() not in text.lower()
        assert bare[:-2].lower() not in text.lower()
    with pytest.raises(TypeError):
        pickle.dumps(s._signer)


def test_the_aave_table_is_errors_sol() -> None:
    source = (ROOT / "node_modules/@aave/core-v3/contracts/protocol/libraries/helpers/Errors.sol").read_text()
    declared = dict((code, name) for name, code in re.findall(r"constant (\w+) = '(\d+)'", source))
    assert declared == AAVE_ERRORS


def test_the_executor_errors_are_its_abi() -> None:
    abi = json.loads((ROOT / "deploy/contracts/artifacts/FlashLeverage.json").read_text())["abi"]
    errors = {f"{e['name']}({','.join(i['type'] for i in e['inputs'])})" for e in abi if e["type"] == "error"}
    assert errors == set(FLASH_LEVERAGE_ERRORS)
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    data = keccak(text="LtvOutOfBounds(uint256,uint256,uint256)")[:4] + encode(["uint256"] * 3, [9, 1, 8])
    revert = decode_revert(data)
    assert revert.reason == "LtvOutOfBounds" and revert.args == (9, 1, 8)
    assert aave_artifact("Pool")  # the npm artifacts are there (the world was built from them)


@pytest.mark.asyncio
async def test_a_wallet_without_gas_money_is_refused_and_frees_its_nonce(aave_chain: AaveChain) -> None:
    chain = aave_chain
    provider = AsyncHTTPProvider(chain.url)
    OPEN.append(provider)
    s = TxSender(AsyncWeb3(provider), "0x" + "42" * 32, POLICY)  # a key nobody funded
    with pytest.raises(VenueInsufficientFunds) as caught:
        await s.send(approve_call(chain, 1))
    assert "insufficient funds" in caught.value.reason
    assert s.nonces.in_flight == {}
    assert "42" * 32 not in str(caught.value)


@pytest.mark.asyncio
async def test_a_node_down_is_retryable_and_names_no_url(aave_chain: AaveChain) -> None:
    port = free_port()
    provider = AsyncHTTPProvider(f"http://127.0.0.1:{port}/secret-path", request_kwargs={"timeout": 2})
    OPEN.append(provider)
    s = TxSender(AsyncWeb3(provider), dev_key(USER), POLICY)
    with pytest.raises(RetryableVenueError) as caught:
        await s.send(approve_call(aave_chain, 1))
    assert not isinstance(caught.value, UnknownTxOutcome)  # nothing was signed: plainly retryable
    assert "secret-path" not in str(caught.value) and str(port) not in str(caught.value)


@pytest.mark.asyncio
async def test_a_restart_restores_what_was_in_flight_from_the_hook(aave_chain: AaveChain) -> None:
    """What `persist` was handed (the journal's future record) is given to a new sender: it is followed, not lost
    or repeated, and the new sender's next nonce comes after it."""
    chain, who = aave_chain, aave_chain.accounts[USER]
    persisted: list[SentTx] = []
    first, _ = sender(chain, persisted=persisted)
    await chain.rpc("evm_setAutomine", [False])
    start = await nonce(chain, who)
    await first.send(approve_call(chain, 5))
    assert [p.nonce for p in persisted] == [start]

    restarted, _ = sender(chain)
    restarted.nonces.restore(persisted)
    assert (await restarted.resolve(persisted[0])).state is TxState.PENDING
    later = await restarted.send(approve_call(chain, 6))
    assert later.nonce == start + 1
    await chain.rpc("evm_mine", [])
    assert (await restarted.wait(persisted[0]))["status"] == 1
    assert (await restarted.wait(later))["status"] == 1
    assert await nonce(chain, who) == start + 2
    assert await chain.token("WETH").functions.allowance(who, chain.book["Pool"]).call() == 6


@pytest.mark.asyncio
async def test_the_executors_custom_error_is_named(aave_chain: AaveChain) -> None:
    """FlashLeverage owned by another account: our call reverts `NotOwner(caller)`, named from its selector."""
    chain, who = aave_chain, aave_chain.accounts[USER]
    owner = chain.accounts[2]
    art = json.loads((ROOT / "deploy/contracts/artifacts/FlashLeverage.json").read_text())
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    weth = chain.reserve("WETH")["underlying"]
    tx = await factory.constructor(owner, chain.book["Pool"], weth, chain.book["SwapRouter"]).transact({"from": owner})
    receipt = await chain.w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.01)
    executor = chain.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
    s, _ = sender(chain)
    call = TxCall(executor.address, bytes.fromhex(executor.encode_abi("sweep", [weth])[2:]), label="sweep")
    with pytest.raises(TxReverted) as caught:
        await s.send(call)
    assert caught.value.reason == "NotOwner"
    assert caught.value.revert.args == (who,)
    assert s.nonces.in_flight == {}

