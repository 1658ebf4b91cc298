"""Configuration input that must be refused, never crash (issue 10 §2, §5 "Secrets").

Every case goes through `load_settings`/`load_config`, the functions `basisd run`, `check-config`, `backtest`,
the control commands and the SIGHUP reload all call: each must raise `ConfigError` (exit 78) naming the file
or environment variable, never another exception, and never quote a secret or an unbounded input.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from daemon import settings as settings_module
from daemon.config import load_config, load_settings
from daemon.config_sources import ENV_NOT_SETTINGS, environment_problems
from daemon.errors import ConfigError
from daemon.settings import (
    MIN_CAPITAL,
    MIN_SECRET_CHARS,
    CredentialsSettings,
    FeeSchedule,
    ModeDefinition,
    Settings,
    ShareClassDefinition,
    ShockSettings,
    StrategyParams,
    VenueDefinition,
)
from tests.conftest import CONFIGS, ROOT

SECRET = "SECRETZZZ123"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer's BASISD_* or credentials directory leaks in (nor conftest's API port: nothing binds here)."""
    for name in list(os.environ):
        if name.upper().startswith("BASISD_") and name != "BASISD_CACHE_DIR":
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def root(catalog: Path, text: str | None = None, **sections: Any) -> Path:
    """The shipped replay config in the editable catalog, with `sections` merged in (or `text` appended)."""
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data) + (text or ""))
    return path


