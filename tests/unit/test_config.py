from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daemon.config import diff_reloadable, load_config, load_settings
from daemon.errors import ConfigError, ExitCode
from tests.conftest import CONFIGS

EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml"))


# Examples of what this build does not run yet: check-config refuses them as run does, naming the key.
NOT_YET: dict[str, str] = {}


# Examples that load only with secrets from the environment (never in the file): set here, as an operator would.
VENUE_KEYS = {f"BASISD_CREDENTIALS__{v.upper()}__{k.upper()}": f"{v}-{k}-0123456789"
              for v in ("binance", "bybit", "okx") for k in ("api_key", "api_secret")} \
    | {"BASISD_CREDENTIALS__OKX__PASSPHRASE": "okx-passphrase-0123"}
CHAIN_KEYS = {"BASISD_CREDENTIALS__RPC_URL": "http://127.0.0.1:8545",
              "BASISD_CREDENTIALS__WALLET_PRIVATE_KEY": "0x" + "59" * 32}
NEEDS_KEYS = {"live.yaml": VENUE_KEYS, "live-chain.yaml": VENUE_KEYS | CHAIN_KEYS,
              "local-world.yaml": VENUE_KEYS | CHAIN_KEYS}
# Examples on chain name an address book the operator (or the local world) writes: a minimal one stands in.
NEEDS_BOOK = ("live-chain.yaml", "local-world.yaml")
RESERVE = {"underlying": "0x" + "01" * 20, "aToken": "0x" + "02" * 20, "variableDebtToken": "0x" + "03" * 20,
           "decimals": 18}
