"""A restart in the middle of a pending transaction neither loses nor repeats it (issue 13 §3), with a real process.

A child process (`tx_restart_child.py`) signs and sends through a `TxSender` on a transaction journal, with anvil's
automine off, and is killed with SIGKILL while its transactions are pending. A fresh `TxSender` on the same journal
file then recovers before it sends anything: a transaction mined while nobody watched comes back with its receipt
(to book, with its operation's ref), a pending one is followed to its receipt, one the node lost is rebroadcast —
the same signed bytes, the same hash — and each lands exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from daemon.errors import VenueInsufficientFunds
from daemon.venues.web3_tx import TxCall, TxJournalUnwritable, TxPolicy, TxSender, TxState
from daemon.venues.web3_tx_journal import TxJournal, TxJournalCorrupt
from tests.fakes.chain.chain import AaveChain, dev_key

pytestmark = [pytest.mark.anvil]

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("tx_restart_child.py")
USER = 1
POLICY = TxPolicy(max_fee_cap_wei=500 * 10**9, poll_interval_s=0.01, receipt_timeout_s=30)


class CountingProvider(AsyncHTTPProvider):
    """Keeps every raw transaction handed to the node: the restarted sender must send none twice."""

    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.raw_sent: list[str] = []

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_sendRawTransaction":
            self.raw_sent.append(str(params[0]))
        return await super().make_request(method, params)


class Child:
    """The killed process: its journal lines, read one send at a time."""

    def __init__(self, chain: AaveChain, journal: Path, calls: list[dict[str, str]]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(CHILD), chain.url, str(journal), str(USER),
                                      json.dumps(calls)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def sent(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the child died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return dict(json.loads(line))

    def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # no clean-up, no atexit: as a power cut leaves it
        self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def child_of(aave_chain: AaveChain, tmp_path: Path) -> Iterator[Any]:
    children: list[Child] = []

    def start(calls: list[dict[str, str]]) -> Child:
        children.append(Child(aave_chain, tmp_path / "chain-txs.sqlite", calls))
        return children[-1]

    yield start
    for c in children:
        c.kill()


@pytest_asyncio.fixture
async def restarted(aave_chain: AaveChain, tmp_path: Path) -> AsyncIterator[tuple[TxSender, CountingProvider]]:
    provider = CountingProvider(aave_chain.url)
    journal = TxJournal(tmp_path / "chain-txs.sqlite")
    try:
        yield TxSender(AsyncWeb3(provider), dev_key(USER), POLICY, journal=journal), provider
    finally:
        journal.close()
        await provider.disconnect()


def approve(chain: AaveChain, amount: int, ref: str) -> dict[str, str]:
    data = chain.token("WETH").encode_abi("approve", [chain.book["Pool"], amount])
    return {"to": chain.reserve("WETH")["underlying"], "data": data, "label": "approve WETH", "ref": ref}


def transfer(chain: AaveChain, to: str, amount: int, ref: str) -> dict[str, str]:
    data = chain.token("WETH").encode_abi("transfer", [to, amount])
    return {"to": chain.reserve("WETH")["underlying"], "data": data, "label": "transfer WETH", "ref": ref}


async def nonce(chain: AaveChain, who: str) -> int:
    return int(await chain.w3.eth.get_transaction_count(AsyncWeb3.to_checksum_address(who), "latest"))


@pytest.mark.asyncio
async def test_killed_while_pending_the_restart_follows_it_and_books_the_one_mined_meanwhile(
        aave_chain: AaveChain, child_of: Any, restarted: tuple[TxSender, CountingProvider]) -> None:
    chain, who, payee = aave_chain, aave_chain.accounts[USER], aave_chain.accounts[5]
    weth = chain.token("WETH")
    await chain.mint("WETH", who, 1000)
    paid_before = await weth.functions.balanceOf(payee).call()
    start = await nonce(chain, who)
    await chain.rpc("evm_setAutomine", [False])

    child = child_of([approve(chain, 5, "op-approve"), transfer(chain, payee, 3, "op-pay")])
    first = child.sent()
    await chain.rpc("evm_mine", [])  # the approval mines while the process is still up but never looks again
    child.go_on()
    second = child.sent()
    child.kill()
    assert (first["nonce"], second["nonce"]) == (start, start + 1)
    assert await nonce(chain, who) == start + 1  # the transfer is pending

    sender, provider = restarted
    recovered = await sender.recover()
    assert [(r.state, r.sent.tx_hash, r.sent.ref, r.sent.label) for r in recovered] == [
        (TxState.MINED, first["tx_hash"], "op-approve", "approve WETH"),
        (TxState.PENDING, second["tx_hash"], "op-pay", "transfer WETH")]
    mined = recovered[0].receipt
    assert mined is not None and mined["status"] == 1 and mined["transactionHash"].to_0x_hex() == first["tx_hash"]
    pending = recovered[1].sent
    assert pending.raw.hex() == second["raw"]  # the signed bytes, exactly as the child sent them
    assert sender.nonces.in_flight == {start + 1: pending}

    await chain.rpc("evm_mine", [])
    receipt = await sender.follow(pending)
    assert receipt["transactionHash"].to_0x_hex() == second["tx_hash"] and receipt["status"] == 1
    assert await nonce(chain, who) == start + 2
    assert await weth.functions.balanceOf(payee).call() == paid_before + 3  # the effect, once
    assert await weth.functions.allowance(who, chain.book["Pool"]).call() == 5
    assert provider.raw_sent == []  # nothing was sent again
    assert sender.journal is not None
    assert sender.journal.in_flight(await chain.w3.eth.chain_id, who) == []
    assert [r["state"] for r in sender.journal.rows(who)] == ["mined", "mined"]

    # A new operation after the restart takes the next nonce; a second recovery finds nothing open.
    c = approve(chain, 9, "op-later")
    later = await sender.send(TxCall(c["to"], bytes.fromhex(c["data"][2:]), label=c["label"], ref=c["ref"]))
    assert later.nonce == start + 2
    await chain.rpc("evm_mine", [])
    assert (await sender.follow(later))["status"] == 1
    assert len(provider.raw_sent) == 1
    third = TxSender(AsyncWeb3(provider), dev_key(USER), POLICY, journal=TxJournal(sender.journal.path))
    assert await third.recover() == []
    assert third.journal is not None
    third.journal.close()


@pytest.mark.asyncio
async def test_a_transaction_the_node_lost_is_rebroadcast_the_same_bytes(
        aave_chain: AaveChain, child_of: Any, restarted: tuple[TxSender, CountingProvider]) -> None:
    chain, who = aave_chain, aave_chain.accounts[USER]
    start = await nonce(chain, who)
    await chain.rpc("evm_setAutomine", [False])
    child = child_of([approve(chain, 11, "op-lost")])
    lost = child.sent()
    child.kill()
    await chain.rpc("anvil_dropTransaction", [lost["tx_hash"]])  # as a node restarted without its mempool
    assert await chain.w3.eth.get_transaction_count(AsyncWeb3.to_checksum_address(who), "pending") == start

    sender, provider = restarted
    recovered = await sender.recover()
    assert [(r.state, r.sent.tx_hash, r.sent.ref) for r in recovered] == [(TxState.DROPPED, lost["tx_hash"],
                                                                           "op-lost")]
    assert [raw.removeprefix("0x") for raw in provider.raw_sent] == [lost["raw"]]  # the same bytes, once
    assert "0x" + keccak(bytes.fromhex(lost["raw"])).hex() == lost["tx_hash"]
    await chain.rpc("evm_mine", [])
    receipt = await sender.follow(recovered[0].sent)
    assert receipt["transactionHash"].to_0x_hex() == lost["tx_hash"]
    assert await nonce(chain, who) == start + 1
    assert await chain.token("WETH").functions.allowance(who, chain.book["Pool"]).call() == 11
    assert len(provider.raw_sent) == 1



@pytest.mark.asyncio
async def test_the_journal_refuses_to_rebroadcast_a_damaged_record_and_a_broken_journal_sends_nothing(
        aave_chain: AaveChain, tmp_path: Path) -> None:
    chain = aave_chain
    provider = CountingProvider(chain.url)
    try:
        path = tmp_path / "chain-txs.sqlite"
        journal = TxJournal(path)
        await chain.rpc("evm_setAutomine", [False])
        first = TxSender(AsyncWeb3(provider), dev_key(USER), POLICY, journal=journal)
        c = approve(chain, 1, "op-1")
        sent = await first.send(TxCall(c["to"], bytes.fromhex(c["data"][2:]), label=c["label"], ref=c["ref"]))
        journal.close()

        # A flipped byte in the signed bytes: recovery stops, naming it, rather than broadcast something else.
        with sqlite3.connect(path) as db:
            db.execute("UPDATE chain_txs SET raw = ? WHERE tx_hash = ?", (sent.raw[:-1] + b"\x00", sent.tx_hash))
        damaged = TxJournal(path)
        restarted = TxSender(AsyncWeb3(provider), dev_key(USER), POLICY, journal=damaged)
        with pytest.raises(TxJournalCorrupt, match=sent.tx_hash):
            await restarted.send(TxCall(c["to"], bytes.fromhex(c["data"][2:]), label="approve again"))
        assert len(provider.raw_sent) == 1  # only the first send
        damaged.close()

        # A journal that cannot be written: not broadcast (a crash could repeat what it did not see).
        broken = TxJournal(tmp_path / "other.sqlite")
        unjournaled = TxSender(AsyncWeb3(provider), dev_key(2), POLICY, journal=broken)
        await unjournaled.recover()
        broken.close()
        with pytest.raises(TxJournalUnwritable, match="cannot be written"):
            await unjournaled.send(TxCall(c["to"], bytes.fromhex(c["data"][2:]), label="approve unjournaled"))
        assert len(provider.raw_sent) == 1
        assert unjournaled.nonces.in_flight == {}
    finally:
        await provider.disconnect()


@pytest.mark.asyncio
async def test_a_refused_attempt_is_settled_and_a_new_sender_recovers_nothing(aave_chain: AaveChain,
                                                                            tmp_path: Path) -> None:
    """A wallet without gas money: the node refuses the bytes; the journal row says so and is not in flight."""
    chain = aave_chain
    provider = CountingProvider(chain.url)
    journal = TxJournal(tmp_path / "chain-txs.sqlite")
    try:
        poor = TxSender(AsyncWeb3(provider), "0x" + "42" * 32, POLICY, journal=journal)
        c = approve(chain, 1, "op-poor")
        call = TxCall(c["to"], bytes.fromhex(c["data"][2:]), label=c["label"], ref=c["ref"], gas=60_000)
        with pytest.raises(VenueInsufficientFunds):
            await poor.send(call)
        assert [(r["state"], r["ref"]) for r in journal.rows(poor.address)] == [("refused", "op-poor")]
        again = TxSender(AsyncWeb3(provider), "0x" + "42" * 32, POLICY, journal=journal)
        assert await again.recover() == []
        assert len(provider.raw_sent) == 1
    finally:
        journal.close()
        await provider.disconnect()
