"""Bad configurations, through the real CLI: exit 78 with a message naming the file and the key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.integration.daemon_process import ROOT

pytestmark = pytest.mark.subprocess

Edit = Callable[[Path, dict[str, object]], Path]  # edits the catalog or root data; returns the file to blame


def unknown_key(catalog: Path, data: dict[str, object]) -> Path:
    data["metrics"] = {"hostt": "0.0.0.0"}
    return catalog / "run.yaml"


def wrong_type(catalog: Path, data: dict[str, object]) -> Path:
    data["replay"] = {"speed": "fast"}
    return catalog / "run.yaml"


def missing_required(catalog: Path, data: dict[str, object]) -> Path:
    del data["strategy"]["share_class"]  # type: ignore[attr-defined]
    return catalog / "run.yaml"


def out_of_range(catalog: Path, data: dict[str, object]) -> Path:
    data["risk"] = {"drawdown_halt_fraction": 2.0}
    return catalog / "run.yaml"


def contradictory_mode(catalog: Path, data: dict[str, object]) -> Path:
    mode_file = catalog / "modes" / "usdt_market_neutral.yaml"
    mode = yaml.safe_load(mode_file.read_text())
    mode["basis_trade"] = False  # USDT share class staking without a hedge (ADR-26)
    mode_file.write_text(yaml.safe_dump(mode))
    return mode_file


def bad_venue_file(catalog: Path, data: dict[str, object]) -> Path:
    venue_file = catalog / "venues" / "okx.yaml"
    venue = yaml.safe_load(venue_file.read_text())
    venue["maintenance_margin_ratio"] = 1.5
    venue_file.write_text(yaml.safe_dump(venue))
    return venue_file


def negative_interval(catalog: Path, data: dict[str, object]) -> Path:
    data["reconcile"] = {"interval_s": -1}
    return catalog / "run.yaml"


def unknown_leverage(catalog: Path, data: dict[str, object]) -> Path:
    data["strategy"]["params"] = {"leverage": "loopy"}  # type: ignore[index]
    return catalog / "run.yaml"


CASES: list[tuple[Edit, str]] = [
    (negative_interval, "reconcile.interval_s"),
    (unknown_leverage, "strategy.params.leverage"),
    (unknown_key, "metrics.hostt"),
    (wrong_type, "replay.speed"),
    (missing_required, "strategy.share_class"),
    (out_of_range, "risk.drawdown_halt_fraction"),
    (contradictory_mode, "basis_trade"),
    (bad_venue_file, "maintenance_margin_ratio"),
]


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("edit", "key"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_config_exits_78_naming_file_and_key(catalog: Path, command: str, edit: Edit, key: str) -> None:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    blamed = edit(catalog, data)
    root = catalog / "run.yaml"
    root.write_text(yaml.safe_dump(data))
    args = ["check-config", str(root)] if command == "check-config" else ["run", "--config", str(root)]
    result = subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 78, result.stderr
    assert f"{blamed}: {key}: " in result.stderr, result.stderr
    assert result.stdout == ""


def test_good_config_checks_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "check-config", "configs/replay.yaml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "usdt_market_neutral" in result.stdout and "target LTV 0.909075" in result.stdout


@pytest.mark.parametrize("argv", [["run"], ["frobnicate"], ["run", "--config"], []])
def test_bad_command_line_is_a_usage_error(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 64
    assert "usage: basisd" in result.stderr and "error:" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(missing)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert f"{missing}: (file): file not found" in result.stderr


def test_a_drill_on_a_venue_that_does_not_exist_is_refused_at_start(catalog: Path) -> None:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["chaos"] = {"unreported_usdt": {"kraken": 40}}
    root = catalog / "run.yaml"
    root.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(root)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, env={**os.environ, "BASISD_METRICS__PORT": "0",
                                                                               "BASISD_API__PORT": "0"})
    assert result.returncode == 78, result.stderr
    assert "chaos.unreported_usdt" in result.stdout + result.stderr and "kraken" in result.stdout + result.stderr


def test_a_second_daemon_on_the_same_control_socket_is_refused(catalog: Path, tmp_path: Path) -> None:
    from tests.integration.daemon_process import DaemonProcess

    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["control"] = {"socket": str(tmp_path / "control.sock")}
    root = catalog / "run.yaml"
    root.write_text(yaml.safe_dump(data))
    first = DaemonProcess(root, tmp_path)
    try:
        first.wait_ready()
        second = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(root)], cwd=ROOT,
                                capture_output=True, text=True, timeout=30,
                                env={**os.environ, "BASISD_METRICS__PORT": "0", "BASISD_API__PORT": "0"})
        assert second.returncode == 78, second.stdout[-2000:] + second.stderr[-2000:]
        assert "another basisd is already listening" in second.stdout + second.stderr
        assert first.proc.poll() is None  # the first one is untouched
    finally:
        first.close()