def refused(path: Path, overrides: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return [str(p) for p in caught.value.problems]


def refused_settings(path: Path) -> list[str]:
    """What the SIGHUP reload sees: `load_settings` alone, which must raise ConfigError and nothing else."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [str(p) for p in caught.value.problems]


# --- files that cannot be read as text -----------------------------------------------------------------------


def test_a_latin1_byte_in_a_comment_is_named_with_its_offset(catalog: Path) -> None:
    path = catalog / "run.yaml"
    text = (catalog / "replay.yaml").read_bytes()
    path.write_bytes(text + b"# caf\xe9\n")
    offset = len(text) + len(b"# caf")
    line = text.count(b"\n") + 1
    assert refused_settings(path) == [f"{path}: (file): not UTF-8 text: byte 0xe9 at offset {offset} "
                                      f"(line {line}, column 6); save the file as UTF-8"]


def test_a_binary_file_is_refused_as_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)))
    (problem,) = refused_settings(path)
    assert problem.startswith(f"{path}: (file): not UTF-8 text: byte 0x80 at offset 128")


def test_a_binary_file_that_happens_to_be_utf8_is_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"strategy: {}\n  \x00\x01\x02\n")
    assert refused_settings(path) == [f"{path}: line 2, column 3: not valid YAML: control character #x0000 is not "
                                      "allowed"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert refused_settings(tmp_path) == [f"{tmp_path}: (file): is a directory, not a config file"]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # reading one would block the CLI, or the daemon in its SIGHUP handler, until a writer came
    assert refused_settings(fifo) == [f"{fifo}: (file): is a FIFO, not a config file"]


def test_a_device_is_refused() -> None:
    assert refused_settings(Path("/dev/zero")) == ["/dev/zero: (file): is a character device, not a config file"]


def test_a_file_too_large_to_be_a_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (1 << 20) + b"\n")
    assert refused_settings(path) == [f"{path}: (file): is larger than 1048576 bytes: not a config file"]


def test_a_file_the_reader_may_not_read_is_named() -> None:
    """Root reads any file, so the reader drops to `nobody` in a forked child when the tests run as root."""
    directory = Path(tempfile.mkdtemp(prefix="basisd-config-"))
    try:
        directory.chmod(0o755)
        path = directory / "run.yaml"
        path.write_text("strategy: {}\n")
        path.chmod(0)
        expected = [f"{path}: (file): cannot be read: Permission denied"]
        pid = os.fork()
        if pid == 0:  # the child exits 0 only if exactly that problem was reported
            code = 1
            try:
                if os.geteuid() == 0:
                    nobody = pwd.getpwnam("nobody")
                    os.setgroups([])
                    os.setgid(nobody.pw_gid)
                    os.setuid(nobody.pw_uid)
                try:
                    load_settings(path)
                    code = 2
                except ConfigError as exc:
                    code = 0 if [str(p) for p in exc.problems] == expected else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the unreadable file was not reported as it should be"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(("text", "says"), [
    ("metrics:\n  port: " + "9" * 5000 + "\n", "Exceeds the limit (4300 digits)"),
    ("replay:\n  start: 2024-13-45\n", "month must be in 1..12"),
    ("strategy: " + "[" * 100 + "]" * 100 + "\n", "nested more than 32 levels deep"),
    ("1: 2\n", "keys must be names, found 1"),
    ("? [a, b]\n: c\n", "found unhashable key"),
], ids=["huge-integer", "impossible-date", "deep-nesting", "number-key", "unhashable-key"])
def test_yaml_the_constructor_cannot_build_is_a_config_error(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    (problem,) = refused_settings(path)
    assert problem.startswith(str(path)) and says in problem


@pytest.mark.parametrize("key", ["_env_prefix", "_cli_parse_args", "_secrets_dir", "_env_file"])
def test_keys_that_would_configure_the_settings_loader_itself_are_unknown(catalog: Path, key: str) -> None:
    """Each is a keyword of pydantic-settings: `_cli_parse_args: true` made it parse sys.argv and exit 2, and
    `_env_prefix` turned every BASISD_* override (secrets included) off."""
    path = root(catalog, f"{key}: true\n")
    assert refused_settings(path) == [f"{path}: {key}: unknown key (not a setting here; check the spelling)"]


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_are_refused_in_a_short_message(tmp_path: Path) -> None:
    laughs = billion_laughs()
    assert len(laughs) < 1500  # 9^9 "lol"s once expanded
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert len(str(caught.value)) < 2000
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: line 2, column 8: not valid YAML: YAML aliases (*name) are not allowed in a config file: "
        "write the value out"]


def test_a_merge_key_is_an_alias_too(catalog: Path) -> None:
    path = root(catalog, "base: &base {port: 9100}\nmetrics:\n  <<: *base\n")
    (problem,) = refused(path)
    assert "YAML aliases (*name) are not allowed" in problem


def test_an_echoed_value_is_cut_to_80_characters(catalog: Path) -> None:
    (problem,) = refused(root(catalog, metrics={"port": "x" * 100_000}))
    assert problem.endswith("(was '" + "x" * 78 + "…)")  # 80 characters with the quote and the ellipsis
    assert len(problem) < 300


def test_a_mapping_or_list_given_is_never_echoed(catalog: Path) -> None:
    (problem,) = refused(root(catalog, metrics={"port": {"nested": "y" * 1000}}))
    assert "metrics.port" in problem and "yyy" not in problem


def test_a_long_unknown_key_is_cut_and_many_problems_are_counted_not_listed(catalog: Path) -> None:
    path = root(catalog, metrics={f"k{i}-" + "z" * 500: 1 for i in range(200)})
    problems = refused(path)
    assert len(problems) == 51 and problems[-1] == "(more): (more): 150 more problem(s) not shown"
    assert all(len(p) < 200 for p in problems)


# --- the environment ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "key"), [
    ("BASISD_METRICS", "notjson", "metrics"),
    ("BASISD_REPLAY__SHOCKS", "[[", "replay.shocks"),
    ("BASISD_CREDENTIALS", "{" + SECRET, "credentials"),
])
def test_malformed_json_in_an_override_names_the_variable_not_the_value(
    catalog: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, key: str
) -> None:
    monkeypatch.setenv(name, value)
    (problem,) = refused_settings(root(catalog))
    assert problem.startswith(f"environment variable {name}: {key}: not valid JSON (")
    assert value not in problem


@pytest.mark.parametrize(("name", "says"), [
    ("BASISD_METRIC__PORT", "(name): not a setting: no section 'metric'"),
    ("BASISD_CREDENTIAL__BINANCE__API_SECRET", "(name): not a setting: no section 'credential'"),
    ("BASISD_METRICS__PORTT", "metrics: not a setting: no key 'portt' (one of: enabled, host, port, token)"),
    ("BASISD_CREDENTIALS__BINANCE__APISECRET", "credentials.binance: not a setting: no key 'apisecret'"),
    ("BASISD_RISK__DRAWDOWN_HALT_FRACTON", "risk: not a setting: no key 'drawdown_halt_fracton'"),
    ("BASISD_STRATEGY__PARAMS__LEVERAGGE", "strategy.params: not a setting: no key 'leveragge'"),
    ("BASISD_METRICS__PORT__X", "metrics.port: not a setting: metrics.port is set as a whole"),
    ("BASISD_REPLAY__SHOCKS__0__AT_HOUR", "replay.shocks: not a setting: replay.shocks is set as a whole"),
    ("BASISD_METRICS___PORT", "not a setting: no key '_port'"),
    ("BASISD_", "(name): not a setting: no name follows BASISD_"),
    ("basisd_metric__port", "(name): not a setting: no section 'metric'"),
])
def test_every_basisd_variable_that_is_no_setting_is_refused_by_name_never_by_value(
    catalog: Path, monkeypatch: pytest.MonkeyPatch, name: str, says: str
) -> None:
    monkeypatch.setenv(name, SECRET)
    problems = refused_settings(root(catalog))
    assert any(p.startswith(f"environment variable {name}: ") and says in p for p in problems), problems
    assert not any(SECRET in p for p in problems)


def test_variables_that_are_not_settings_are_allowed(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NOT_SETTINGS:
        monkeypatch.setenv(name, "/somewhere")
    load_config(root(catalog))


def test_every_basisd_variable_the_code_reads_is_allowed() -> None:
    """A new `BASISD_FOO` read by the code (not a setting) must join ENV_NOT_SETTINGS, or every command refuses it."""
    found = set()
    sources = [*ROOT.glob("daemon/**/*.py"), *ROOT.glob("actors/**/*.py"), *ROOT.glob("deploy/**/*.sh"),
               *ROOT.glob("systemd/*")]
    for path in sources:
        found |= set(re.findall(r"\bBASISD_[A-Z][A-Z0-9_]*", path.read_text(errors="replace")))
    refused = {n for n in found if environment_problems({n: "{}"})}  # settings themselves are fine
    assert refused == set()
    assert {"BASISD_CACHE_DIR", "BASISD_DEBUG"} <= found  # the scan does see the code's own variables


def test_an_error_from_an_override_names_the_variable_even_when_found_across_files(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASISD_STRATEGY__VENUES", '["binance"]')
    problems = refused(root(catalog))
    assert problems and all(p.startswith("environment variable BASISD_STRATEGY__VENUES: strategy.venues: ")
                            for p in problems)
    monkeypatch.delenv("BASISD_STRATEGY__VENUES")
    monkeypatch.setenv("BASISD_STRATEGY__INITIAL_CAPITAL", "1e-9")
    (problem,) = refused(root(catalog))
    assert problem.startswith("environment variable BASISD_STRATEGY__INITIAL_CAPITAL: strategy.initial_capital: ")


def test_a_section_check_names_the_file_and_the_variables_in_the_section(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASISD_SUPERVISOR__HEARTBEAT_INTERVAL_S", "20")
    path = root(catalog)
    (problem,) = refused(path)
    assert problem.startswith(f"{path} with environment variable BASISD_SUPERVISOR__HEARTBEAT_INTERVAL_S: "
                              "supervisor: heartbeat_timeout_s must be greater than heartbeat_interval_s")


def test_a_mode_param_from_the_environment_is_blamed_on_the_variable(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASISD_STRATEGY__PARAMS__LEVERAGE", "loopy")
    (problem,) = refused(root(catalog))
    assert problem.startswith("environment variable BASISD_STRATEGY__PARAMS__LEVERAGE: strategy.params.leverage: ")


def test_hedge_weights_can_be_set_from_the_environment_as_json(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASISD_STRATEGY__PARAMS__HEDGE_ALLOCATION", '{"binance": 0.5, "bybit": 0.5}')
    assert load_config(root(catalog)).params.hedge_allocation == {"binance": 0.5, "bybit": 0.5}


# --- numbers: finite, and within bounds that say why ----------------------------------------------------------


def numeric_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, field) of every int or float field, through nested sections and mappings of numbers."""
    out: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        optional = get_origin(annotation) in (Union, types.UnionType)
        args = [a for a in get_args(annotation) if a is not type(None)] if optional else [annotation]
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += numeric_fields(arg, f"{prefix}{name}.")
            elif arg in (int, float) and arg is not bool:
                out.append((f"{prefix}{name}", field))
    return out


# Every model with numbers (those inside mappings and lists are not reached from the root: listed too).
BOUNDED_MODELS = [Settings, ShockSettings, StrategyParams, VenueDefinition, FeeSchedule, ModeDefinition,
                  ShareClassDefinition]


@pytest.mark.parametrize("model", BOUNDED_MODELS, ids=lambda m: m.__name__)
def test_every_number_has_a_lower_and_an_upper_bound(model: type[BaseModel]) -> None:
    unbounded = []
    for key, field in numeric_fields(model):
        kinds = {type(m).__name__ for m in field.metadata}
        if not ({"Ge", "Gt"} & kinds and {"Le", "Lt"} & kinds):
            unbounded.append(key)
    assert unbounded == []


ROOT_FLOATS = [key for key, field in numeric_fields(Settings) if field.annotation in (float, float | None)]


@pytest.mark.parametrize("key", ROOT_FLOATS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_no_setting_may_be_infinite_or_nan(catalog: Path, key: str, value: float) -> None:
    section, name = key.split(".", 1)
    path = root(catalog, None, **{section: {name: value}})
    problems = refused_settings(path)
    assert any(p.startswith(f"{path}: {key}: Input should be a finite number") for p in problems), problems


@pytest.mark.parametrize("text", ["1e400", "1.0e+400", ".inf", ".nan"])
def test_yaml_spellings_of_infinity_are_refused(catalog: Path, text: str) -> None:
    path = root(catalog)
    path.write_text(path.read_text().replace("initial_capital: 100000", f"initial_capital: {text}"))
    (problem,) = refused_settings(path)
    assert problem.startswith(f"{path}: strategy.initial_capital: Input should be a finite number")
    assert "no setting may be infinite or NaN" in problem


def test_a_nan_hedge_weight_no_longer_passes_the_sum_check(catalog: Path) -> None:
    path = root(catalog, strategy={"params": {"hedge_allocation": {"binance": float("nan")}}})
    assert any("strategy.params.hedge_allocation.binance: Input should be a finite number" in p
               for p in refused(path))


def test_a_venue_file_number_must_be_finite_too(catalog: Path) -> None:
    venue = catalog / "venues" / "okx.yaml"
    venue.write_text(venue.read_text() + "unstaking_period_days: .inf\n")
    assert any(p.startswith(f"{venue}: unstaking_period_days: Input should be a finite number")
               for p in refused(root(catalog)))


@pytest.mark.parametrize(("section", "values", "key", "says"), [
    ("runtime", {"status_interval_s": 1e-9}, "runtime.status_interval_s",
     "greater than or equal to 0.1 (was 1e-09); Seconds between status lines: 0.1 at least (more often floods"),
    ("replay", {"speed": 1e300}, "replay.speed",
     "less than or equal to 10000000 (was 1e+300); Market seconds per real second, 1e+07 at most; null runs flat"),
    ("replay", {"start": "0001-01-01T00:00:00Z"}, "replay.start", "start must lie between 2015-07-30"),
    ("replay", {"start": "2099-12-01T00:00:00Z"}, "replay", "the replay ends after 2100-01-01"),
    ("supervisor", {"heartbeat_interval_s": 1e-9}, "supervisor.heartbeat_interval_s", "greater than or equal to 0.01"),
    ("reconcile", {"interval_s": 0.001}, "reconcile.interval_s", "a minute to a week"),
    ("api", {"ping_interval_s": 0.001}, "api.ping_interval_s", "greater than or equal to 1"),
    ("chaos", {"fail_after_s": 1e-9}, "chaos.fail_after_s", "greater than or equal to 0.01"),
    ("risk", {"data_stale_after_s": 1e12}, "risk.data_stale_after_s", "30 days at most"),
    ("strategy", {"initial_capital": 1e300}, "strategy.initial_capital", "less than or equal to 1000000000000"),
    ("control", {"socket": "/tmp/a\0b"}, "control.socket", "contains a NUL character"),
    ("strategy", {"catalog_dir": "a\0b"}, "strategy.catalog_dir", "contains a NUL character"),
])
def test_values_that_validate_by_type_but_make_no_sense_are_refused_with_the_reason(
    catalog: Path, section: str, values: dict[str, Any], key: str, says: str
) -> None:
    path = root(catalog, None, **{section: values})
    problems = refused(path)
    assert any(p.startswith(f"{path}: {key}: ") and says in p for p in problems), problems


@pytest.mark.parametrize(("share_class", "mode", "venues", "capital"), [
    ("usdt", "usdt_market_neutral", ["binance", "bybit", "okx", "aave_v3", "etherfi"], 1e-9),
    ("usdt", "usdt_market_neutral", ["binance", "bybit", "okx", "aave_v3", "etherfi"], 99.99),
    ("eth", "eth_leveraged", ["aave_v3", "etherfi"], 0.09),
])
def test_capital_below_the_documented_minimum_is_refused(
    catalog: Path, share_class: str, mode: str, venues: list[str], capital: float
) -> None:
    path = root(catalog, strategy={"share_class": share_class, "mode": mode, "venues": venues,
                                   "initial_capital": capital})
    currency = share_class.upper()
    assert refused(path) == [f"{path}: strategy.initial_capital: {capital:g} {currency} is below the least a run "
                             f"accepts, {MIN_CAPITAL[currency]:g} {currency}: below it the entry's legs fall under "
                             "the venues' minimum order size"]


def test_the_minimum_capital_itself_is_accepted(catalog: Path) -> None:
    load_config(root(catalog, strategy={"initial_capital": MIN_CAPITAL["USDT"]}))
    load_config(root(catalog, strategy={"share_class": "eth", "mode": "eth_leveraged", "venues": ["aave_v3", "etherfi"],
                                        "initial_capital": MIN_CAPITAL["ETH"]}))


def test_eth_capital_must_exceed_the_gas_reserve(catalog: Path) -> None:
    path = root(catalog, strategy={"share_class": "eth", "mode": "eth_leveraged", "venues": ["aave_v3", "etherfi"],
                                   "initial_capital": 0.5, "params": {"gas_reserve_eth": 0.5}})
    (problem,) = refused(path)
    assert problem.startswith(f"{path}: strategy.initial_capital: 0.5 ETH leaves nothing to invest")


def test_a_command_line_override_is_blamed_on_the_command_line(catalog: Path) -> None:
    """`basisd backtest --capital 1e-9` arrives as an override of strategy.initial_capital."""
    assert refused(root(catalog), {"strategy": {"initial_capital": 1e-9}}) == [
        "command line: strategy.initial_capital: 1e-09 USDT is below the least a run accepts, 100 USDT: below it "
        "the entry's legs fall under the venues' minimum order size"]


# --- check-config refuses what run refuses ------------------------------------------------------------------------


def test_live_is_a_runtime_mode_the_settings_accept(catalog: Path) -> None:
    # What a live run lacks (keys, a state directory) is named by load_config (tests/integration/test_paper_config).
    assert load_settings(root(catalog), {"runtime": {"mode": "live"}}).runtime.mode == "live"


def test_the_backtest_mode_comes_from_basisd_backtest_only(catalog: Path) -> None:
    path = root(catalog, runtime={"mode": "backtest"})
    assert refused_settings(path) == [f"{path}: runtime.mode: 'backtest' is set by `basisd backtest` itself; a "
                                      "config says 'replay'"]
    assert load_settings(root(catalog), {"runtime": {"mode": "backtest"}}).runtime.mode == "backtest"


def test_a_drill_on_a_venue_that_is_not_a_listed_exchange_is_refused_at_load(catalog: Path) -> None:
    path = root(catalog, chaos={"unreported_usdt": {"kraken": 40, "aave_v3": 1}})
    assert refused(path) == [
        f"{path}: chaos.unreported_usdt.aave_v3: no simulated exchange named 'aave_v3' (exchanges: binance, bybit, "
        "okx)",
        f"{path}: chaos.unreported_usdt.kraken: no simulated exchange named 'kraken' (exchanges: binance, bybit, okx)"]


def test_a_drill_on_an_actor_that_does_not_exist_or_does_not_run_is_refused_at_load(catalog: Path) -> None:
    (problem,) = refused(root(catalog, chaos={"fail_actor": "strategist"}))
    assert "chaos.fail_actor: Input should be 'positions', 'fills', 'execution'" in problem
    path = root(catalog, chaos={"fail_actor": "recorder"})  # the recorder runs in a backtest only
    (problem,) = refused(path)
    assert problem == (f"{path}: chaos.fail_actor: actor 'recorder' does not run with this configuration (actors: "
                       "positions, fills, execution, risk, strategy, market_data, status, reconciler, api)")
    load_config(path, {"runtime": {"mode": "backtest"}})


# --- secrets --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    f"credentials: {{binance: {{api_secret={SECRET}}}}}\n",
    f"credentials: {{{SECRET}: x}}\n",
    f"credentials: {{binance: {{api_secret: [{SECRET}]}}}}\n",
    f"credentials: [{SECRET}]\n",
    f"credentials:\n  binance: {SECRET}\n",
    f"api: {{token={SECRET}}}\n",
    f"api: {{token: [{SECRET}]}}\n",
    f"api: [{SECRET}]\n",
], ids=["flow-typo", "secret-as-key", "secret-in-list", "section-as-list", "venue-as-string", "token-typo",
        "token-as-list", "api-as-list"])
