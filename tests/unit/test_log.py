from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml

from daemon import log as logging_setup
from daemon.config import load_config
from tests.conftest import ROOT

SECRET_KEY = "AKIA-very-secret-key-0123"
SECRET_SECRET = "s3cr3t/with+symbols=="


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    """Each test configures logging for itself, some onto a file it closes: the next test starts afresh."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    logging_setup.configure("json", "debug", stream=stream)
    return stream


def test_secret_settings_never_reach_a_log_line(
    captured: io.StringIO, catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = catalog / "run.yaml"
    root.write_text(yaml.safe_dump({
        "strategy": {"mode": "eth_basis", "share_class": "usdt", "venues": ["binance", "bybit", "okx"],
                     "initial_capital": 1000},
        "credentials": {"binance": {"api_key": SECRET_KEY}},
    }))
    monkeypatch.setenv("BASISD_CREDENTIALS__BINANCE__API_SECRET", SECRET_SECRET)
    config = load_config(root)
    creds = config.settings.credentials
    assert creds.binance.api_secret is not None and creds.binance.api_key is not None
    logging_setup.register_secrets(creds.secret_values())

    log = structlog.get_logger().bind(actor="execution")
    log.info("direct", api_key=creds.binance.api_key.get_secret_value())
    log.info(f"in the event text {SECRET_SECRET}")
    log.info("nested", request={"headers": {"X-MBX-APIKEY": SECRET_KEY}, "params": [SECRET_SECRET]})
    log.info("settings object", credentials=creds)  # pydantic prints SecretStr masked anyway
    try:
        raise PermissionError(f"signature {SECRET_SECRET} rejected for key {SECRET_KEY}")
    except PermissionError:
        log.exception("venue_error")

    output = captured.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 5
    assert SECRET_KEY not in output and SECRET_SECRET not in output
    assert output.count(logging_setup.REDACTED) >= 6
    assert all(line["actor"] == "execution" for line in lines)
    assert "exception" in lines[-1] and "PermissionError" in lines[-1]["exception"]


def test_every_event_carries_an_actor(captured: io.StringIO) -> None:
    structlog.get_logger().info("from the process")
    structlog.get_logger().bind(actor="risk").info("from an actor")
    actors = [json.loads(line)["actor"] for line in captured.getvalue().splitlines()]
    assert actors == ["daemon", "risk"]


def test_console_format_is_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    logging_setup.configure("console", "info", stream=stream)
    structlog.get_logger().bind(actor="status").info("status", nav_usd="100000.00")
    line = stream.getvalue()
    assert "status" in line and "nav_usd=100000.00" in line and not line.lstrip().startswith("{")


def journal_env(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_under_journald_each_line_carries_its_sd_daemon_priority(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "journal-stream"
    journal.touch()
    monkeypatch.setenv("JOURNAL_STREAM", journal_env(journal))
    with journal.open("w") as stream:
        logging_setup.configure("json", "debug", stream=stream)
        log = structlog.get_logger()
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("x")
    lines = journal.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e", "c", "x"]


def test_a_stream_that_is_not_the_journal_gets_no_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "journal-stream"
    elsewhere.touch()
    monkeypatch.setenv("JOURNAL_STREAM", journal_env(elsewhere))  # inherited, but we write to another file
    output = tmp_path / "out"
    with output.open("w") as stream:
        logging_setup.configure("json", "info", stream=stream)
        structlog.get_logger().warning("w")
    assert json.loads(output.read_text())["event"] == "w"
    monkeypatch.setenv("JOURNAL_STREAM", "not:numbers")
    stream2 = io.StringIO()
    logging_setup.configure("json", "info", stream=stream2)
    structlog.get_logger().warning("w")
    assert stream2.getvalue().startswith("{")


def test_the_daemon_process_prefixes_its_lines_for_the_journal(tmp_path: Path) -> None:
    """A real child whose stderr is the stream JOURNAL_STREAM names, as systemd sets it up."""
    stderr = tmp_path / "stderr"
    stderr.touch()
    code = ("import structlog; from daemon import log; log.configure('auto', 'info'); "
            "structlog.get_logger().info('started'); structlog.get_logger().warning('margin_low')")
    with stderr.open("w") as err:
        env = {**os.environ, "JOURNAL_STREAM": journal_env(stderr)}
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=err, check=True, timeout=30)
    lines = stderr.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<4>"], lines
    assert json.loads(lines[1][3:])["event"] == "margin_low"


def console_on_a_terminal(monkeypatch: pytest.MonkeyPatch, no_color: str | None) -> str:
    """What the console renderer writes to a real terminal (a pseudo-terminal), with NO_COLOR as given."""
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        logging_setup.configure("auto", "info", stream=terminal)
        structlog.get_logger().warning("status", nav_usd="100000.00")
        terminal.flush()
    try:
        return os.read(master, 65536).decode()
    finally:
        os.close(master)


def test_no_color_turns_the_console_colours_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "\x1b[" in console_on_a_terminal(monkeypatch, None)  # a terminal gets colours by default
    for value in ("1", "true", "0"):  # any non-empty value, per no-color.org
        plain = console_on_a_terminal(monkeypatch, value)
        assert "\x1b[" not in plain and "status" in plain and "nav_usd=100000.00" in plain, value
    assert "\x1b[" in console_on_a_terminal(monkeypatch, "")  # empty: as if unset
