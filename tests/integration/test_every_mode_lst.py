"""The matrix of runs the catalog accepts is the catalog's own (issue 11 §3), and check-config refuses the
combinations that would start and then fail on every decision cycle. The runs themselves are
`test_modes_on_replay`'s (every combination, on the synthetic market and on the history)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import REWARDS_LST, load_config
from daemon.errors import ExitCode
from tests.catalog_matrix import COMBINATIONS, Combination, combinations
from tests.conftest import CONFIGS
from tests.integration.daemon_process import ROOT


def catalog_entries(kind: str, catalog: Path = CONFIGS) -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted((catalog / kind).glob("*.yaml"))}


def test_the_matrix_is_every_mode_share_class_and_lst_of_the_catalog() -> None:
    modes, venues = catalog_entries("modes"), catalog_entries("venues")
    minted = {v["lst"]: name for name, v in venues.items() if v["kind"] == "staking"}
    assert {"weETH", "wstETH"} <= set(minted)  # etherfi and lido: the two the seeds name
    expected = set()
    for name, mode in modes.items():
        for share_class in mode["share_classes"]:
            lsts = sorted(minted) if mode.get("staking") else [None]
            expected |= {(name, share_class, lst) for lst in lsts}
    assert {(c.mode, c.share_class, c.lst) for c in COMBINATIONS} == expected
    assert len(COMBINATIONS) == len(expected)  # no combination twice
    for c in COMBINATIONS:
        if c.lst is not None:
            assert c.staking_venue == minted[c.lst] and c.staking_venue in c.venues
            # Another LST than EtherFi's earns no EIGEN/ETHFI: it runs on its oracle growth alone.
            assert c.lst == REWARDS_LST or c.params.get("rewards_mode", modes[c.mode]["params"].get(
                "rewards_mode", "base_only")) == "base_only"


@pytest.mark.parametrize("combination", COMBINATIONS, ids=[c.id for c in COMBINATIONS])
def test_check_config_accepts_every_combination_of_the_matrix(tmp_path: Path, combination: Combination) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"runtime": {"mode": "replay"}, "strategy": combination.strategy()}))
    config = load_config(path)
    assert config.mode.name == combination.mode and config.params.lst == (combination.lst or
                                                                            config.params.lst)


def test_a_new_mode_and_a_new_staking_venue_are_in_the_matrix_without_listing_them(tmp_path: Path) -> None:
    catalog = tmp_path / "configs"
    shutil.copytree(CONFIGS, catalog)
    mode = yaml.safe_load((catalog / "modes" / "eth_staking_only.yaml").read_text())
    (catalog / "modes" / "eth_staking_twice.yaml").write_text(yaml.safe_dump({**mode, "name": "eth_staking_twice"}))
    (catalog / "venues" / "lido_mirror.yaml").write_text(yaml.safe_dump(
        {"name": "lido_mirror", "kind": "staking", "lst": "wstETH"}))
    found = {(c.mode, c.staking_venue) for c in combinations(catalog)}
    assert {("eth_staking_twice", "etherfi"), ("eth_staking_twice", "lido"), ("eth_staking_twice", "lido_mirror"),
            ("eth_leveraged", "lido_mirror")} <= found


# --- what cannot run is refused, exit 78 naming the key ------------------------------------------------------

Case = Callable[[Path], tuple[dict[str, Any], str, str]]  # edits the catalog; returns (strategy, file, key)


def strategy_of(mode: str, share_class: str, lst: str | None = None, **params: Any) -> dict[str, Any]:
    [c] = [c for c in COMBINATIONS if (c.mode, c.share_class, c.lst) == (mode, share_class, lst)]
    out = c.strategy()
    out["params"] = {**out.get("params", {}), **params}
    return out


def lst_without_its_venue(catalog: Path) -> tuple[dict[str, Any], str, str]:
    # The issue's own case, one step on: wstETH named, but only EtherFi (weETH) listed.
    strategy = strategy_of("eth_staking_only", "eth", "wstETH")
    strategy["venues"] = ["etherfi"]
    return strategy, "run.yaml", "strategy.venues"


def rewards_on_another_lst(catalog: Path) -> tuple[dict[str, Any], str, str]:
    strategy = strategy_of("usdt_market_neutral", "usdt", "wstETH", rewards_mode="base_eigen_seasonal")
    return strategy, "run.yaml", "strategy.params.rewards_mode"


def staking_venue_minting_an_unknown_lst(catalog: Path) -> tuple[dict[str, Any], str, str]:
    venue = yaml.safe_load((catalog / "venues" / "lido.yaml").read_text())
    (catalog / "venues" / "lido.yaml").write_text(yaml.safe_dump({**venue, "lst": "stETH"}))
    strategy = strategy_of("eth_staking_only", "eth", "weETH")
    strategy["venues"] = ["etherfi", "lido"]
    return strategy, "lido.yaml", "lst"


def staking_a_btc_asset(catalog: Path) -> tuple[dict[str, Any], str, str]:
    # Bought BTC, then tried to move ETH to the wallet to stake: the entry failed at step 8, every hour.
    return strategy_of("usdt_market_neutral", "usdt", "weETH", asset="BTC"), "run.yaml", "strategy.params.asset"


def no_gas_reserve_on_the_eth_class(catalog: Path) -> tuple[dict[str, Any], str, str]:
    # 48 instructions, 48 failed in 48 hours: the wallet could not pay the entry's gas.
    return strategy_of("eth_staking_only", "eth", "wstETH", gas_reserve_eth=0), "run.yaml", \
        "strategy.params.gas_reserve_eth"


def no_margin_left_for_the_hedge(catalog: Path) -> tuple[dict[str, Any], str, str]:
    # a = 0.9 opens the shorts at a margin ratio of 0.11, under the urgent level: the risk actor reduces at once.
    return strategy_of("usdt_market_neutral_no_leverage", "usdt", "wstETH", stake_allocation=0.9), "run.yaml", \
        "strategy.params.stake_allocation"


def margin_target_under_the_warning_level(catalog: Path) -> tuple[dict[str, Any], str, str]:
    # The basis opens at, and is topped up to, a ratio the risk calls urgent: 85 of 86 instructions failed.
    mode = catalog / "modes" / "btc_basis.yaml"
    mode.write_text(yaml.safe_dump({**yaml.safe_load(mode.read_text()), "params": {
        **yaml.safe_load(mode.read_text())["params"], "margin_ratio_target": 0.12}}))
    return strategy_of("btc_basis", "usdt"), "btc_basis.yaml", "params.margin_ratio_target"


CASES: list[Case] = [lst_without_its_venue, rewards_on_another_lst, staking_venue_minting_an_unknown_lst,
                     staking_a_btc_asset, no_gas_reserve_on_the_eth_class, no_margin_left_for_the_hedge,
                     margin_target_under_the_warning_level]


@pytest.mark.subprocess
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_check_config_refuses_a_combination_that_cannot_run(tmp_path: Path, case: Case) -> None:
    catalog = tmp_path / "configs"
    shutil.copytree(CONFIGS, catalog)
    strategy, blamed, key = case(catalog)
    strategy["catalog_dir"] = str(catalog)
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump({"runtime": {"mode": "replay"}, "strategy": strategy}))
    result = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == ExitCode.CONFIG, result.stderr  # 78
    lines = [line for line in result.stderr.splitlines() if f": {key}: " in line]
    assert lines and all(blamed in line for line in lines), result.stderr


def test_a_reload_whose_thresholds_the_running_mode_contradicts_is_rejected(tmp_path: Path) -> None:
    """SIGHUP applies risk thresholds; one that puts the margin warning level at the mode's margin target would
    leave the hedge in warning from then on, so the reload is refused as check-config would refuse the file."""
    from daemon.app import Daemon
    from daemon.systemd import Notifier

    path = tmp_path / "run.yaml"
    data: dict[str, Any] = {"runtime": {"mode": "replay"}, "metrics": {"enabled": False},
                            "strategy": strategy_of("eth_basis", "usdt", margin_ratio_target=0.5)}
    path.write_text(yaml.safe_dump(data))
    daemon = Daemon(load_config(path), Notifier(""))
    before = daemon.risk_settings
    path.write_text(yaml.safe_dump({**data, "risk": {"margin_maintenance_ratio": 0.3, "margin_urgent_ratio": 0.4,
                                                     "margin_warning_ratio": 0.5}}))
    daemon.reload()
    assert daemon.risk_settings == before  # rejected: the previous thresholds stay
    path.write_text(yaml.safe_dump({**data, "risk": {"margin_warning_ratio": 0.3}}))
    daemon.reload()
    assert daemon.risk_settings.margin_warning_ratio == 0.3  # a threshold the mode can run with is applied
