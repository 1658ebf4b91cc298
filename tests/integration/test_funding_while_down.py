"""Funding a venue paid while the daemon was down, booked as funding at the next live start
(`daemon.recovery.funding_paid_while_down`, `FundingPoller.paid_between`): the real ccxt against the exchange fake,
the real `Journal` holding what the previous run booked. Each payment is found once — not the one the journal holds,
not the one after the accounts were read (the poller books that one) — and the opening less the payments plus the
payments booked after it is what the venue holds."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ledger import ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.messages import VenueReport
from daemon.journal import Journal, PastRuns
from daemon.recovery import RecoveryReport, funding_paid_while_down, opening_less
from daemon.venues.ccxt_funding import FundingBooked, FundingPoller
from tests.integration.test_ccxt_funding import VENUES, drain, opened, state

pytestmark = [pytest.mark.exchange_fake]

D = Decimal


def journal_funding(journal: Journal, report: FundingBooked) -> None:
    """What the fills actor does with a funding report: journaled before the books see it."""
    journal.record_report(time.time_ns(), report.venue, f"{report.venue}:{report.report_id}", "BalancesChanged",
                          report)


async def tick() -> None:
    await asyncio.sleep(0.003)  # the fake stamps payments in wall milliseconds: the next one is later


@pytest.mark.asyncio
@pytest.mark.parametrize("venue", list(VENUES))
async def test_a_payment_made_while_down_is_found_once_and_books_as_funding(
        exchange_fake: Any, tmp_path: Path, venue: str) -> None:
    path = tmp_path / "journal.sqlite"
    perp = f"{venue}:Perp:ETHUSDT"
    fake = state(exchange_fake, venue)
    symbol = VENUES[venue][1]
    # Run 1: live, short 1 ETH; its poller books a first payment into the journal; then it is killed.
    first = Journal(path, "live", "live.yaml", time.time_ns())
    client = await opened(exchange_fake, venue, "sell")
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    await tick()
    booked = fake.settle_funding(symbol, D("0.0001"))
    assert await FundingPoller(venue, client, [perp], reports, WallClock(), since_ms=0).poll() == 1
    (journaled,) = drain(reports)
    journal_funding(first, journaled)
    first._db.close()  # killed: no end marker

    # Down: a payment; then the next run reads the accounts (until_ms); then a payment after the read.
    await tick()
    while_down = fake.settle_funding(symbol, D("0.0002"))
    await tick()
    until_ms = int(time.time() * 1000)
    held_at_read = fake.balance("USDT")
    await tick()
    after = fake.settle_funding(symbol, D("0.0003"))
    assert booked is not None and while_down is not None and after is not None

    second = Journal(path, "live", "live.yaml", time.time_ns())
    past = PastRuns(path)
    poller = FundingPoller(venue, client, [perp], reports, WallClock(), since_ms=until_ms)
    report = RecoveryReport()
    with capture_logs() as logs:
        found = await funding_paid_while_down(past, {venue: poller}, until_ms, report)
    assert [p.report_id for p in found] == [f"funding-{while_down.tran_id}"]  # once; not the journaled one
    (paid,) = found
    assert paid.change.reason is Reason.FUNDING_PAYMENT
    assert paid.change.tokens == (TokenChange(venue, "USDT", D("0.6")),)  # the short receives 1 × 3000 × 0.0002
    [line] = [e for e in logs if e["event"] == "funding_paid_while_down"]
    assert line["venue"] == venue and line["payments"] == 1 and D(line["total"]["USDT"]) == D("0.6")
    assert {v: {t: D(a) for t, a in paid.items()} for v, paid in report.as_dict()["funding_while_down"].items()} == {
        venue: {"USDT": D("0.6")}}

    # The books: the opening less the payment, then the payment as funding = what the venue held at the read.
    opening = opening_less([TokenChange(venue, "USDT", held_at_read)], found)
    assert opening == [TokenChange(venue, "USDT", held_at_read - D("0.6"))]
    ledger = Ledger((venue,))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(opening)))
    for payment in found:
        ledger.apply(payment.change)
    assert ledger.balance(venue, "USDT") == held_at_read
    # The poller started at the read books the later payment, and never the one found while down.
    assert await poller.poll() == 1
    (later,) = drain(reports)
    assert later.report_id == f"funding-{after.tran_id}"
    ledger.apply(later.change)
    assert ledger.balance(venue, "USDT") == fake.balance("USDT")
    for payment in (paid, later):
        journal_funding(second, payment)  # as run 2's fills actor journals what it publishes
    second._db.close()
    past.close()

    # A third start finds nothing: every payment since is in the journal.
    Journal(path, "live", "live.yaml", time.time_ns())
    again = PastRuns(path)
    fresh = FundingPoller(venue, client, [perp], reports, WallClock(), since_ms=int(time.time() * 1000))
    assert await funding_paid_while_down(again, {venue: fresh}, int(time.time() * 1000) + 1) == []
    again.close()


@pytest.mark.asyncio
async def test_the_first_live_start_finds_nothing_its_balances_are_capital(exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    client = await opened(exchange_fake, "binance", "sell")
    exchange_fake.binance.settle_funding("ETHUSDT", D("0.0001"))
    paper = Journal(path, "paper", "paper.yaml", time.time_ns())  # a paper run's venues were simulated
    paper.close()
    Journal(path, "live", "live.yaml", time.time_ns())
    past = PastRuns(path)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    poller = FundingPoller("binance", client, ["binance:Perp:ETHUSDT"], reports, WallClock())
    await tick()
    assert await funding_paid_while_down(past, {"binance": poller}, int(time.time() * 1000)) == []
    past.close()


@pytest.mark.asyncio
async def test_a_venue_that_cannot_be_read_is_left_out_with_a_warning(exchange_fake: Any, tmp_path: Path) -> None:
    """Its payments then open as capital: the books still equal the venue, and the start-up goes on."""
    path = tmp_path / "journal.sqlite"
    Journal(path, "live", "live.yaml", time.time_ns())._db.close()
    client = await opened(exchange_fake, "binance", "sell")
    Journal(path, "live", "live.yaml", time.time_ns())
    past = PastRuns(path)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    poller = FundingPoller("binance", client, ["binance:Perp:ETHUSDT"], reports, WallClock())
    await client.close()  # its session gone: every read fails
    await tick()
    with capture_logs() as logs:
        assert await funding_paid_while_down(past, {"binance": poller}, int(time.time() * 1000)) == []
    [line] = [e for e in logs if e["event"] == "funding_while_down_unread"]
    assert line["venue"] == "binance" and "capital" in line["detail"]
    past.close()


@pytest.mark.subprocess
def test_a_daemon_killed_then_paid_funding_books_it_as_funding_at_the_restart(tmp_path: Path) -> None:
    """End to end: the live daemon enters and is killed -9; every venue pays funding on its short while it is down;
    the restart finds each payment once and books it after the opening (journaled once, as funding), the books equal
    the venues with not even a difference inside the tolerance, the entry that had finished before the kill is not
    abandoned, and the pollers never book the payments again."""
    from tests.integration.daemon_process import DaemonProcess
    from tests.integration.test_live_daemon import LIVE, PERPS, ThreadedFake, basisd, finished, live_env

    venues = ThreadedFake(tmp_path / "fake-tls")
    fake = venues.fake
    try:
        env = live_env(fake, tmp_path / "state", BASISD_EXCHANGE__FUNDING_POLL_INTERVAL_S="5")
        (tmp_path / "run1").mkdir()
        first = DaemonProcess(LIVE, tmp_path / "run1", env=env)
        try:
            first.wait_ready(timeout_s=60)
            first.wait_for(lambda: bool(finished(first, "ENTRY")), 60, "the entry")
            first.signal(signal.SIGKILL)
            first.wait_exit(10)
            [entry] = finished(first, "ENTRY")
            done_before = {e["instruction_id"] for e in first.events() if e.get("event") == "instruction_finished"}
        finally:
            first.close()

        def settle_everywhere() -> list[Any]:
            return [getattr(fake, v).settle_funding(symbol, rate=D("0.0001")) for v, symbol in PERPS.items()]

        paid = venues.call(settle_everywhere)
        assert all(p is not None for p in paid)
        (tmp_path / "run2").mkdir()
        second = DaemonProcess(LIVE, tmp_path / "run2", env=env)
        try:
            second.wait_ready(timeout_s=60)
            found = {e["venue"]: e for e in second.events() if e.get("event") == "funding_paid_while_down"}
            assert {v: e["payments"] for v, e in found.items()} == {"binance": 1, "bybit": 1, "okx": 1}, found
            total = sum(D(e["total"]["USDT"]) for e in found.values())
            assert total == sum(p.amount for p in paid) and total > 0
            done = second.wait_for_event("recovery_done")
            assert entry["instruction_id"] in done["instructions_finished"], done
            assert not set(done["instructions_abandoned"]) & done_before, done  # only what had not finished
            answer = basisd(env, "reconcile")
            assert answer.returncode == 0, answer.stderr
            assert not json.loads(answer.stdout).get("drifts"), answer.stdout
            # Not even a difference inside the tolerance (which would be booked to the venue's figures quietly): the
            # opening less the payments, plus the payments, is what each venue holds.
            reconciled = [e for e in second.events() if e.get("event") == "reconciled"]
            assert reconciled and not [e for e in reconciled if e.get("within_tolerance")], reconciled
            time.sleep(6)  # a funding poll from the read: the payments found while down are not booked again
            assert not [e for e in second.events() if e.get("event") == "funding_payments_found"]
            second.signal(signal.SIGTERM)
            assert second.wait_exit(30) == 0, second.output()[-3000:]
        finally:
            second.close()
        past = PastRuns(tmp_path / "state" / "journal.sqlite")
        keys = [k for (k,) in past._db.execute(
            "SELECT report_key FROM venue_reports WHERE report_key LIKE '%funding-%'")]
        past.close()
        assert sorted(keys) == sorted(f"{v}:funding-{p.tran_id}" for v, p in zip(PERPS, paid, strict=True)), keys
    finally:
        venues.stop()
