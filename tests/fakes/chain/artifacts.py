"""Where the test world's bytecode comes from: the real AAVE v3 artifacts in npm `@aave/core-v3`, and the world's own
test contracts (`contracts/*.sol`) compiled with npm `solc`. Both need `node_modules/` (`npm ci` at the root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from web3 import Web3

ROOT = Path(__file__).resolve().parents[3]
NODE_MODULES = ROOT / "node_modules"
AAVE_CORE = NODE_MODULES / "@aave" / "core-v3"
HERE = Path(__file__).resolve().parent
CONTRACTS = HERE / "contracts"
COMPILE_JS = HERE / "compile.js"
# The world's DEX is the executor's test-only router (committed, compiled by deploy/contracts/build.py).
SWAP_ROUTER_ARTIFACT = ROOT / "deploy" / "contracts" / "artifacts" / "test" / "FixedRateSwapRouter.json"
# The npm wrapper installs the binary in a per-platform package; $ANVIL_BIN points elsewhere (another platform).
DEFAULT_ANVIL = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
NPM_PACKAGES = ("@aave/core-v3", "@foundry-rs/anvil", "solc")


class ChainToolsMissing(RuntimeError):
    """node_modules (anvil, the AAVE artifacts, solc) is not installed: the anvil tests cannot run."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ChainToolsMissing(
            f"{what} not found at {path}: run `npm ci` in {ROOT} (package.json / package-lock.json install anvil, "
            "@aave/core-v3 and solc into node_modules/)"
        )
    return path


def anvil_binary() -> Path:
    override = os.environ.get("ANVIL_BIN")
    if override:
        return _need(Path(override), "anvil ($ANVIL_BIN)")
    return _need(DEFAULT_ANVIL, "anvil")


def npm_versions() -> dict[str, str]:
    """The installed versions of the packages the world is built from (part of the snapshot's cache key)."""
    versions = {}
    for name in NPM_PACKAGES:
        manifest = _need(NODE_MODULES / name / "package.json", f"npm package {name}")
        versions[name] = json.loads(manifest.read_text())["version"]
    return versions


@cache
def _aave_index() -> dict[str, Path]:
    root = _need(AAVE_CORE / "artifacts" / "contracts", "the @aave/core-v3 artifacts")
    return {p.stem: p for p in root.rglob("*.json") if not p.name.endswith(".dbg.json")}


@cache
def aave_artifact(name: str) -> dict[str, Any]:
    """One Hardhat artifact (abi, bytecode, linkReferences) of the real AAVE v3 contracts, by contract name."""
    art: dict[str, Any] = json.loads(_aave_index()[name].read_text())
    return art


def _placeholder(fully_qualified: str) -> str:
    """Solidity ≥ 0.5's library slot: __$ + the first 34 hex digits of keccak256("path:Name") + $__."""
    return "__$" + Web3.keccak(text=fully_qualified).hex().removeprefix("0x")[:34] + "$__"


def linked_bytecode(art: dict[str, Any], libraries: dict[str, str]) -> str:
    """The creation bytecode with every library slot patched; each slot is checked to hold the placeholder we
    expect, so a changed artifact fails loudly instead of deploying a contract that calls a wrong address."""
    code: str = art["bytecode"].removeprefix("0x")
    for source, by_lib in art["linkReferences"].items():
        for lib, refs in by_lib.items():
            address = libraries[lib].lower().removeprefix("0x")
            expected = _placeholder(f"{source}:{lib}")
            for ref in refs:
                start, length = 2 * ref["start"], 2 * ref["length"]
                if code[start:start + length] != expected:
                    raise ValueError(f"unexpected link slot for {lib} at byte {ref['start']}")
                code = code[:start] + address + code[start + length:]
    if "__$" in code:
        raise ValueError("an unlinked library placeholder is left in the bytecode")
    return "0x" + code


def library_dependencies(name: str) -> list[str]:
    return sorted({lib for by_lib in aave_artifact(name)["linkReferences"].values() for lib in by_lib})


def aave_error_names() -> dict[str, str]:
    """AAVE's numeric revert strings ('35') by constant name, parsed from the package's Errors.sol."""
    errors_sol = AAVE_CORE / "contracts" / "protocol" / "libraries" / "helpers" / "Errors.sol"
    pattern = re.compile(r"string public constant (\w+) = '(\d+)';")
    return {code: name for name, code in pattern.findall(_need(errors_sol, "AAVE's Errors.sol").read_text())}


def swap_router_artifact() -> dict[str, Any]:
    art = json.loads(SWAP_ROUTER_ARTIFACT.read_text())
    return {"abi": art["abi"], "bytecode": art["bytecode"]}


def compile_test_contracts(out: Path) -> dict[str, Any]:
    """Compile contracts/*.sol with npm solc (wasm, offline, ~2 s) into `out`; the world's build caches it."""
    _need(NODE_MODULES / "solc" / "package.json", "npm solc")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["node", str(COMPILE_JS), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"solc failed on {CONTRACTS}:\n{done.stderr}")
    compiled: dict[str, Any] = json.loads(out.read_text())
    return compiled
