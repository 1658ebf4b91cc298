"""pytest fixtures for the anvil test world (registered from tests/conftest.py through `pytest_plugins`).

- `aave_world` (session): the built world (state file, address book), from the cache or built once (~3 s).
- `aave_chain` (per test): a fresh anvil booted from that state (~50 ms), as an `AaveChain` with the levers.

Without node_modules the fixtures fail, saying to run `npm ci`: the anvil tests never skip (CI installs it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from .artifacts import ChainToolsMissing
from .chain import AaveChain
from .node import AnvilNode
from .world import BuiltWorld, build_world


@pytest.fixture(scope="session")
def aave_world() -> BuiltWorld:
    try:
        return build_world()
    except ChainToolsMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def aave_node(aave_world: BuiltWorld) -> Iterator[AnvilNode]:
    """A fresh node of the world, stopped by PID at teardown (a test may stop or restart it itself)."""
    node = AnvilNode(load_state=aave_world.state, timestamp=aave_world.boot_timestamp)
    try:
        yield node
    finally:
        node.stop()


@pytest_asyncio.fixture
async def aave_chain(aave_world: BuiltWorld, aave_node: AnvilNode) -> AsyncIterator[AaveChain]:
    chain = AaveChain(aave_node.url, aave_world.book, aave_world.contracts)
    await chain.start()
    try:
        yield chain
    finally:
        await chain.close()