def test_a_typo_under_credentials_or_api_never_prints_the_secret(catalog: Path, text: str) -> None:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data.pop("api", None)
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data) + text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert SECRET not in str(caught.value) and "ZZZ" not in str(caught.value)


def test_the_flow_typo_says_what_is_expected(catalog: Path) -> None:
    path = root(catalog, f"credentials: {{binance: {{api_secret={SECRET}}}}}\n")
    assert refused_settings(path) == [
        f"{path}: credentials.binance.(a key not shown): unknown key (not shown: a key under credentials may hold "
        "the secret itself); expected one of: api_key, api_secret, passphrase"]


SECRET_KEYS = [("binance", "api_key"), ("okx", "passphrase"), ("wallet_private_key",), ("rpc_url",)]


@pytest.mark.parametrize("key", SECRET_KEYS, ids=".".join)
@pytest.mark.parametrize("value", ["1", "abc", "x" * (MIN_SECRET_CHARS - 1)])
def test_a_secret_too_short_to_redact_safely_is_refused_naming_the_key(
    catalog: Path, key: tuple[str, ...], value: str
) -> None:
    section: Any = value
    for part in reversed(key):
        section = {part: section}
    path = root(catalog, credentials=section)
    (problem,) = refused_settings(path)
    assert problem.startswith(f"{path}: credentials.{'.'.join(key)}: too short: a secret needs at least 8 characters")
    assert f"'{value}'" not in problem and f"({value})" not in problem


