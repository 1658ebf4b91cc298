"""Bad configurations, through the real CLI: exit 78 with a message naming the file and the key."""

from __future__ import annotations

import os
import signal
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


# --- input that used to crash (a traceback and exit 1) instead of being refused: issue 10 §2 ----------------------

SECRET = "SECRETZZZ123"


def basisd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "BASISD_DEBUG"}
    full_env.update({"BASISD_METRICS__PORT": "0", "BASISD_API__PORT": "0", **(env or {})})
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=full_env)


def every_command(config: Path, out: Path) -> list[list[str]]:
    """Every command that reads a config: each must refuse a bad one the same way."""
    return [["check-config", str(config)], ["run", "--config", str(config)],
            ["backtest", "--config", str(config), "--out", str(out)],
            ["status", "--config", str(config)], ["halt", "--config", str(config), "--reason", "drill"]]


def assert_refused(result: subprocess.CompletedProcess[str], *says: str) -> None:
    """Exit 78; stderr is the summary line and one line per problem, each naming what it must; no traceback."""
    assert result.returncode == 78, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0].startswith("invalid configuration (") and all(line.startswith("  - ") for line in lines[1:]), \
        result.stderr
    for text in says:
        assert text in result.stderr, result.stderr


def latin1(catalog: Path) -> tuple[Path, str]:
    path = catalog / "run.yaml"
    original = (catalog / "replay.yaml").read_bytes()
    path.write_bytes(original + b"# caf\xe9\n")
    return path, f"{path}: (file): not UTF-8 text: byte 0xe9 at offset {len(original) + 5}"


def binary(catalog: Path) -> tuple[Path, str]:
    path = catalog / "run.yaml"
    path.write_bytes(bytes(range(255, -1, -1)))
    return path, f"{path}: (file): not UTF-8 text: byte 0xff at offset 0"


def directory(catalog: Path) -> tuple[Path, str]:
    path = catalog / "run.yaml"
    path.mkdir()
    return path, f"{path}: (file): is a directory, not a config file"


UNREADABLE = [latin1, binary, directory]


@pytest.mark.parametrize("make", UNREADABLE, ids=[m.__name__ for m in UNREADABLE])
def test_a_config_that_cannot_be_read_exits_78_from_every_command(catalog: Path, tmp_path: Path,
                                                                  make: Callable[[Path], tuple[Path, str]]) -> None:
    path, says = make(catalog)
    for argv in every_command(path, tmp_path / "out"):
        assert_refused(basisd(*argv), says)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BASISD_METRICS", "notjson", "environment variable BASISD_METRICS: metrics: not valid JSON"),
    ("BASISD_REPLAY__SHOCKS", "[[", "environment variable BASISD_REPLAY__SHOCKS: replay.shocks: not valid JSON"),
    ("BASISD_METRIC__PORT", "1", "environment variable BASISD_METRIC__PORT: (name): not a setting"),
    ("BASISD_CREDENTIAL__BINANCE__API_SECRET", SECRET,
     "environment variable BASISD_CREDENTIAL__BINANCE__API_SECRET: (name): not a setting"),
    ("BASISD_METRICS__PORTT", "1", "environment variable BASISD_METRICS__PORTT: metrics: not a setting"),
])
def test_a_bad_environment_variable_exits_78_naming_it_from_every_command(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    for argv in every_command(ROOT / "configs" / "replay.yaml", tmp_path / "out"):
        result = basisd(*argv, env={name: value})
        assert_refused(result, says)
        assert "configs/replay.yaml" not in result.stderr  # the variable is to blame, not the file
        assert SECRET not in result.stderr


def test_the_billion_laughs_exit_78_with_a_short_message(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    for argv in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = basisd(*argv)
        assert_refused(result, f"{path}: line 2, column 8: not valid YAML: YAML aliases (*name) are not allowed")
        assert len(result.stderr) < 2000


@pytest.mark.parametrize(("section", "text", "says"), [
    ("credentials", f"{{binance: {{api_secret={SECRET}}}}}", "credentials.binance.(a key not shown): unknown key"),
    ("credentials", "{okx: {passphrase: '1'}}", "credentials.okx.passphrase: too short: a secret needs at least 8"),
    ("runtime", "{status_interval_s: 1e-9}", "runtime.status_interval_s: Input should be greater than or equal to 0.1"),
    ("replay", "{speed: 1.0e+300}", "replay.speed: Input should be less than or equal to 10000000"),
    ("chaos", "{fail_actor: strategist}", "chaos.fail_actor: Input should be 'positions'"),
], ids=["secret-typo", "short-secret", "status-flood", "speed-overflow", "unknown-actor"])
def test_check_config_refuses_values_that_make_no_sense_and_never_prints_a_secret(
    catalog: Path, section: str, text: str, says: str
) -> None:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data.pop(section, None)
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data) + f"{section}: {text}\n")
    result = basisd("check-config", str(path))
    assert_refused(result, f"{path}: {says}")
    assert SECRET not in result.stderr


def test_check_config_refuses_infinite_capital(catalog: Path) -> None:
    path = catalog / "run.yaml"
    path.write_text((catalog / "replay.yaml").read_text().replace("initial_capital: 100000", "initial_capital: 1e400"))
    assert_refused(basisd("check-config", str(path)), f"{path}: strategy.initial_capital: Input should be a finite "
                                                      "number (was '1e400'); no setting may be infinite or NaN")


def test_check_config_refuses_a_paper_config_of_an_aave_mode_as_run_does(tmp_path: Path) -> None:
    path = tmp_path / "paper.yaml"
    data = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    data["strategy"].update({"mode": "usdt_market_neutral", "venues": ["binance", "bybit", "okx", "aave_v3",
                                                                      "etherfi"],
                             "catalog_dir": str(ROOT / "configs")})
    path.write_text(yaml.safe_dump(data))
    message = (f"{path}: strategy.mode: mode 'usdt_market_neutral' needs AAVE or staking on chain, which paper "
               "does not simulate at live prices: paper runs btc_basis or eth_basis")
    for argv in (["check-config", str(path)], ["run", "--config", str(path)]):
        assert_refused(basisd(*argv), message)


def test_backtest_capital_too_small_names_the_command_line(tmp_path: Path) -> None:
    result = basisd("backtest", "--config", "configs/replay.yaml", "--capital", "1e-9", "--out", str(tmp_path))
    assert_refused(result, "command line: strategy.initial_capital: 1e-09 USDT is below the least a run accepts")


def test_a_reload_of_a_file_that_is_not_utf8_is_rejected_and_the_daemon_runs_on(catalog: Path, tmp_path: Path) -> None:
    from tests.integration.daemon_process import DaemonProcess

    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["runtime"]["status_interval_s"] = 0.5
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = DaemonProcess(path, tmp_path)
    try:
        proc.wait_ready()
        path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
        proc.signal(signal.SIGHUP)
        rejected = proc.wait_for_event("reload_rejected", timeout_s=10)
        assert any("not UTF-8 text: byte 0xe9" in p for p in rejected["problems"])
        assert proc.proc.poll() is None
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=10) == 0
    finally:
        proc.close()
