"""The test world built once and booted many times: deploy the market on a fresh anvil, dump its state, and boot
every later node from that dump in ~50 ms (`AnvilNode(load_state=...)`).

The dump is cached under `build/chain-world/<key>/`, the key hashing what decides its content: the npm package
versions (anvil, @aave/core-v3, solc), the deploy code, the test contracts' source and the DEX's artifact. Anything
else is a rebuild (~3.5 s incl. solc). The dump format is anvil-internal, hence the anvil version in the key: it is
regenerated, never hand-edited. Old keys' directories are left in place (git-ignored, ~0.6 MB each).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web3 import Web3

from .artifacts import (
    COMPILE_JS,
    CONTRACTS,
    ROOT,
    SWAP_ROUTER_ARTIFACT,
    compile_test_contracts,
    npm_versions,
    swap_router_artifact,
)
from .market import SWAP_ROUTER, deploy_market
from .node import AnvilNode

FORMAT = 1  # bump when the layout of the build directory changes
BUILD_DIR = Path(os.environ.get("BASISD_CHAIN_BUILD_DIR", ROOT / "build" / "chain-world"))
KEYED_SOURCES = (Path(__file__).with_name("market.py"), Path(__file__), COMPILE_JS, SWAP_ROUTER_ARTIFACT,
                 *sorted(CONTRACTS.glob("*.sol")))


@dataclass(frozen=True, slots=True)
class BuiltWorld:
    state: Path  # anvil --load-state file (plain JSON, history dropped)
    book: dict[str, Any]  # the address book (market.deploy_market) + snapshotTimestamp
    contracts: dict[str, Any]  # the test contracts' ABI and bytecode
    built_s: float | None  # None when it came from the cache

    @property
    def boot_timestamp(self) -> int:
        return int(self.book["snapshotTimestamp"]) + 1


def cache_key() -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, "npm": npm_versions()}, sort_keys=True).encode())
    for path in KEYED_SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _slim(dump_hex: str) -> tuple[bytes, int]:
    """anvil_dumpState's `0x` + gzip(JSON) as the plain JSON `--load-state` wants, history dropped: accounts and the
    block environment only, with best_block_number 0 (keeping the old number fails "Best hash not found")."""
    raw = bytes.fromhex(dump_hex.removeprefix("0x"))
    state = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    slim = dict(state, blocks=[], transactions=[], best_block_number=0, historical_states=None)
    return json.dumps(slim, separators=(",", ":")).encode(), int(state["block"]["timestamp"], 16)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_world(build_dir: Path = BUILD_DIR) -> BuiltWorld:
    """The cached world, or a fresh build of it. Two processes building at once both finish: each file lands by an
    atomic rename, and the book (written last) marks the directory complete."""
    target = build_dir / cache_key()
    state, book_path, contracts_path = target / "state.json", target / "book.json", target / "contracts.json"
    if state.exists() and book_path.exists() and contracts_path.exists():
        return BuiltWorld(state, json.loads(book_path.read_text()), json.loads(contracts_path.read_text()), None)
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        contracts = compile_test_contracts(Path(tmp) / "contracts.json")
    contracts[SWAP_ROUTER] = swap_router_artifact()
    with AnvilNode() as node:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        book = deploy_market(w3, contracts)
        response = w3.provider.make_request("anvil_dumpState", [])  # type: ignore[arg-type]
        if "error" in response:
            raise RuntimeError(f"anvil_dumpState: {response['error']}")
        slim, timestamp = _slim(response["result"])
    book["snapshotTimestamp"] = timestamp
    _write_atomically(contracts_path, json.dumps(contracts).encode())
    _write_atomically(state, slim)
    _write_atomically(book_path, json.dumps(book, indent=2).encode())
    return BuiltWorld(state, book, contracts, time.perf_counter() - started)
