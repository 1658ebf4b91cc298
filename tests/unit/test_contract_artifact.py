"""The committed contract artifacts (deploy/contracts/artifacts) are exactly what their sources compile to.

Recompiles with the pinned npm `solc` (deploy/contracts/build.py, ~2.5 s of wasm) and compares byte for byte, so a
source edited without rebuilding, or a different compiler, fails here. It needs `node` and `npm ci` at the root,
hence the `anvil` marker (the toolchain the anvil tests install); without them it fails saying so, it never skips.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.anvil

CONTRACTS = Path(__file__).resolve().parents[2] / "deploy" / "contracts"


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("contracts_build", CONTRACTS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recompiling_gives_the_committed_artifacts_byte_for_byte() -> None:
    build = _build_module()
    try:
        fresh = build.compile_all()
    except build.BuildError as e:
        pytest.fail(f"cannot recompile deploy/contracts: {e}", pytrace=False)
    assert sorted(fresh) == ["FlashLeverage.json", "test/FixedRateSwapRouter.json"]
    for name, data in fresh.items():
        committed = (build.ARTIFACTS / name).read_bytes()
        assert committed == data, f"{name} is stale: run `python deploy/contracts/build.py`"


def test_the_artifact_names_its_compiler_and_the_errors_callers_decode() -> None:
    doc = json.loads((CONTRACTS / "artifacts" / "FlashLeverage.json").read_text())
    assert doc["compiler"]["version"].startswith("0.8.37+commit.")
    assert doc["compiler"]["settings"]["evmVersion"] == "cancun"
    errors = {e["name"] for e in doc["abi"] if e["type"] == "error"}
    assert {"NotOwner", "NotPool", "BadInitiator", "HealthFactorTooLow", "LtvOutOfBounds", "DebtRemains"} <= errors
    functions = {e["name"] for e in doc["abi"] if e["type"] == "function"}
    assert {"enter", "reduceDebt", "unwind", "executeOperation", "sweep", "owner"} <= functions
