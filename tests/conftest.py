from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The exchange fake's fixtures (exchange_fake, binanceusdm, binance_spot): tests/fakes/exchange/plugin.py.
# The anvil world's (aave_world, aave_node, aave_chain): tests/fakes/chain/plugin.py.
# The local world's (local_world: both, bridged, with the daemon's wallet): tests/fakes/local_world_plugin.py.
pytest_plugins = ["tests.fakes.exchange.plugin", "tests.fakes.chain.plugin", "tests.fakes.local_world_plugin"]

# Tests (and the daemons they start, which inherit the environment) never write into the user's own cache.
os.environ.setdefault("BASISD_CACHE_DIR", tempfile.mkdtemp(prefix="basisd-test-cache-"))
# Nor do they bind the positions API's fixed port: an in-process daemon, or one beside another run, picks a free one.
os.environ.setdefault("BASISD_API__PORT", "0")
CONFIGS = ROOT / "configs"


CEX = ["binance", "bybit", "okx"]
# Every mode on every share class it allows: (mode, share class, venues, capital in that class's currency).
MODE_CASES: list[tuple[str, str, list[str], int]] = [
    ("pure_lending", "usdt", ["aave_v3"], 100_000),
    ("pure_lending", "eth", ["aave_v3"], 30),
    ("btc_basis", "usdt", CEX, 100_000),
    ("eth_basis", "usdt", CEX, 100_000),
    ("eth_staking_only", "eth", ["etherfi"], 30),
    ("eth_leveraged", "eth", ["aave_v3", "etherfi"], 30),
    ("usdt_market_neutral_no_leverage", "usdt", [*CEX, "etherfi"], 100_000),
    ("usdt_market_neutral", "usdt", [*CEX, "aave_v3", "etherfi"], 100_000),
]
MODE_IDS = [f"{m}-{c}" for m, c, _, _ in MODE_CASES]


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A private copy of configs/ that a test may edit freely."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target
