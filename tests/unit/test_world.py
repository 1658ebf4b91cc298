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
            with pytest.raises(ChainUnavailable, match="this run has none"):
                await world.chain.transfer_usdt_to_cex("bybit", Decimal(10), "ref")
        finally:
            await world.aclose()

    anyio.run(main)


def test_live_with_an_address_book_trades_the_wallet_on_chain_and_feeds_the_chain_s_market(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Built without a node: nothing is asked of the chain (or a venue) before `start`."""
    import json

    from daemon.live_chain import ThrottledChainSource
    from daemon.venues.web3_chain import Web3Chain

    for venue in ("binance", "bybit", "okx"):
        for key in ("api_key", "api_secret", "passphrase"):
            monkeypatch.setenv(f"BASISD_CREDENTIALS__{venue.upper()}__{key.upper()}", f"{venue}-{key}-0123456789")
    reserve = {"underlying": "0x" + "01" * 20, "aToken": "0x" + "02" * 20, "variableDebtToken": "0x" + "03" * 20,
               "decimals": 18}
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"chainId": 31337, "Pool": "0x" + "0a" * 20, "AaveOracle": "0x" + "0b" * 20,
                                "SwapRouter": "0x" + "0c" * 20, "emode": {"id": 1},
                                "reserves": {"WETH": reserve, "weETH": reserve, "USDT": {**reserve, "decimals": 6}}}))
    monkeypatch.setenv("BASISD_CHAIN__ADDRESS_BOOK", str(book))
    monkeypatch.setenv("BASISD_RUNTIME__STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BASISD_CREDENTIALS__RPC_URL", "http://127.0.0.1:1/secret-key-in-the-url")
    monkeypatch.setenv("BASISD_CREDENTIALS__WALLET_PRIVATE_KEY", "0x" + "59" * 32)

    async def main() -> None:
        config = load_config(CONFIGS / "local-world.yaml")
        spec = mode_spec(config)
        assert spec.wallet_transfers  # with a wallet, the strategy moves capital between it and the venues
        world = build_world(config, spec, LosslessChannel("reports", 64))
        try:
            assert isinstance(world.chain, Web3Chain) and world.start is not None
            assert isinstance(world.feed, LiveFeed) and "chain" in world.feed.health
            assert isinstance(world.feed._chain, ThrottledChainSource)
            assert "secret-key-in-the-url" not in repr(world.chain) and "5959" not in repr(world.chain)
        finally:
            await world.aclose()

    anyio.run(main)
