"""The drawdown breaker's and seed 004's keys: bounded, validated, refused by name (exit 78), and what they build."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_settings
from daemon.errors import ConfigError
from daemon.risk_wiring import breaker_settings, execution_limits
from daemon.settings import RiskSettings
from tests.conftest import ROOT

D = Decimal


def run_yaml(catalog: Path, **risk: Any) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["risk"] = risk
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("risk", "key", "says"), [
    ({"max_position_usd": 0}, "risk.max_position_usd", "greater than or equal to 10"),
    ({"max_position_usd": 1e12}, "risk.max_position_usd", "less than or equal to 1000000000"),
    ({"max_gas_price_gwei": 0}, "risk.max_gas_price_gwei", "greater than or equal to 0.1"),
    ({"max_gas_price_gwei": 1e6}, "risk.max_gas_price_gwei", "less than or equal to 10000"),
    ({"max_slippage_bps": -5}, "risk.max_slippage_bps", "greater than or equal to 0.1"),
    ({"max_slippage_bps": 5000}, "risk.max_slippage_bps", "less than or equal to 1000"),
    ({"instruction_timeout_s": 0}, "risk.instruction_timeout_s", "greater than or equal to 1"),
    ({"instruction_timeout_s": 1e9}, "risk.instruction_timeout_s", "less than or equal to 86400"),
    ({"drawdown_reduce_unwind_fraction": 1}, "risk.drawdown_reduce_unwind_fraction", "less than 1"),
    ({"drawdown_close_unwind_fraction": 0}, "risk.drawdown_close_unwind_fraction", "greater than 0"),
    ({"daily_loss_limit_fraction": 0}, "risk.daily_loss_limit_fraction", "greater than 0"),
    ({"daily_loss_limit_fraction": 0.2}, "risk", "daily_loss_limit_fraction must not be above drawdown_halt_fraction"),
])
def test_a_bad_limit_is_refused_naming_its_key(catalog: Path, risk: dict[str, Any], key: str, says: str) -> None:
    path = run_yaml(catalog, **risk)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{path}: {key}: ") and says in p for p in problems), problems


def test_check_config_exits_78_naming_the_gas_cap(catalog: Path) -> None:
    path = run_yaml(catalog, max_gas_price_gwei=-1)
    done = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert "risk.max_gas_price_gwei" in done.stderr


def test_the_keys_reach_the_breaker_and_execution_exactly(catalog: Path) -> None:
    settings = load_settings(run_yaml(catalog, drawdown_reduce_unwind_fraction=0.25, drawdown_close_unwind_fraction=1,
                                      daily_loss_limit_fraction=0.015, max_position_usd=250_000, max_gas_price_gwei=60,
                                      max_slippage_bps=30, instruction_timeout_s=120))
    assert breaker_settings(settings.risk) == (D("0.03"), D("0.04"), D("0.05"), D("0.25"), D("1"), D("0.015"))
    limits = execution_limits(settings.risk)
    assert (limits.max_position_usd, limits.max_gas_price_gwei, limits.max_slippage_bps) == (D(250_000), D(60), D(30))
    assert limits.instruction_timeout_s == 120


def test_the_defaults_are_the_seeds() -> None:
    r = RiskSettings()
    # Seed 004: max_position_size_usd 1M, max_gas_price_gwei 100, slippage 0.5 %, execution timeout 300 s.
    assert (r.max_position_usd, r.max_gas_price_gwei, r.max_slippage_bps, r.instruction_timeout_s) == \
        (1_000_000, 100, 50, 300)
    # Seed 003: 3 % / 4 % / 5 %; level 1 halves the book (its "close the worst half").
    assert (r.drawdown_reduce_fraction, r.drawdown_close_fraction, r.drawdown_halt_fraction) == (0.03, 0.04, 0.05)
    assert r.drawdown_reduce_unwind_fraction == 0.5
    assert r.daily_loss_limit_fraction < r.drawdown_reduce_fraction
