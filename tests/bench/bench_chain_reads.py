"""The anvil test world and the chain reads: build, boot, reset, and one read cycle batched against unbatched.

1. World build — deploy the real AAVE v3 market (npm `@aave/core-v3`) on a fresh anvil, compile the test LSTs with
   npm solc, dump the state (`tests/fakes/chain/world.py`), into a temporary build dir so the cache is not used.
2. Boot — a fresh anvil from that state: spawn → first RPC answer, and → first `Pool.getReservesList()`; beside it an
   empty anvil. `evm_snapshot` / `evm_revert` on a booted node.
3. One read cycle of `ChainReader` (daemon/venues/web3_reads.py) for a levered wallet (weETH in e-mode, WETH
   borrowed), batched (one JSON-RPC batch) and unbatched (one request per read), interleaved round by round; round
   trips counted at the provider (web3's default middleware adds its own eth_chainId to each unbatched eth_call).

    .venv/bin/python tests/bench/bench_chain_reads.py [--boots 10] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from web3 import AsyncWeb3, Web3  # noqa: E402
from web3.providers import AsyncHTTPProvider  # noqa: E402
from web3.types import RPCEndpoint, RPCResponse  # noqa: E402

from daemon.venues.web3_reads import ChainReader  # noqa: E402
from tests.fakes.chain.artifacts import aave_artifact  # noqa: E402
from tests.fakes.chain.chain import AaveChain, chain_addresses  # noqa: E402
from tests.fakes.chain.node import AnvilNode  # noqa: E402
from tests.fakes.chain.world import BuiltWorld, build_world  # noqa: E402

WAD = 10**18


class CountingProvider(AsyncHTTPProvider):
    def __init__(self, url: str) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.round_trips = 0

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.round_trips += 1
        return await super().make_request(method, params)

    async def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse] | RPCResponse:
        self.round_trips += 1
        return await super().make_batch_request(requests)


def ms(values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    return f"median {statistics.median(v):.1f} ms, min {v[0]:.1f}, max {v[-1]:.1f} (n={len(v)})"


def boots(world: BuiltWorld, n: int) -> None:
    to_answer, to_pool, empty = [], [], []
    pool_abi = aave_artifact("Pool")["abi"]
    for _ in range(n):
        started = time.perf_counter()
        with AnvilNode(load_state=world.state, timestamp=world.boot_timestamp) as node:
            to_answer.append(node.boot_s)
            w3 = Web3(Web3.HTTPProvider(node.url))
            pool = w3.eth.contract(address=world.book["Pool"], abi=pool_abi)
            assert len(pool.functions.getReservesList().call()) == len(world.book["reserves"])
            to_pool.append(time.perf_counter() - started)
        with AnvilNode() as bare:
            empty.append(bare.boot_s)
    print(f"boot from the world's state, spawn → first answer: {ms(to_answer)}")
    print(f"boot from the world's state, spawn → first Pool.getReservesList(): {ms(to_pool)}")
    print(f"empty anvil, spawn → first answer: {ms(empty)}")


async def resets_and_reads(world: BuiltWorld, rounds: int) -> None:
    with AnvilNode(load_state=world.state, timestamp=world.boot_timestamp) as node:
        chain = AaveChain(node.url, world.book, world.contracts)
        await chain.start()
        try:
            snap, rev = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                sid = await chain.snapshot()
                t1 = time.perf_counter()
                await chain.revert(sid)
                snap.append(t1 - t0)
                rev.append(time.perf_counter() - t1)
            print(f"evm_snapshot: {ms(snap)}; evm_revert: {ms(rev)}")

            user = chain.accounts[1]
            await chain.supply("weETH", user, 10 * WAD)
            await chain.set_user_emode(user, 1)
            await chain.borrow("WETH", user, 9 * WAD)
            timings: dict[bool, list[float]] = {True: [], False: []}
            trips: dict[bool, int] = {}
            providers = {b: CountingProvider(node.url) for b in (True, False)}
            readers = {b: ChainReader(AsyncWeb3(providers[b]), chain_addresses(world.book), user, batched=b)
                       for b in (True, False)}
            for b in (True, False):
                await readers[b].read()  # warm: aiohttp session, web3's caches
            for _ in range(rounds):
                for b in (True, False):
                    before = providers[b].round_trips
                    t0 = time.perf_counter()
                    snapshot = await readers[b].read()
                    timings[b].append(time.perf_counter() - t0)
                    trips[b] = providers[b].round_trips - before
                    assert snapshot.account.health_factor > 1
            for b in (True, False):
                await providers[b].disconnect()
            print(f"read cycle, batched: {ms(timings[True])}, {trips[True]} round trip(s), "
                  f"{readers[True].round_trips // (rounds + 1)} sent by the reader")
            print(f"read cycle, unbatched: {ms(timings[False])}, {trips[False]} round trips on the wire, "
                  f"{readers[False].round_trips // (rounds + 1)} sent by the reader")
        finally:
            await chain.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        assert world.built_s is not None
        print(f"world build (uncached: solc + deploy {world.book['deployTransactions']} transactions + dump): "
              f"{world.built_s:.2f} s; state {world.state.stat().st_size:,} bytes")
        boots(world, args.boots)
        asyncio.run(resets_and_reads(world, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
