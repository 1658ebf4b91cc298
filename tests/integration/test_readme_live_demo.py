"""The README's "Live against the exchange fake" command, as an operator runs it: the fake started as its own process
(`python -m tests.fakes.exchange --cert-dir DIR --env FILE`), the environment it writes sourced, and
`basisd run --config configs/live.yaml` — the shipped config, unchanged but for the state directory — trading it:
ready, the eth_basis entry on the fake's three venues, `basisd status` answering, SIGTERM stopping it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT, DaemonProcess

pytestmark = [pytest.mark.exchange_fake, pytest.mark.subprocess, pytest.mark.timeout(120)]

LIVE = ROOT / "configs" / "live.yaml"


def read_env(path: Path) -> dict[str, str]:
    """The KEY=value lines `set -a; . FILE; set +a` would export."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_the_readme_s_live_command_trades_the_fake(tmp_path: Path) -> None:
    env_file = tmp_path / "fake" / "env"
    fake_log = tmp_path / "fake.log"
    with fake_log.open("w") as log:
        fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.exchange", "--port", "0", "--cert-dir",
                                 str(tmp_path / "fake"), "--env", str(env_file)], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    daemon = None
    try:
        deadline = time.monotonic() + 30
        while not env_file.exists() and time.monotonic() < deadline:
            assert fake.poll() is None, fake_log.read_text()
            time.sleep(0.1)
        assert env_file.exists(), "the fake wrote no environment file"
        env = {**read_env(env_file), "BASISD_RUNTIME__STATE_DIR": str(tmp_path / "state"),
               "BASISD_LOGGING__FORMAT": "json"}
        daemon = DaemonProcess(LIVE, tmp_path, env=env)
        daemon.wait_ready(timeout_s=40)
        entry = daemon.wait_for_event("instruction_finished", timeout_s=40)
        assert entry["type"] == "ENTRY" and entry["completed"] is True, entry
        shorts = {e["venue"] for e in daemon.events() if e.get("event") == "order_filled"
                  and ":Perp:" in e.get("instrument", "") and e.get("side") == "SELL"}
        assert shorts == {"binance", "bybit", "okx"}, shorts  # a short on each of the fake's venues
        status = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(LIVE)], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "eth_basis" in status.stdout, status.stdout + status.stderr
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        if daemon is not None:
            daemon.close()
        fake.send_signal(signal.SIGINT)
        try:
            fake.wait(10)
        except subprocess.TimeoutExpired:
            fake.kill()
