"""The process `test_tx_restart.py` kills: a `TxSender` on a journal that sends the calls it is given, one by one.

    python tests/integration/tx_restart_child.py URL JOURNAL KEY_INDEX CALLS_JSON

CALLS_JSON is a list of {"to", "data" (hex), "label", "ref"}. After each send it prints one JSON line (hash, nonce,
raw hex) and, before the next one, reads a line from stdin (the test mines, or not, in between). After the last it
prints "all sent" and sleeps until it is killed — with SIGKILL, by the test, while its transactions are pending.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from web3 import AsyncWeb3  # noqa: E402
from web3.providers import AsyncHTTPProvider  # noqa: E402

from daemon.venues.web3_tx import TxCall, TxPolicy, TxSender  # noqa: E402
from daemon.venues.web3_tx_journal import TxJournal  # noqa: E402
from tests.fakes.chain.chain import dev_key  # noqa: E402


async def main(url: str, journal: str, key_index: int, calls: list[dict[str, str]]) -> None:
    sender = TxSender(AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 30})), dev_key(key_index),
                      TxPolicy(max_fee_cap_wei=500 * 10**9), journal=TxJournal(journal))
    for i, c in enumerate(calls):
        if i:
            sys.stdin.readline()
        sent = await sender.send(TxCall(c["to"], bytes.fromhex(c["data"].removeprefix("0x")), label=c["label"],
                                        ref=c["ref"]))
        print(json.dumps({"tx_hash": sent.tx_hash, "nonce": sent.nonce, "raw": sent.raw.hex()}), flush=True)
    print("all sent", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])))
