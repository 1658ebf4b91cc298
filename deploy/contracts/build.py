#!/usr/bin/env python3
"""Compile deploy/contracts with the pinned solcjs from npm and write the committed artifacts, or check them.

    npm ci                                        # at the repository root: solc 0.8.37 (package.json)
    python deploy/contracts/build.py              # rewrite deploy/contracts/artifacts/*.json
    python deploy/contracts/build.py --check      # recompile; exit 1 unless every artifact is identical, byte for byte

Offline: solcjs compiles only with the compiler its npm version bundles (the version pin is the compiler pin), in
standard-JSON mode, through `node` and no network. The artifacts are committed so that deploying or testing needs
neither node nor solc; the check (tests/unit/test_contract_artifact.py) proves they are what the sources compile to.
The output is deterministic: fixed settings, sources in sorted order, JSON with sorted keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
SOLC_NPM = "solc@0.8.37"
SOLC_VERSION = "0.8.37+commit.f401782d.Emscripten.clang"

# (source file relative to HERE, contract name, artifact path relative to ARTIFACTS)
TARGETS = (
    ("src/FlashLeverage.sol", "FlashLeverage", "FlashLeverage.json"),
    ("test/FixedRateSwapRouter.sol", "FixedRateSwapRouter", "test/FixedRateSwapRouter.json"),
)
SOURCE_DIRS = ("src", "test")

# cancun: the executor's in-flight flag is transient storage (EIP-1153), live on mainnet since March 2024
SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "optimizer": {"enabled": True, "runs": 200},
    "metadata": {"bytecodeHash": "ipfs"},
    "outputSelection": {
        "*": {"*": ["abi", "metadata", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"]}
    },
}

# Reads the standard-JSON input on stdin, prints the compiler's output and its version: nothing is fetched.
_NODE = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.on('data', c => input += c);
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify({version: solc.version(), output: JSON.parse(solc.compile(input))}));
});
"""


class BuildError(Exception):
    """The compiler is missing, fails, or is not the pinned version."""


def solc_module() -> Path:
    path = Path(os.environ.get("SOLCJS_DIR", ROOT / "node_modules" / "solc"))
    if not (path / "package.json").exists():
        raise BuildError(f"no solcjs at {path}: run `npm ci` at the repository root (it pins {SOLC_NPM})")
    return path


def sources() -> dict[str, str]:
    found = sorted(p for d in SOURCE_DIRS for p in (HERE / d).rglob("*.sol"))
    return {p.relative_to(HERE).as_posix(): p.read_text(encoding="utf-8") for p in found}


def compile_all() -> dict[str, bytes]:
    """Compile every source once; return {artifact path relative to ARTIFACTS: file bytes}."""
    srcs = sources()
    std_input = {"language": "Solidity", "sources": {k: {"content": v} for k, v in srcs.items()}, "settings": SETTINGS}
    proc = subprocess.run(
        ["node", "-e", _NODE, str(solc_module())],
        input=json.dumps(std_input, sort_keys=True).encode(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"node/solc failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(proc.stdout)
    if result["version"] != SOLC_VERSION:
        raise BuildError(f"solcjs is {result['version']}, the artifacts pin {SOLC_VERSION} ({SOLC_NPM})")
    out = result["output"]
    problems = [e for e in out.get("errors", []) if e["severity"] == "error"]
    if problems:
        raise BuildError("\n".join(e["formattedMessage"] for e in problems))
    warnings = [e["formattedMessage"] for e in out.get("errors", []) if e["severity"] != "error"]
    if warnings:  # a warning is a finding: the build is kept warning-free
        raise BuildError("compiler warnings:\n" + "\n".join(warnings))

    files: dict[str, bytes] = {}
    for source, name, artifact in TARGETS:
        c = out["contracts"][source][name]
        used = sorted(json.loads(c["metadata"])["sources"])  # the files this contract is built from
        doc = {
            "contractName": name,
            "sourceName": source,
            "compiler": {"npm": SOLC_NPM, "version": result["version"], "settings": SETTINGS},
            "sources": {k: "sha256:" + hashlib.sha256(srcs[k].encode()).hexdigest() for k in used},
            "abi": c["abi"],
            "methodIdentifiers": c["evm"]["methodIdentifiers"],
            "bytecode": "0x" + c["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
        }
        files[artifact] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return files


def check(files: dict[str, bytes]) -> list[str]:
    """The artifacts that differ from (or are missing beside) a fresh compile."""
    return [a for a, data in files.items() if not (ARTIFACTS / a).exists() or (ARTIFACTS / a).read_bytes() != data]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed artifacts, write nothing")
    args = ap.parse_args(argv)
    try:
        files = compile_all()
    except BuildError as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 2
    if args.check:
        stale = check(files)
        for a in stale:
            print(f"build.py: {ARTIFACTS / a} is not what the sources compile to; run build.py", file=sys.stderr)
        return 1 if stale else 0
    for a, data in files.items():
        (ARTIFACTS / a).parent.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / a).write_bytes(data)
        print(f"wrote {ARTIFACTS / a} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