def test_a_secret_of_the_minimum_length_is_accepted(catalog: Path) -> None:
    settings = load_settings(root(catalog, credentials={"okx": {"passphrase": "p" * MIN_SECRET_CHARS}}))
    assert settings.credentials.secret_values() == ["p" * MIN_SECRET_CHARS]


def test_a_short_secret_from_a_credential_file_names_the_file(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "creds"
    directory.mkdir()
    (directory / "okx_passphrase").write_text("1\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    assert refused_settings(root(catalog)) == [
        f"{directory / 'okx_passphrase'}: credentials.okx.passphrase: too short: a secret needs at least 8 characters "
        "(a shorter one cannot be redacted from the logs safely); check that this is the real value"]


def test_a_fifo_in_the_credentials_directory_is_refused_without_waiting(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "creds"
    directory.mkdir()
    os.mkfifo(directory / "rpc_url")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    assert refused_settings(root(catalog)) == [
        f"{directory / 'rpc_url'}: credentials.rpc_url: credential file is a FIFO, not a file"]


def test_every_secret_field_is_held_to_the_minimum() -> None:
    """A secret added later gets the same rule: every credential field is a `Secret`."""
    def secret_fields(model: type[BaseModel]) -> list[Any]:
        out = []
        for field in model.model_fields.values():
            args = get_args(field.annotation) or (field.annotation,)
            nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            out += [f for n in nested for f in secret_fields(n)] or [field.annotation]
        return out
    assert all(annotation == settings_module.Secret | None for annotation in secret_fields(CredentialsSettings))


def test_the_shipped_configs_still_check_clean() -> None:
    for name in ("replay.yaml", "stress.yaml", "eth_leveraged.yaml"):
        load_config(CONFIGS / name)


def test_metrics_beyond_loopback_need_a_token_of_16_characters_and_never_echo_it(tmp_path: Path) -> None:
    from daemon.config import load_settings
    from daemon.errors import ConfigError
    from daemon.settings import MetricsSettings

    root = tmp_path / "basisd.yaml"
    strategy = "strategy: {mode: pure_lending, share_class: usdt, venues: [aave_v3], initial_capital: 1000}\n"
    root.write_text(strategy + "metrics: {host: 0.0.0.0}\n")
    with pytest.raises(ConfigError, match=r"metrics\.token or BASISD_METRICS__TOKEN"):
        load_settings(root)
    root.write_text(strategy + "metrics: {host: 0.0.0.0, token: SHORTSECRET}\n")
    with pytest.raises(ConfigError, match="too short") as short:
        load_settings(root)
    assert "SHORTSECRET" not in str(short.value)
    assert MetricsSettings(host="0.0.0.0", token="x" * 16).token is not None
    assert MetricsSettings().token is None  # loopback needs none


def test_the_metrics_token_can_come_from_a_credential_file() -> None:
    from daemon.settings import CREDENTIAL_FILES

    assert CREDENTIAL_FILES["metrics_token"] == ("metrics", "token")
