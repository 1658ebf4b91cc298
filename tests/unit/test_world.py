"""The world a run trades in is chosen by its runtime mode in one place (daemon.world)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.config import load_config
from daemon.domain.ledger import WALLET
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
        assert world.simulated_chain is not None
        assert world.simulated_chain.book.balance(WALLET, "USDT") == capital
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
            assert world.simulated_chain is not None
            assert world.simulated_chain.book.balance(WALLET, "USDT") == capital
        finally:
            await world.aclose()

    anyio.run(main)


def test_live_trades_the_venues_accounts_on_the_wall_clock_with_no_wallet_and_opens_once_they_are_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.venues.ccxt_exchange import CcxtExchange
    from daemon.venues.no_chain import ChainUnavailable, NoChain

    for venue in ("binance", "bybit", "okx"):
        for key in ("api_key", "api_secret", "passphrase"):
            monkeypatch.setenv(f"BASISD_CREDENTIALS__{venue.upper()}__{key.upper()}", f"{venue}-{key}-0123456789")
    monkeypatch.setenv("BASISD_RUNTIME__STATE_DIR", "/tmp/basisd-test-state")

    async def main() -> None:
        config = load_config(CONFIGS / "live.yaml")
        world = build_world(config, mode_spec(config), LosslessChannel("reports", 64))
        try:
            assert isinstance(world.clock, WallClock) and isinstance(world.feed, LiveFeed)
            assert all(isinstance(e, CcxtExchange) for e in world.exchanges.values())
            assert set(world.exchanges) == {"binance", "bybit", "okx"} and not world.simulated
            assert isinstance(world.chain, NoChain) and world.simulated_chain is None
            assert world.start is not None  # nothing was asked of a venue yet: the books open once it has run
            assert world.opening.tokens == () and world.opening.perps == ()
            with pytest.raises(ChainUnavailable, match="live has no chain adapter yet"):
                await world.chain.transfer_usdt_to_cex("bybit", Decimal(10), "ref")
        finally:
            await world.aclose()

    anyio.run(main)
