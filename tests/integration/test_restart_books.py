"""A live restart continues the journal's books (daemon.journal_books, daemon.live_opening): the live daemon against
the exchange fake, stopped, its venue changed behind its back, started again — the difference is found by the
start-up reconciliation before anything trades, booked as `reconciliation` (journaled, so the next start does not
find it again) and, above `reconcile.halt_above_usd`, the daemon comes up HALTED saying what differs."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import PastRuns
from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_live_daemon import LIVE, ThreadedFake, basisd, entered, live_env, venues

pytestmark = [pytest.mark.exchange_fake, pytest.mark.subprocess]
__all__ = ["venues"]  # the fixture

D = Decimal
TAKEN = D(500)  # what goes missing from Binance while the daemon is down: worth more than halt_above_usd (100)


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == name]


def test_a_restart_continues_the_journal_s_books_and_halts_on_what_they_cannot_explain(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state")
    (tmp_path / "run1").mkdir()
    with entered(env, tmp_path / "run1") as first:
        assert events(first, "live_account_opened")  # a first start opens on what the venues hold
    wallet = venues.call(lambda: max(("spot", "futures"), key=lambda w: fake.binance.balance("USDT", w)))
    held = venues.call(lambda: fake.binance.balance("USDT", wallet))
    venues.call(lambda: fake.binance.drift_balance("USDT", -TAKEN, wallet))

    (tmp_path / "run2").mkdir()
    second = DaemonProcess(LIVE, tmp_path / "run2", env=env)
    try:
        second.wait_ready(timeout_s=60)
        [opened] = events(second, "opening_on_the_journal")
        assert opened["reports"] >= 2 and not events(second, "live_account_opened")  # the journal's books, not a read
        [drift] = events(second, "balance_drifted")
        assert drift["action"] == "halt" and any(d.startswith("binance:USDT") for d in drift["drifts"]), drift
        changed = [e for e in events(second, "trading_state_changed") if e["current"] == "HALTED"]
        assert changed and changed[-1]["source"] == "reconciler", changed
        status = json.loads(basisd(env, "status").stdout)
        assert status["trading"] == "HALTED"
        # The books follow the venue (the difference is booked, to the reconciliation component).
        balances = status["status"]["portfolio"]["balances"]
        venue_usdt = venues.call(lambda: fake.binance.balance("USDT", "spot") + fake.binance.balance("USDT"))
        assert D(balances["binance:USDT"]) == venue_usdt and venue_usdt == held - TAKEN + (
            venues.call(lambda: fake.binance.balance("USDT", "spot" if wallet == "futures" else "futures")))
        second.signal(signal.SIGTERM)
        assert second.wait_exit(30) == 0, second.output()[-3000:]
    finally:
        second.close()
    past = PastRuns(tmp_path / "state" / "journal.sqlite")
    corrections = [k for (k,) in past._db.execute(
        "SELECT report_key FROM venue_reports WHERE report_key LIKE 'reconciler:correction-%'")]
    openings = [json.loads(b)["change"]["reason"] for (b,) in past._db.execute(
        "SELECT body FROM venue_reports WHERE report_key LIKE 'opening:%' ORDER BY seq")]
    past.close()
    assert len(corrections) == 1 and openings == ["INITIAL_CAPITAL"], (corrections, openings)

    # Started again: the correction is in the journal's books, so nothing differs any more (the halt stays until an
    # operator resumes: it was persisted with its reason).
    (tmp_path / "run3").mkdir()
    third = DaemonProcess(LIVE, tmp_path / "run3", env=env)
    try:
        third.wait_ready(timeout_s=60)
        assert not events(third, "balance_drifted") and events(third, "reconciled")
        third.signal(signal.SIGTERM)
        assert third.wait_exit(30) == 0, third.output()[-3000:]
    finally:
        third.close()
