"""A transaction's latency on anvil, submit → mined → receipt, with the transaction journal on and off.

`TxSender.transact` (daemon/venues/web3_tx.py) of an ERC-20 approval of the test world's WETH (the real AAVE v3
market's underlying) on one anvil node with automine on: fees (eth_feeHistory), gas estimate, nonce, sign, journal
(on: a committed SQLite WAL row, synchronous=FULL, daemon/venues/web3_tx_journal.py), send, then receipts polled
every `--poll-ms` until it is there. Two dev accounts, one sender each (journal on / off), interleaved call by call
so both see the same node. "submit" is `send()` returning (the node accepted it), "receipt" `send` + `follow` (what
`transact` does). The journal's own commits (its row before the send, its settling at the receipt) are timed at the
journal. Anvil mines as it accepts: this is the adapter's and the node's cost, not a block time (on mainnet add
~12 s a block, × the confirmation depth).

    .venv/bin/python tests/bench/bench_chain_tx.py [--n 200] [--poll-ms 2] [--dir /var/lib/basisd]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, git_revision  # noqa: E402
from web3 import AsyncWeb3  # noqa: E402
from web3.providers import AsyncHTTPProvider  # noqa: E402

from daemon.venues.web3_tx import SentTx, TxCall, TxPolicy, TxSender  # noqa: E402
from daemon.venues.web3_tx_journal import TxJournal  # noqa: E402
from tests.fakes.chain.chain import AaveChain, dev_key  # noqa: E402
from tests.fakes.chain.node import AnvilNode  # noqa: E402
from tests.fakes.chain.world import build_world  # noqa: E402

GWEI = 10**9


class TimedJournal(TxJournal):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.record_s: list[float] = []
        self.settle_s: list[float] = []

    def record(self, chain_id: int, sender: str, sent: SentTx) -> None:
        started = time.perf_counter()
        super().record(chain_id, sender, sent)
        self.record_s.append(time.perf_counter() - started)

    def settle(self, chain_id: int, sender: str, nonce: int, mined_hash: str | None) -> None:
        started = time.perf_counter()
        super().settle(chain_id, sender, nonce, mined_hash)
        self.settle_s.append(time.perf_counter() - started)


def ms_stats(values: list[float]) -> tuple[float, float]:
    v = sorted(x * 1000 for x in values)
    return statistics.median(v), v[min(len(v) - 1, int(0.9 * len(v)))]


async def run(n: int, poll_ms: float, directory: Path) -> None:
    world = build_world()
    with AnvilNode(load_state=world.state, timestamp=world.boot_timestamp) as node:
        chain = AaveChain(node.url, world.book, world.contracts)
        await chain.start()
        policy = TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=poll_ms / 1000)
        journal = TimedJournal(directory / "chain-txs.sqlite")
        providers = [AsyncHTTPProvider(node.url, request_kwargs={"timeout": 30}) for _ in range(2)]
        senders = {True: TxSender(AsyncWeb3(providers[0]), dev_key(1), policy, journal=journal),
                   False: TxSender(AsyncWeb3(providers[1]), dev_key(2), policy)}
        weth = chain.token("WETH")
        to = chain.reserve("WETH")["underlying"]

        def call(i: int) -> TxCall:
            data = bytes.fromhex(weth.encode_abi("approve", [world.book["Pool"], i + 1])[2:])
            return TxCall(to, data, label="approve WETH", ref=f"bench-{i}")

        submit: dict[bool, list[float]] = {True: [], False: []}
        receipt: dict[bool, list[float]] = {True: [], False: []}
        for on in (True, False):  # warm: sessions, the chain id, web3's caches
            await senders[on].transact(call(0))
        journal.record_s.clear()
        journal.settle_s.clear()
        try:
            for i in range(n):
                for on in ((True, False) if i % 2 == 0 else (False, True)):
                    s = senders[on]
                    started = time.perf_counter()
                    sent = await s.send(call(i))
                    submitted = time.perf_counter()
                    r = await s.follow(sent)
                    done = time.perf_counter()
                    assert r["status"] == 1
                    submit[on].append(submitted - started)
                    receipt[on].append(done - started)
            rows = journal.rows()
            assert len(rows) == n + 1 and all(row["state"] == "mined" for row in rows)
        finally:
            for p in providers:
                await p.disconnect()
            journal.close()
            await chain.close()

    print(f"commit {git_revision()}, {cpu_model()}; anvil automine, {n} approvals per column, receipts polled every "
          f"{poll_ms:g} ms, journal in {directory}\n")
    print("| ms | journal on: median | p90 | journal off: median | p90 | on / off (median) |")
    print("|---|---|---|---|---|---|")
    for name, data in (("submit (send returns)", submit), ("submit → mined → receipt", receipt)):
        on_m, on_p = ms_stats(data[True])
        off_m, off_p = ms_stats(data[False])
        print(f"| {name} | {on_m:.2f} | {on_p:.2f} | {off_m:.2f} | {off_p:.2f} | {on_m / off_m:.2f} |")
    for name, samples in (("the journal's record commit (before the send)", journal.record_s),
                          ("the journal's settle commit (at the receipt)", journal.settle_s)):
        j_m, j_p = ms_stats(samples)
        print(f"| {name} | {j_m:.2f} | {j_p:.2f} | – | – | – |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--poll-ms", type=float, default=2.0)
    ap.add_argument("--dir", default=None, help="where the journal file goes (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        asyncio.run(run(args.n, args.poll_ms, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
