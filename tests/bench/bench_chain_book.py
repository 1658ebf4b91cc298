"""One booked operation on anvil, submit → mined → booked: what measuring the books costs beside the transaction.

`Web3Chain` (daemon/venues/web3_chain.py) on one anvil node of the test world (the real AAVE v3 market, automine)
does `--n` round trips of supply USDT then withdraw it all (the wallet ends where it started but for the gas and a
few units of interest), each one transaction: the wallet's Pool allowance is set to the maximum before, so no
approval is sent. A consumer task drains the report channel and stamps each `BalancesChanged` as it arrives.
Per operation, from the adapter's call: "reads before the send" until `TxSender.send` is called (the supply reads
a snapshot and the allowance, the withdrawal a snapshot), "submit" until `send` returns (the node accepted it),
"mined" until `TxSender.follow` returns the receipt, "booked" until the consumer has the report. Booked − mined
is the booking: the wallet snapshots at the block before and at the block (`ChainReader.read(block=...)`, one
JSON-RPC batch each) and their diff. Round trips are counted at the provider (a batch is one), by method, and at the
reader (`ChainReader.round_trips`). Anvil mines as it accepts: on mainnet add ~12 s a block × the confirmation depth
to "mined" (the booking does not grow with it).

    .venv/bin/python tests/bench/bench_chain_book.py [--n 100] [--poll-ms 2] [--usdt 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, git_revision  # noqa: E402
from web3 import AsyncWeb3  # noqa: E402
from web3.providers import AsyncHTTPProvider  # noqa: E402
from web3.types import RPCEndpoint, RPCResponse, TxReceipt  # noqa: E402

from daemon.bus import LosslessChannel  # noqa: E402
from daemon.clock import WallClock  # noqa: E402
from daemon.domain.ledger import WALLET  # noqa: E402
from daemon.domain.messages import BalancesChanged, VenueReport  # noqa: E402
from daemon.venues.web3_chain import Web3Chain  # noqa: E402
from daemon.venues.web3_reads import MAX_UINT256, ChainReader  # noqa: E402
from daemon.venues.web3_tx import SentTx, TxCall, TxPolicy, TxSender  # noqa: E402
from daemon.venues.web3_wallet import wallet_balances  # noqa: E402
from tests.fakes.chain.chain import AaveChain, chain_addresses, chain_contracts, dev_key  # noqa: E402
from tests.fakes.chain.node import AnvilNode  # noqa: E402
from tests.fakes.chain.world import build_world  # noqa: E402

GWEI = 10**9
USER = 1  # anvil dev account 1, as tests/integration/test_web3_chain.py


class CountingProvider(AsyncHTTPProvider):
    """Counts JSON-RPC round trips by method (a batch is one round trip, "batch")."""

    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.methods: Counter[str] = Counter()

    @property
    def round_trips(self) -> int:
        return sum(self.methods.values())

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.methods[str(method)] += 1
        return await super().make_request(method, params)

    async def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        self.methods["batch"] += 1
        return await super().make_batch_request(requests)


class TimedSender(TxSender):
    """Stamps the moments `send` is called, `send` returns (the node accepted the transaction) and `follow` returns
    the receipt."""

    called: float = 0.0
    submitted: float = 0.0
    mined: float = 0.0

    async def send(self, call: TxCall) -> SentTx:
        self.called = time.perf_counter()
        sent = await super().send(call)
        self.submitted = time.perf_counter()
        return sent

    async def follow(self, sent: SentTx, resolve_first: bool = False) -> TxReceipt:
        receipt = await super().follow(sent, resolve_first)
        self.mined = time.perf_counter()
        return receipt


@dataclass
class Samples:
    reads: list[float] = field(default_factory=list)  # the adapter's reads before the send
    submit: list[float] = field(default_factory=list)
    mined: list[float] = field(default_factory=list)
    booked: list[float] = field(default_factory=list)
    overhead: list[float] = field(default_factory=list)  # booked − mined
    share: list[float] = field(default_factory=list)  # (booked − mined) / booked
    round_trips: list[int] = field(default_factory=list)
    reader_round_trips: list[int] = field(default_factory=list)
    methods: Counter[str] = field(default_factory=Counter)


def ms_stats(values: list[float]) -> tuple[float, float]:
    v = sorted(x * 1000 for x in values)
    return statistics.median(v), v[min(len(v) - 1, int(0.9 * len(v)))]


async def run(n: int, poll_ms: float, usdt: int) -> None:
    world = build_world()
    with AnvilNode(load_state=world.state, timestamp=world.boot_timestamp) as node:
        chain = AaveChain(node.url, world.book, world.contracts)
        await chain.start()
        owner = AsyncWeb3.to_checksum_address(chain.accounts[USER])
        usdt_token = chain.token("USDT")
        await chain.mint("USDT", owner, usdt * 10**6)
        # the allowance for every supply at once (from the unlocked dev account, before the sender takes its nonce)
        await chain.send(usdt_token.functions.approve(world.book["Pool"], MAX_UINT256), owner)

        provider = CountingProvider(node.url)
        w3 = AsyncWeb3(provider)
        addresses = chain_addresses(world.book)
        reader = ChainReader(w3, addresses, owner)
        sender = TimedSender(w3, dev_key(USER), TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=poll_ms / 1000))
        reports: LosslessChannel[VenueReport] = LosslessChannel("chain reports", 1_000)
        adapter = Web3Chain(w3, sender, reader, addresses, chain_contracts(world.book), reports, _NoRails(),
                            WallClock())

        arrivals: asyncio.Queue[tuple[float, BalancesChanged]] = asyncio.Queue()
        booked_sum: defaultdict[str, Decimal] = defaultdict(Decimal)  # booked to the wallet, by token

        async def consume() -> None:
            while True:
                report = await reports.receive()
                stamp = time.perf_counter()
                assert isinstance(report, BalancesChanged)
                for change in report.change.tokens:
                    if change.account == WALLET:
                        booked_sum[change.token] += change.delta
                arrivals.put_nowait((stamp, report))

        consumer = asyncio.create_task(consume())
        samples: dict[str, Samples] = {"supply USDT": Samples(), "withdraw USDT (all)": Samples()}
        amount = Decimal(usdt)

        async def timed(name: str, ref: str, record: bool) -> None:
            trips, read_trips, methods = provider.round_trips, reader.round_trips, provider.methods.copy()
            started = time.perf_counter()
            if name.startswith("supply"):
                await adapter.supply("USDT", amount, ref)
            else:
                await adapter.withdraw("USDT", amount, ref)
            booked, report = await arrivals.get()
            assert report.change.ref == ref and arrivals.empty()  # one booked operation, one report
            if not record:
                return
            s = samples[name]
            s.reads.append(sender.called - started)
            s.submit.append(sender.submitted - started)
            s.mined.append(sender.mined - started)
            s.booked.append(booked - started)
            s.overhead.append(booked - sender.mined)
            s.share.append((booked - sender.mined) / (booked - started))
            s.round_trips.append(provider.round_trips - trips)
            s.reader_round_trips.append(reader.round_trips - read_trips)
            s.methods.update(provider.methods - methods)

        try:
            start = wallet_balances(await reader.read())
            for i in range(3):  # warm: sessions, the chain id, web3's caches, the sender's nonce
                await timed("supply USDT", f"warm-s{i}", False)
                await timed("withdraw USDT (all)", f"warm-w{i}", False)
            for i in range(n):
                await timed("supply USDT", f"bench-s{i}", True)
                await timed("withdraw USDT (all)", f"bench-w{i}", True)
            end = wallet_balances(await reader.read())
        finally:
            consumer.cancel()
            await provider.disconnect()
            await chain.close()
    interest = end["USDT"] - start["USDT"]
    assert Decimal(0) <= interest < Decimal("0.01") * (n + 3), (start, end)  # where it started, but for interest
    assert "aUSDT" not in end and adapter.transactions == 2 * (n + 3)
    moved = {t: end.get(t, Decimal(0)) - start.get(t, Decimal(0)) for t in set(start) | set(end)}
    assert {t: v for t, v in booked_sum.items() if v} == {t: v for t, v in moved.items() if v}  # the books = chain

    print(f"commit {git_revision()}, {cpu_model()}; anvil automine, real AAVE v3 1.19.3; {n} round trips of supply "
          f"{usdt} USDT + withdraw all, one transaction each; receipts polled every {poll_ms:g} ms\n")
    print(f"wallet after {2 * (n + 3)} booked transactions: USDT {interest:+} (interest), ETH "
          f"{end['ETH'] - start['ETH']:+} (gas); the reports' sum equals it, token by token\n")
    print("| operation | reads before the send: median | p90 | submit: median | p90 | mined: median | p90 "
          "| booked: median | p90 | booking (booked − mined): median | p90 | share of booked (median) "
          "| JSON-RPC round trips / op | of which the reader's |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, s in samples.items():
        cols = [f"{x:.2f}" for pair in (ms_stats(s.reads), ms_stats(s.submit), ms_stats(s.mined), ms_stats(s.booked),
                                         ms_stats(s.overhead)) for x in pair]
        print(f"| {name} | {' | '.join(cols)} | {statistics.median(s.share) * 100:.0f} % | "
              f"{statistics.mean(s.round_trips):.1f} | {statistics.mean(s.reader_round_trips):.1f} |")
    print("\nround trips per booked operation, by method (mean over the runs; \"batch\" = one JSON-RPC batch):\n")
    print("| operation | " + " | ".join(_methods(samples)) + " |")
    print("|---|" + "---|" * len(_methods(samples)))
    for name, s in samples.items():
        print(f"| {name} | " + " | ".join(f"{s.methods[m] / n:.1f}" for m in _methods(samples)) + " |")


def _methods(samples: dict[str, Samples]) -> list[str]:
    seen: Counter[str] = Counter()
    for s in samples.values():
        seen.update(s.methods)
    return [m for m, _ in seen.most_common()]


class _NoRails:
    """No exchange is reached in this bench (the port's WalletRails, unused)."""

    async def deposit_address(self, venue: str, asset: str) -> str:
        raise AssertionError("no transfer in this bench")

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        raise AssertionError("no transfer in this bench")

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        raise AssertionError("no transfer in this bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="round trips (supply + withdraw)")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="the sender's receipt polling interval")
    ap.add_argument("--usdt", type=int, default=1000, help="USDT supplied and withdrawn each round trip")
    args = ap.parse_args()
    asyncio.run(run(args.n, args.poll_ms, args.usdt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
