from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
import yaml

from daemon import log as logging_setup
from daemon.config import load_config

SECRET_KEY = "AKIA-very-secret-key-0123"
SECRET_SECRET = "s3cr3t/with+symbols=="


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
