"""pytest fixture for the local world (registered from tests/conftest.py through `pytest_plugins`).

- `local_world` (per test): a started `ThreadedLocalWorld` (tests/fakes/local_world.py) on free ports in the test's
  own directory: anvil booted from the built world, the exchange fake with the chain bridge, the wallet funded with
  100,000 USDT and 1 ETH of gas, its executor deployed; `.env` is what `live.env` holds (for a daemon subprocess),
  `.world` the LocalWorld, `.run(coro)` / `.call(fn)` act on its loop. Stopped (anvil by PID) at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.chain.world import BuiltWorld
from tests.fakes.local_world import LocalWorld, ThreadedLocalWorld


@pytest.fixture
def local_world(tmp_path: Path, aave_world: BuiltWorld) -> Iterator[ThreadedLocalWorld]:
    world = ThreadedLocalWorld(LocalWorld(tmp_path / "local-world", built=aave_world)).start()
    try:
        yield world
    finally:
        world.stop()
