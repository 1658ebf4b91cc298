"""Secrets from `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential=): one file per secret, named after its key.

Precedence: environment > credential file > YAML. A bad file is a configuration error naming the file; a value
is never shown, whether in a repr, a log line or an error.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
import yaml

from daemon import log as logging_setup
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.settings import CREDENTIALS_DIRECTORY_ENV, Settings
from tests.conftest import ROOT

# Written out rather than derived from the code's own table, so that a change to the naming scheme shows here.
EXPECTED_NAMES = {
    "binance_api_key": ("binance", "api_key"),
    "binance_api_secret": ("binance", "api_secret"),
    "binance_passphrase": ("binance", "passphrase"),
    "bybit_api_key": ("bybit", "api_key"),
    "bybit_api_secret": ("bybit", "api_secret"),
    "bybit_passphrase": ("bybit", "passphrase"),
    "okx_api_key": ("okx", "api_key"),
    "okx_api_secret": ("okx", "api_secret"),
    "okx_passphrase": ("okx", "passphrase"),
    "wallet_private_key": ("wallet_private_key",),
    "rpc_url": ("rpc_url",),
}
FILE_SECRET = "file-secret-7d1c0e"
ENV_SECRET = "env-secret-51ab9f"
YAML_SECRET = "yaml-secret-c0ffee"


@pytest.fixture
def creds_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    monkeypatch.setenv(CREDENTIALS_DIRECTORY_ENV, str(directory))
    for name in list(os.environ):  # the developer's own BASISD_CREDENTIALS__* must not leak into these tests
        if name.upper().startswith("BASISD_CREDENTIALS"):
            monkeypatch.delenv(name)
    return directory


def root_config(catalog: Path, **extra: object) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data.update(extra)
    path = catalog / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def secret_at(settings: Settings, key: tuple[str, ...]) -> str | None:
    node: object = settings.credentials
    for part in key:
        node = getattr(node, part)
    if node is None:
        return None
    value = getattr(node, "get_secret_value")()  # noqa: B009 - a SecretStr reached through a dynamic path
    assert isinstance(value, str)
    return value


def test_every_credential_file_lands_on_its_setting(catalog: Path, creds_dir: Path) -> None:
    for name in EXPECTED_NAMES:
        (creds_dir / name).write_text(f"{FILE_SECRET}-{name}\n")  # `echo value > file` leaves a newline
    settings = load_config(root_config(catalog)).settings
    for name, key in EXPECTED_NAMES.items():
        assert secret_at(settings, key) == f"{FILE_SECRET}-{name}", name
    assert len(settings.credentials.secret_values()) == len(EXPECTED_NAMES)


def test_surrounding_whitespace_is_dropped_but_the_value_is_kept_as_is(catalog: Path, creds_dir: Path) -> None:
    (creds_dir / "rpc_url").write_text("  https://eth.example/v2/k3y?x=1&y=%20 \r\n\n")
    settings = load_config(root_config(catalog)).settings
    assert secret_at(settings, ("rpc_url",)) == "https://eth.example/v2/k3y?x=1&y=%20"


def test_without_the_variable_or_with_an_empty_directory_there_are_no_credentials(
    catalog: Path, creds_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config(root_config(catalog)).settings.credentials.secret_values() == []
    (creds_dir / "okx_api_key").write_text(FILE_SECRET)
    monkeypatch.delenv(CREDENTIALS_DIRECTORY_ENV)
    assert load_config(root_config(catalog)).settings.credentials.secret_values() == []


def test_environment_beats_the_file_which_beats_the_yaml(
    catalog: Path, creds_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root_config(catalog, credentials={"binance": {"api_key": YAML_SECRET}})
    assert secret_at(load_config(path).settings, ("binance", "api_key")) == YAML_SECRET

    (creds_dir / "binance_api_key").write_text(FILE_SECRET)
    config = load_config(path)
    assert secret_at(config.settings, ("binance", "api_key")) == FILE_SECRET
    assert not any("binance_api_key" in w for w in config.warnings)

    monkeypatch.setenv("BASISD_CREDENTIALS__BINANCE__API_KEY", ENV_SECRET)
    config = load_config(path)
    assert secret_at(config.settings, ("binance", "api_key")) == ENV_SECRET
    # The operator learns that the file is ignored (one of the two is stale), without either value.
    (warning,) = [w for w in config.warnings if "binance_api_key" in w]
    assert str(creds_dir / "binance_api_key") in warning and "BASISD_CREDENTIALS__BINANCE__API_KEY" in warning
    assert FILE_SECRET not in warning and ENV_SECRET not in warning


def test_sources_merge_key_by_key_not_section_by_section(
    catalog: Path, creds_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root_config(catalog, credentials={"okx": {"passphrase": YAML_SECRET}})
    (creds_dir / "okx_api_key").write_text(FILE_SECRET)
    monkeypatch.setenv("BASISD_CREDENTIALS__OKX__API_SECRET", ENV_SECRET)
    config = load_config(path)
    okx = config.settings.credentials.okx
    assert okx.api_key is not None and okx.api_key.get_secret_value() == FILE_SECRET
    assert okx.api_secret is not None and okx.api_secret.get_secret_value() == ENV_SECRET
    assert okx.passphrase is not None and okx.passphrase.get_secret_value() == YAML_SECRET
    assert config.warnings == ()  # nothing shadowed


def test_secrets_never_appear_in_a_repr_a_dump_or_a_log_line(catalog: Path, creds_dir: Path) -> None:
    for name in EXPECTED_NAMES:
        (creds_dir / name).write_text(f"{FILE_SECRET}-{name}")
    config = load_config(root_config(catalog))
    settings = config.settings
    shown = [repr(settings), str(settings), repr(settings.credentials), str(settings.credentials.binance),
             repr(config), settings.model_dump_json(), str(settings.model_dump()),
             str(settings.model_dump(mode="json"))]
    for text in shown:
        assert FILE_SECRET not in text
    assert "**********" in repr(settings.credentials)

    stream = io.StringIO()
    logging_setup.configure("json", "debug", stream=stream)
    logging_setup.register_secrets(settings.credentials.secret_values())  # what the CLI does after loading
    log = structlog.get_logger().bind(actor="execution")
    log.info("settings", settings=settings, credentials=settings.credentials)
    binance_key = settings.credentials.binance.api_key
    assert binance_key is not None
    log.info(f"signing with {binance_key.get_secret_value()}", headers={"X-MBX-APIKEY": binance_key.get_secret_value()})
    output = stream.getvalue()
    assert output.count("\n") == 2
    assert FILE_SECRET not in output


def problems(catalog: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root_config(catalog))
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "credential file is empty"),
    (b" \n\t\n", "credential file is empty"),
    (b"first-line-7f\nsecond-line-7f\n", "credential file holds more than one line"),
    (b"\xff\xfe-bytes-7f\x80", "credential file is not UTF-8 text"),
    (b"x" * (64 * 1024 + 1), "credential file is larger than 65536 bytes"),
], ids=["empty", "blank", "two-lines", "not-utf8", "too-large"])
def test_a_bad_credential_file_is_a_config_error_naming_the_file(
    catalog: Path, creds_dir: Path, content: bytes, message: str
) -> None:
    (creds_dir / "okx_api_secret").write_bytes(content)
    (creds_dir / "okx_api_key").write_text(FILE_SECRET)  # a good neighbour, never echoed
    (problem,) = problems(catalog)
    assert problem.startswith(f"{creds_dir / 'okx_api_secret'}: credentials.okx.api_secret: {message}")
    assert FILE_SECRET not in problem and "7f" not in problem and "xxxx" not in problem


def test_a_dangling_link_is_reported_as_unreadable(catalog: Path, creds_dir: Path) -> None:
    (creds_dir / "wallet_private_key").symlink_to(creds_dir / "nowhere")
    assert problems(catalog) == [f"{creds_dir / 'wallet_private_key'}: credentials.wallet_private_key: "
                                 "credential file cannot be read: No such file or directory"]


def test_a_file_the_daemon_may_not_read_is_reported() -> None:
    """Root reads a file whatever its mode, so the reader runs as `nobody` when the tests run as root (as in CI)."""
    import pwd
    import shutil
    import tempfile

    from daemon.settings import read_credentials_directory

    directory = Path(tempfile.mkdtemp(prefix="basisd-creds-"))  # traversable by nobody, unlike pytest's tmp
    try:
        directory.chmod(0o755)
        path = directory / "bybit_api_secret"
        path.write_text(FILE_SECRET)
        path.chmod(0)
        expected = f"{path}: credentials.bybit.api_secret: credential file cannot be read: Permission denied"
        pid = os.fork()
        if pid == 0:  # the child: nobody if we are root; exit 0 only if exactly that problem was reported
            code = 1
            try:
                if os.geteuid() == 0:
                    nobody = pwd.getpwnam("nobody")
                    os.setgroups([])
                    os.setgid(nobody.pw_gid)
                    os.setuid(nobody.pw_uid)
                try:
                    read_credentials_directory(directory)
                    code = 2  # read it: nothing reported
                except ConfigError as exc:
                    code = 0 if [str(p) for p in exc.problems] == [expected] else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the unreadable file was not reported as it should be"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_an_unknown_file_is_refused_with_the_names_that_exist(catalog: Path, creds_dir: Path) -> None:
    (creds_dir / "binance_apikey").write_text(FILE_SECRET)  # a typo would otherwise go unnoticed
    (problem,) = problems(catalog)
    assert problem.startswith(f"{creds_dir / 'binance_apikey'}: (file): not a credential basisd knows")
    assert all(name in problem for name in EXPECTED_NAMES)
    assert FILE_SECRET not in problem


def test_every_bad_file_is_reported_at_once(catalog: Path, creds_dir: Path) -> None:
    (creds_dir / "okx_passphrase").write_text("")
    (creds_dir / "bybit_api_key").write_text("a\nb")
    (creds_dir / "stray").write_text("x")
    found = problems(catalog)
    assert [p.split(":")[0] for p in found] == [str(creds_dir / n) for n in ("bybit_api_key", "okx_passphrase",
                                                                              "stray")]


def test_a_missing_directory_is_named(catalog: Path, creds_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CREDENTIALS_DIRECTORY_ENV, str(creds_dir / "gone"))
    assert problems(catalog) == [f"{creds_dir / 'gone'}: (CREDENTIALS_DIRECTORY): credentials directory cannot "
                                 "be read: No such file or directory"]


def test_an_empty_secret_from_the_environment_is_an_error_too(
    catalog: Path, creds_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An uncommented but empty line in the env file would otherwise shadow the credential file with "".
    (creds_dir / "okx_passphrase").write_text(FILE_SECRET)
    monkeypatch.setenv("BASISD_CREDENTIALS__OKX__PASSPHRASE", "")
    (problem,) = problems(catalog)
    assert problem.startswith("environment variable BASISD_CREDENTIALS__OKX__PASSPHRASE: "
                              "credentials.okx.passphrase: ")
    assert "is empty" in problem and FILE_SECRET not in problem


@pytest.mark.subprocess
def test_the_cli_exits_78_naming_the_file_and_never_the_secrets(catalog: Path, creds_dir: Path) -> None:
    (creds_dir / "binance_api_key").write_text(FILE_SECRET)
    (creds_dir / "binance_api_secret").write_text("")
    path = root_config(catalog)
    env = {**os.environ, CREDENTIALS_DIRECTORY_ENV: str(creds_dir)}
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert result.returncode == 78, result.stderr
        assert f"{creds_dir / 'binance_api_secret'}: credentials.binance.api_secret: credential file is empty" \
            in result.stderr
        assert FILE_SECRET not in result.stderr + result.stdout


def test_the_api_token_can_come_from_a_credential_file_too(catalog: Path, creds_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASISD_API__TOKEN", raising=False)
    (creds_dir / "api_token").write_text("a-token-from-a-file-0123\n")
    settings = load_config(root_config(catalog, api={"host": "0.0.0.0"})).settings
    assert settings.api.token is not None and settings.api.token.get_secret_value() == "a-token-from-a-file-0123"
    assert "a-token-from-a-file" not in repr(settings.api)
    (creds_dir / "api_token").write_text("tiny-x1\n")  # the API's own rule (≥ 16 characters) still holds
    with pytest.raises(ConfigError) as refused:
        load_config(root_config(catalog, api={"host": "0.0.0.0"}))
    assert "api.token" in str(refused.value) and "tiny-x1" not in str(refused.value)
