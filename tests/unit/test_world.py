"""The world a run trades in is chosen by its runtime mode in one place (daemon.world)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.config import load_config
from daemon.domain.ledger import WALLET
from daemon.errors import ConfigError
from daemon.mode_spec import mode_spec
from daemon.replay.live_feed import LiveFeed
from daemon.world import build_world

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_a_replay_trades_in_the_simulated_world_holding_its_capital_in_the_wallet() -> None:
    async def main() -> None:
        config = load_config(CONFIGS / "replay.yaml")
        world = build_world(config, mode_spec(config), LosslessChannel("reports", 64))
        assert set(world.exchanges) == {n for n, v in config.venues.items() if v.kind == "cex"}
        capital = Decimal(str(config.settings.strategy.initial_capital))
        assert world.chain.book.balance(WALLET, "USDT") == capital
        assert world.opening.tokens[0].delta == capital and world.opening.ts_ns <= world.clock.now_ns()

    anyio.run(main)


def test_paper_trades_simulated_exchanges_on_the_wall_clock_fed_by_every_venue_s_live_data() -> None:
    async def main() -> None:
        config = load_config(CONFIGS / "paper.yaml")
        world = build_world(config, mode_spec(config), LosslessChannel("reports", 64))
        try:
            assert isinstance(world.clock, WallClock) and isinstance(world.feed, LiveFeed)
            assert set(world.exchanges) == set(world.feed.health) == {"binance", "bybit", "okx"}
            capital = Decimal(str(config.settings.strategy.initial_capital))
            assert world.chain.book.balance(WALLET, "USDT") == capital
        finally:
            await world.aclose()

    anyio.run(main)


@pytest.mark.parametrize("mode", ["live"])
def test_a_mode_without_a_world_is_a_config_error_naming_the_key(mode: str) -> None:
    # load_config refuses these modes first; the world is the last line, should a caller bypass it.
    config = load_config(CONFIGS / "replay.yaml")
    runtime = config.settings.runtime.model_copy(update={"mode": mode})
    bypassed = replace(config, settings=config.settings.model_copy(update={"runtime": runtime}))
    with pytest.raises(ConfigError) as refused:
        build_world(bypassed, mode_spec(bypassed), LosslessChannel("reports", 64))
    assert "runtime.mode" in str(refused.value) and mode in str(refused.value)