BOOK = {"chainId": 1, "Pool": "0x" + "0a" * 20, "AaveOracle": "0x" + "0b" * 20, "SwapRouter": "0x" + "0c" * 20,
        "emode": {"id": 1}, "reserves": {"WETH": RESERVE, "weETH": RESERVE, "USDT": RESERVE}}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_loads(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in NEEDS_KEYS.get(path.name, {}).items():
        monkeypatch.setenv(key, value)
    if path.name in NEEDS_BOOK:
        (tmp_path / "book.json").write_text(json.dumps(BOOK))
        monkeypatch.setenv("BASISD_CHAIN__ADDRESS_BOOK", str(tmp_path / "book.json"))
    data_dir = (yaml.safe_load(path.read_text()).get("replay") or {}).get("data_dir")
    if data_dir and not (path.parent / data_dir).is_dir():
        pytest.skip(f"{path.name} replays {path.parent / data_dir}, which is not present here")
    if path.name in NOT_YET:
        assert problems_of(path) == [f"{path}: {NOT_YET[path.name]}"]
        return
    config = load_config(path)
    assert config.mode.name == config.settings.strategy.mode


@pytest.mark.parametrize(
    ("mode", "share_class", "venues"),
    [
        ("pure_lending", "usdt", ["aave_v3"]),
        ("pure_lending", "eth", ["aave_v3"]),
        ("btc_basis", "usdt", ["binance", "bybit", "okx"]),
        ("eth_basis", "usdt", ["binance", "bybit", "okx"]),
        ("eth_staking_only", "eth", ["etherfi"]),
        ("eth_leveraged", "eth", ["aave_v3", "etherfi"]),
        ("usdt_market_neutral_no_leverage", "usdt", ["binance", "bybit", "okx", "etherfi"]),
        ("usdt_market_neutral", "usdt", ["binance", "bybit", "okx", "aave_v3", "etherfi"]),
    ],
)
def test_every_mode_of_the_domain_loads_with_its_share_class(
    catalog: Path, mode: str, share_class: str, venues: list[str]
) -> None:
    root = write(catalog / "run.yaml", strategy(mode=mode, share_class=share_class, venues=venues))
    config = load_config(root)
    assert config.hedged == (share_class == "usdt" and config.mode.basis_trade)
    if config.hedged:
        assert abs(sum(config.params.hedge_allocation.values()) - 1) < 1e-12


def test_target_ltv_is_one_knob_from_max_ltv_and_spread() -> None:
    config = load_config(CONFIGS / "replay.yaml")
    assert config.params.target_ltv == pytest.approx(0.93 * (1 - 0.0225))


def strategy(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "mode": "usdt_market_neutral", "share_class": "usdt",
        "venues": ["binance", "bybit", "okx", "aave_v3", "etherfi"], "initial_capital": 100000,
    }
    base.update(overrides)
    return {"strategy": base}


def write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert int(caught.value.exit_code) == int(ExitCode.CONFIG) == 78
    return [str(p) for p in caught.value.problems]


def test_unknown_key_is_named_with_its_file(catalog: Path) -> None:
    root = write(catalog / "run.yaml", {**strategy(), "metrics": {"prot": 9000}})
    assert problems_of(root) == [f"{root}: metrics.prot: unknown key (not a setting here; check the spelling)"]


def test_wrong_type_is_named_with_the_value_that_was_given(catalog: Path) -> None:
    root = write(catalog / "run.yaml", {**strategy(), "metrics": {"port": "ninety"}})
    (problem,) = problems_of(root)
    assert problem.startswith(f"{root}: metrics.port: ") and "integer" in problem and "'ninety'" in problem


def test_missing_required_key(catalog: Path) -> None:
    data = strategy()
    del data["strategy"]["initial_capital"]  # type: ignore[attr-defined]
    root = write(catalog / "run.yaml", data)
    assert problems_of(root) == [f"{root}: strategy.initial_capital: required key is missing"]


def test_out_of_range_threshold(catalog: Path) -> None:
    root = write(catalog / "run.yaml", {**strategy(), "risk": {"margin_warning_ratio": 1.5}})
    (problem,) = problems_of(root)
    assert problem.startswith(f"{root}: risk.margin_warning_ratio: ") and "less than or equal to 1" in problem


def test_misordered_thresholds(catalog: Path) -> None:
    root = write(catalog / "run.yaml", {**strategy(), "risk": {"margin_urgent_ratio": 0.25}})
    (problem,) = problems_of(root)
    assert "risk" in problem and "maintenance < urgent < warning" in problem


def test_usdt_share_class_that_stakes_without_a_hedge_is_rejected_naming_the_mode_file(catalog: Path) -> None:
    mode_file = catalog / "modes" / "usdt_market_neutral.yaml"
    mode = yaml.safe_load(mode_file.read_text())
    mode["basis_trade"] = False
    write(mode_file, mode)
    root = write(catalog / "run.yaml", strategy())
    (problem,) = problems_of(root)
    assert problem.startswith(f"{mode_file}: basis_trade: ") and "must hedge" in problem


def test_eth_share_class_never_hedges_and_a_derivable_setting_is_corrected_with_a_warning(catalog: Path) -> None:
    mode_file = catalog / "modes" / "eth_leveraged.yaml"
    mode = yaml.safe_load(mode_file.read_text())
    mode["basis_trade"] = True
    mode["params"]["hedge_allocation"] = {"binance": 1.0}
    write(mode_file, mode)
    root = write(catalog / "run.yaml", strategy(mode="eth_leveraged", share_class="eth",
                                                  venues=["aave_v3", "etherfi"], initial_capital=30))
    config = load_config(root)
    assert config.hedged is False
    assert any("basis_trade" in w and "never hedges" in w for w in config.warnings)


def test_mode_refuses_a_share_class_it_does_not_support(catalog: Path) -> None:
    root = write(catalog / "run.yaml", strategy(mode="eth_basis", share_class="eth",
                                                  venues=["binance", "bybit", "okx"]))
    assert any("strategy.share_class" in p and "usdt" in p for p in problems_of(root))


def test_hedge_weights_must_sum_to_one_and_the_override_is_blamed_on_the_root_file(catalog: Path) -> None:
    root = write(catalog / "run.yaml", strategy(params={"hedge_allocation": {"binance": 0.5, "bybit": 0.3}}))
    (problem,) = problems_of(root)
    assert problem.startswith(f"{root}: strategy.params.hedge_allocation: ") and "sum to 1" in problem


def test_missing_venue_and_unknown_catalog_entries_are_all_reported_at_once(catalog: Path) -> None:
    root = write(catalog / "run.yaml", strategy(mode="no_such_mode", venues=["binance", "kraken"]))
    found = problems_of(root)
    assert any("strategy.mode" in p and "no modes named 'no_such_mode'" in p for p in found)
    assert any("strategy.venues[1]" in p and "'kraken'" in p for p in found)


def test_path_traversal_in_a_catalog_name_is_refused(catalog: Path) -> None:
    root = write(catalog / "run.yaml", strategy(mode="../../etc/passwd"))
    assert any("not a catalog name" in p for p in problems_of(root))


def test_invalid_yaml_names_the_line(catalog: Path) -> None:
    root = catalog / "run.yaml"
    root.write_text("strategy:\n  mode: [unclosed\n")
    (problem,) = problems_of(root)
    assert problem.startswith(f"{root}: line ") and "not valid YAML" in problem


def test_a_config_that_is_not_a_mapping(catalog: Path) -> None:
    root = catalog / "run.yaml"
    root.write_text("- a\n- b\n")
    assert problems_of(root) == [f"{root}: (top level): expected a mapping of keys, found list"]


def test_environment_overrides_the_file_and_is_named_when_wrong(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(catalog / "run.yaml", {**strategy(), "metrics": {"port": 9100}})
    monkeypatch.setenv("BASISD_METRICS__PORT", "9555")
    monkeypatch.setenv("BASISD_SUPERVISOR__RESTART_BUDGET_COUNT", "9")
    settings = load_settings(root)
    assert settings.metrics.port == 9555
    assert settings.supervisor.restart_budget_count == 9
    assert settings.supervisor.heartbeat_timeout_s == 10.0  # the rest of the section keeps its defaults
    monkeypatch.setenv("BASISD_METRICS__PORT", "not-a-port")
    (problem,) = problems_of(root)
    assert problem.startswith("environment variable BASISD_METRICS__PORT: metrics.port: ")


def test_settings_are_frozen() -> None:
    settings = load_settings(CONFIGS / "replay.yaml")
    with pytest.raises(Exception, match="frozen"):
        settings.metrics.port = 1  # type: ignore[misc]


def test_reload_diff_separates_thresholds_from_settings_that_need_a_restart(catalog: Path) -> None:
    root = write(catalog / "run.yaml", strategy())
    old = load_settings(root)
    write(root, {**strategy(), "risk": {"delta_act_fraction": 0.06}, "metrics": {"port": 9999}})
    changed, ignored = diff_reloadable(old, load_settings(root))
    assert changed == [("risk.delta_act_fraction", 0.05, 0.06)]
    assert ignored == ["metrics"]


@pytest.mark.parametrize(
    ("mode", "share_class", "venues"),
    [
        ("pure_lending", "usdt", ["aave_v3"]),
        ("eth_leveraged", "eth", ["aave_v3", "etherfi"]),
        ("usdt_market_neutral", "usdt", ["binance", "bybit", "okx", "aave_v3", "etherfi"]),
        ("btc_basis", "usdt", ["binance", "bybit", "okx"]),
    ],
)
def test_every_config_becomes_a_valid_domain_mode_spec(
    catalog: Path, mode: str, share_class: str, venues: list[str]
) -> None:
    from decimal import Decimal

    from daemon.mode_spec import mode_spec

    config = load_config(write(catalog / "run.yaml", strategy(mode=mode, share_class=share_class, venues=venues)))
    spec = mode_spec(config)
    assert spec.hedged == config.hedged and spec.share_class == config.share_class.currency
    if spec.borrowing:
        assert spec.target_ltv == Decimal("0.93") * (1 - Decimal("0.0225"))


def test_shocks_belong_to_the_synthetic_market_and_inside_the_replay() -> None:
    from daemon.config import load_config
    from daemon.errors import ConfigError
    from tests.conftest import CONFIGS

    with pytest.raises(ConfigError) as caught:
        load_config(CONFIGS / "replay.yaml",
                    {"replay": {"hours": 10, "shocks": [{"at_hour": 12, "eth_move_fraction": 0.5}]}})
    assert any("past the replay's end" in str(p) for p in caught.value.problems)


def test_eigen_rewards_need_weeth() -> None:
    from daemon.config import load_config
    from daemon.errors import ConfigError
    from tests.conftest import CONFIGS

    with pytest.raises(ConfigError) as caught:
        load_config(CONFIGS / "replay.yaml", {"strategy": {"params": {"lst": "wstETH", "rewards_mode": "base_eigen"}}})
    assert any("rewards_mode" in str(p) and "weETH" in str(p) for p in caught.value.problems)
