"""The journal on the real daemon, killed with SIGKILL mid-run: every fill the daemon had acted on is in it,
every order's intent precedes its outcome, and the operator's halt and the reconciliations are there."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT, DaemonProcess
from tests.integration.test_process import replay_config

pytestmark = pytest.mark.subprocess

SECRET = "sk-live-JOURNAL-7c2e9a41"


def test_after_a_sigkill_the_journal_holds_every_fill_order_halt_and_reconciliation(
        catalog: Path, tmp_path: Path) -> None:
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    config = replay_config(catalog, runtime={"state_dir": str(state)}, control={"socket": str(sock)})
    env = {"BASISD_CREDENTIALS__BINANCE__API_SECRET": SECRET}
    daemon = DaemonProcess(config, tmp_path, env=env)
    try:
        daemon.wait_ready()
        daemon.wait_for_event("instruction_finished", type="ENTRY")
        # An operator pastes a key into the reason: it must reach no file in clear (the log redacts it already).
        halt = subprocess.run([sys.executable, "-m", "daemon", "halt", "--socket", str(sock), "--reason",
                               f"audit {SECRET}"], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert halt.returncode == 0, halt.stderr
        daemon.wait_for_event("trading_state_changed", current="HALTED")
        daemon.signal(signal.SIGKILL)  # no clean shutdown: only what was durable is left
        daemon.wait_exit(timeout_s=10)
    finally:
        daemon.close()
    filled = {e["client_order_id"] for e in daemon.events() if e.get("event") == "order_filled"}
    assert len(filled) >= 4  # the entry's spot buy and three perp shorts
    with sqlite3.connect(state / "journal.sqlite") as db:
        fills = {json.loads(body)["client_order_id"] for (body,) in db.execute(
            "SELECT body FROM venue_reports WHERE kind = 'FillReport'")}
        assert filled <= fills  # every fill the daemon reported onwards was journaled first
        for client_order_id in filled:
            events = [e for (e,) in db.execute("SELECT event FROM orders WHERE client_order_id = ? ORDER BY seq",
                                               (client_order_id,))]
            assert events == ["intent", "filled"], (client_order_id, events)
        transfers = db.execute("SELECT COUNT(*) FROM venue_reports WHERE kind = 'BalancesChanged'").fetchone()[0]
        assert transfers >= 4  # USDT to each exchange, the ETH withdrawal, the atomic leverage entry…
        halts = db.execute("SELECT source, reason FROM trading_state WHERE current = 'HALTED'").fetchall()
        assert halts == [("operator", "operator: audit **********")]
        clean = db.execute("SELECT COUNT(*) FROM reconciliations WHERE clean = 1").fetchone()[0]
        assert clean >= 1 and db.execute("SELECT COUNT(*) FROM reconciliations WHERE clean = 0").fetchone()[0] == 0
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Instruction (and so client order) ids carry the run: a restarted daemon cannot reuse one a venue has seen.
        (run,) = db.execute("SELECT MAX(run) FROM runs").fetchone()
        ids = [i for (i,) in db.execute("SELECT DISTINCT instruction_id FROM orders")]
        assert ids and all(i.startswith(f"r{run}i") for i in ids), ids
    assert not [f for f in state.iterdir() if SECRET.encode() in f.read_bytes()]  # journal, its WAL, the halt

    # The next start says the previous run ended unseen, records it in its own run, and ends cleanly itself.
    (tmp_path / "next").mkdir()
    daemon = DaemonProcess(config, tmp_path / "next", env=env)
    try:
        unclean = daemon.wait_for_event("previous_run_unclean")
        assert unclean["run"] == run and unclean["level"] == "warning" and unclean["last_record"], unclean
        daemon.wait_ready()
        status = subprocess.run([sys.executable, "-m", "daemon", "status", "--socket", str(sock)], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert f"previous run {run} ENDED UNCLEANLY" in status.stdout, status.stdout
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout_s=10) == 0
    finally:
        daemon.close()
    with sqlite3.connect(state / "journal.sqlite") as db:
        runs = db.execute("SELECT run, ended_ns IS NOT NULL, previous_unclean FROM runs ORDER BY run").fetchall()
    assert [(r, ended) for r, ended, _ in runs] == [(run, 0), (run + 1, 1)]
    assert json.loads(runs[1][2])["run"] == run
