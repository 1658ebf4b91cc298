"""DOMAIN.md §8 recommendations not covered beside their modules; each test fails under the seed's version."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest
import yaml

from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.config import load_config
from daemon.domain.ledger import WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import BalancesChanged, OracleRateReported, VenueReport
from daemon.domain.strategy import Change, ModeSpec, StrategyView, decide
from daemon.errors import ConfigError
from daemon.mode_spec import mode_spec
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal


def write_run(catalog: Path, **strategy: object) -> Path:
    base: dict[str, object] = {"mode": "usdt_market_neutral", "share_class": "usdt",
                               "venues": ["binance", "bybit", "okx", "aave_v3", "etherfi"], "initial_capital": 1000}
    base.update(strategy)
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump({"strategy": base}))
    return path


def test_12_leveraged_weeth_uses_emode_parameters_not_the_standard_ones(catalog: Path) -> None:
    spec = mode_spec(load_config(write_run(catalog)))
    assert spec.liquidation_threshold == D("0.95")  # e-mode; standard would be 0.85 (JSON) or 0.80 (CSV)
    assert spec.target_ltv == D("0.93") * (1 - D("0.0225"))  # from e-mode max LTV 0.93, not 0.80 / 0.775


def test_13_cex_maintenance_margin_is_per_venue_and_thresholds_must_clear_it(catalog: Path) -> None:
    okx = catalog / "venues" / "okx.yaml"
    venue = yaml.safe_load(okx.read_text())
    venue["maintenance_margin_ratio"] = 0.16  # a stricter venue tier than the urgent level (0.15)
    okx.write_text(yaml.safe_dump(venue))
    with pytest.raises(ConfigError) as caught:
        load_config(write_run(catalog))
    assert any("risk.margin_urgent_ratio" in str(p) and "okx" in str(p) for p in caught.value.problems)


def test_26_an_lst_exit_is_either_an_instant_swap_with_a_fee_or_a_protocol_redemption_without() -> None:
    async def exits() -> tuple[Decimal, Decimal]:
        reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 16)
        board = MarketBoard()
        board.update(OracleRateReported("weETH/ETH", D("1.05"), 0, 0))
        chain = SimulatedChain(VirtualClock(0, None), board, reports, {}, swap_fee_bps=D(20))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "weETH", D(20)),)))
        fast = await chain.swap_lst_to_eth(D(10), "fast")
        slow = await chain.redeem_lst(D(10), "slow")
        kinds = [r.change.reason.value for r in (reports.receive_nowait(), reports.receive_nowait())
                 if isinstance(r, BalancesChanged)]
        assert kinds == ["TRADE_EXECUTED", "STAKE_WITHDRAWAL"]
        return fast, slow

    fast, slow = anyio.run(exits)
    assert slow == D("10.5")  # at the protocol rate: Lido's "instant, 0 days" would give this at once
    assert fast == D("10.5") * (1 - D("0.002"))  # the instant exit pays the market


def test_btc_basis_decides_in_btc() -> None:
    spec = ModeSpec("btc_basis", "USDT", "BTC", False, False, False, True, D(1), D(0), D("0.95"),
                    {"binance": D("0.5"), "bybit": D("0.5")}, D(1), D("0.02"), D(10))
    view = StrategyView(D(100_000), D(50_000), D(1), D(0), D(0), D(0), D(0), D(100_000), {})
    (entry,) = decide(Change.INITIAL_SETUP, spec, view).instructions
    buy = next(s for s in entry.steps if s.action == "BUY_SPOT")
    shorts = [s for s in entry.steps if s.action == "OPEN_PERP_SHORT"]
    assert buy.params["asset"] == "BTC" and buy.params["amount"] == D(1)  # N = E/(1+r) = 50,000 USD of BTC
    assert all(s.params["asset"] == "BTC" for s in shorts)
    assert sum(D(str(s.params["amount"])) for s in shorts) == D(1)
