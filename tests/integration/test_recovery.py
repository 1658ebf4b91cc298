"""Recovery at a live start-up (`daemon.recovery`): the journal a killed run left, written by the real `Journal`,
resolved against the exchange fake through the real ccxt adapter before the books open."""

from __future__ import annotations

import json
import signal
from collections.abc import MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.domain.ids import ClientOrderId, InstrumentId
from daemon.domain.messages import FillReport, Side, SubmitOrder
from daemon.journal import Journal, PastRuns
from daemon.recovery import RecoveryReport, check_positions, recover_orders
from daemon.venues.ccxt_exchange import CcxtExchange
from daemon.venues.client_ids import to_venue
from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_ccxt_exchange import (
    BYBIT_PERP,
    OKX_PERP,
    PERP,
    adapter,
    bybit_adapter,
    okx_adapter,
    order,
    order_posts,
)

pytestmark = [pytest.mark.exchange_fake]


def killed_run(path: Path) -> Journal:
    """Run 1 of a live daemon; `kill(journal)` leaves it as SIGKILL would (no end marker)."""
    return Journal(path, "live", "live.yaml", 1)


def kill(journal: Journal) -> None:
    journal._db.close()  # no end marker: the next run calls this one unclean


def intent(journal: Journal, o: SubmitOrder) -> None:
    journal.record_order(1, o.client_order_id, o.instruction_id, "intent", o)


def on_venue(fake: Any, o: SubmitOrder, kind: str = "MARKET", price: str | None = None) -> Any:
    """The venue executes the order while the daemon is down (the intent was journaled, the answer never was)."""
    params = {"symbol": "ETHUSDT", "side": o.side.value, "type": kind, "quantity": str(o.quantity),
              "newClientOrderId": to_venue(o.client_order_id, "binanceusdm")}
    if price is not None:
        params |= {"price": price, "timeInForce": "GTC"}
    return fake.binance.place_order("futures", params)


async def restart(path: Path, venue: CcxtExchange) -> tuple[PastRuns, RecoveryReport, list[MutableMapping[str, Any]]]:
    """The next run's start: its journal run opened (daemon.app), then recovery before the books open."""
    Journal(path, "live", "live.yaml", 2)
    past = PastRuns(path)
    with capture_logs() as logs:
        report = await recover_orders(past, {"binance": venue})
    return past, report, logs


@pytest.mark.asyncio
async def test_a_fill_made_while_down_is_journaled_once_and_never_published_again(
        exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = killed_run(path)
    sell = order("r1i1-1", PERP, Side.SELL, "0.100")
    intent(journal, sell)
    kill(journal)
    venue, reports = adapter(exchange_fake)
    async with venue:
        on_venue(exchange_fake, sell)  # filled by the venue, the answer lost with the process
        past, report, logs = await restart(path, venue)
        assert report.by_outcome() == {"filled": 1} and report.previous_unclean is not None
        [line] = [e for e in logs if e["event"] == "order_recovered"]
        assert line["outcome"] == "filled" and line["client_order_id"] == "r1i1-1"
        trade = exchange_fake.binance.trades[-1]
        keys = [k for (k,) in past._db.execute("SELECT report_key FROM venue_reports WHERE run = 2")]
        assert keys == [f"binance:{trade.id}"]
        # The books open on the account read next, which holds the fill: no poll or stream publishes it again.
        assert (await venue.fetch_account()).perps == (("ETHUSDT", Decimal("-0.100")),)
        assert await venue.poll_fills() == 0 and len(reports) == 0
        # The journal accounts for the short: nothing to adopt, nothing to halt on.
        detail = await venue.fetch_account_detail()
        assert check_positions(past, [("binance", p) for p in detail.positions], "halt", report).halt_reason is None
        past.close()
        # A third start finds nothing left open.
        Journal(path, "live", "live.yaml", 3)
        again = PastRuns(path)
        assert again.unresolved_orders() == [] and (await recover_orders(again, {"binance": venue})).orders == []


@pytest.mark.asyncio
async def test_an_intent_the_venue_never_received_is_recorded_never_sent_and_nothing_is_resent(
        exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = killed_run(path)
    buy = order("r1i2-1", PERP, Side.BUY, "0.100")
    intent(journal, buy)
    kill(journal)
    venue, _ = adapter(exchange_fake)
    async with venue:
        past, report, _ = await restart(path, venue)
        assert report.by_outcome() == {"never_sent": 1}
        assert [(k, r, o) for k, r, o, _ in past.recoveries()] == [
            ("order", "r1i2-1", "never_sent"), ("instruction", "r1i2", "abandoned")]
        # This account never sends that id now, whoever asks.
        again = await venue.submit_order(buy)
        assert again.status == "rejected" and "never sent" in again.reason
    assert order_posts(exchange_fake) == [] and not exchange_fake.binance.orders


@pytest.mark.asyncio
async def test_an_order_left_resting_is_cancelled_at_the_restart(exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = killed_run(path)
    bid = order("r1i3-1", PERP, Side.BUY, "0.100", limit_price="2500")
    intent(journal, bid)
    kill(journal)
    venue, _ = adapter(exchange_fake)
    async with venue:
        resting = on_venue(exchange_fake, bid, "LIMIT", "2500")
        assert resting.is_open
        _, report, logs = await restart(path, venue)
        assert report.by_outcome() == {"cancelled": 1}
        assert resting.status == "CANCELED"
        assert await venue.fetch_open_orders() == ()
        assert [e["outcome"] for e in logs if e["event"] == "order_recovered"] == ["cancelled"]


@pytest.mark.asyncio
async def test_the_instruction_in_progress_is_abandoned_naming_its_steps_and_is_not_rerun(
        exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = killed_run(path)
    venue, reports = adapter(exchange_fake)
    async with venue:
        # Step 1 (a perp sell) filled and was journaled; step 2's intent went in, then the process died.
        first = await venue.submit_order(order("r1i4-1", PERP, Side.SELL, "0.100"))
        intent(journal, order("r1i4-1", PERP, Side.SELL, "0.100"))
        journal.record_order(2, ClientOrderId("r1i4-1"), order("r1i4-1", PERP, Side.SELL, "0.1").instruction_id,
                             first.status, first)
        fill = reports.receive_nowait()
        assert isinstance(fill, FillReport)
        journal.record_report(3, "binance", f"binance:{fill.trade_id}", "FillReport", fill)
        intent(journal, order("r1i4-2", PERP, Side.SELL, "0.200"))
        kill(journal)
        posts = len(order_posts(exchange_fake))
        past, report, logs = await restart(path, venue)
        [abandoned] = [e for e in logs if e["event"] == "instruction_abandoned_at_restart"]
        assert abandoned["instruction_id"] == "r1i4" and abandoned["steps_done"] == [1]
        assert abandoned["left"][0] == "step 2 (never_sent)" and "after 2" in abandoned["left"][-1]
        assert [a["instruction_id"] for a in report.abandoned] == ["r1i4"]
        assert ("instruction", "r1i4", "abandoned") in [(k, r, o) for k, r, o, _ in past.recoveries()]
        assert len(order_posts(exchange_fake)) == posts  # nothing re-run: no order sent by the recovery
        # The journal's fills account for what the venue holds.
        detail = await venue.fetch_account_detail()
        assert check_positions(past, [("binance", p) for p in detail.positions], "halt", report).positions == []


@pytest.mark.asyncio
async def test_a_perp_the_journal_does_not_account_for_halts_naming_it_or_is_adopted_once(
        exchange_fake: Any, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    kill(killed_run(path))
    venue, _ = adapter(exchange_fake)
    async with venue:
        on_venue(exchange_fake, order("byhand-1", PERP, Side.SELL, "0.300"))  # placed by hand, never journaled
        past, report, _ = await restart(path, venue)
        held = [("binance", p) for p in (await venue.fetch_account_detail()).positions]
        with capture_logs() as logs:
            halted = check_positions(past, held, "halt", report)
        reason = halted.halt_reason
        assert reason is not None and "binance holds -0.300 ETHUSDT" in reason and "basisd flatten" in reason
        assert [e["action"] for e in logs if e["event"] == "live_position_unexplained"] == ["halt"]
        assert halted.as_dict()["positions_unexplained"][0]["journal_quantity"] == "0"
        # Journaled as it opened: a later start accounts for it (adopt or halt, the books hold it from here on).
        later = check_positions(past, held, "adopt", RecoveryReport())
        assert later.positions == [] and later.halt_reason is None
        past.close()


# --- a real daemon killed mid-entry ---------------------------------------------------------------------------------


@pytest.mark.subprocess
def test_a_daemon_killed_mid_entry_comes_back_with_the_order_found_and_the_entry_abandoned(tmp_path: Path) -> None:
    from tests.integration.test_live_daemon import LIVE, ThreadedFake, basisd, live_env, venue_truth

    venues = ThreadedFake(tmp_path / "fake-tls")
    fake = venues.fake
    try:
        # The entry's Binance perp sell is booked by the venue, its answer held: the daemon is killed waiting for it.
        venues.call(lambda: fake.faults.timeout_after_place(path="/fapi/v1/order", delay=20.0))
        env = live_env(fake, tmp_path / "state", BASISD_EXCHANGE__REQUEST_TIMEOUT_S="30",
                       BASISD_RECONCILE__HALT_ABOVE_USD="5000")
        (tmp_path / "run1").mkdir()
        first = DaemonProcess(LIVE, tmp_path / "run1", env=env)
        try:
            first.wait_ready(timeout_s=60)
            first.wait_for(lambda: bool(venues.call(lambda: [o for o in fake.binance.orders.values()
                                                             if o.market == "futures"])), 60, "the perp sell")
            first.signal(signal.SIGKILL)
            first.wait_exit(10)
        finally:
            first.close()
        [held] = venues.call(lambda: [o for o in fake.binance.orders.values() if o.market == "futures"])
        assert held.status == "FILLED"
        venues.call(fake.faults.clear)

        (tmp_path / "run2").mkdir()
        second = DaemonProcess(LIVE, tmp_path / "run2", env=env)
        try:
            second.wait_ready(timeout_s=60)
            recovered = second.wait_for_event("order_recovered", outcome="filled")
            # (Its trade journaled by whichever run saw it first: the dead run's stream, or this recovery.)
            assert recovered["venue"] == "binance" and recovered["last_event"] == "intent", recovered
            abandoned = second.wait_for_event("instruction_abandoned_at_restart")
            assert abandoned["instruction_id"] == recovered["instruction_id"], abandoned
            done = second.wait_for_event("recovery_done")
            assert done["previous_run_unclean"] is True and done["orders"].get("filled") == 1, done
            # The held order's trade is in the opening books, never booked again as a fill of the new run.
            trade_ids = venues.call(lambda: [str(t.id) for t in fake.binance.trades if t.order_id == held.order_id])
            booked = [e for e in second.events() if e.get("event") == "order_filled"
                      and e.get("client_order_id") == recovered["client_order_id"]]
            assert booked == [], booked
            # The books are the venues' truth.
            second.wait_for(lambda: any(e.get("event") == "instruction_finished" for e in second.events()), 60,
                            "the strategy's first decision after the restart")
            answer = basisd(env, "reconcile")
            assert answer.returncode == 0, answer.stderr
            assert not json.loads(answer.stdout).get("drifts"), answer.stdout
            second.signal(signal.SIGTERM)
            assert second.wait_exit(30) == 0, second.output()[-3000:]
        finally:
            second.close()
        journal = PastRuns(tmp_path / "state" / "journal.sqlite")
        keys = [k for (k,) in journal._db.execute("SELECT report_key FROM venue_reports")]
        journal.close()
        assert all(keys.count(f"binance:{t}") == 1 for t in trade_ids), (trade_ids, keys)  # journaled once
        ids = venues.call(lambda: venue_truth(fake))["client_ids"]
        assert len(ids) == len(set(ids)), ids  # no order sent twice
    finally:
        venues.stop()


@pytest.mark.subprocess
def test_with_the_halt_policy_a_perp_the_journal_does_not_account_for_brings_the_daemon_up_halted(
        tmp_path: Path) -> None:
    from tests.integration.test_live_daemon import LIVE, ThreadedFake, live_env

    venues = ThreadedFake(tmp_path / "fake-tls")
    fake = venues.fake
    try:
        venues.call(lambda: on_venue(fake, order("byhand-1", PERP, Side.SELL, "0.500")))  # opened by hand
        env = live_env(fake, tmp_path / "state", BASISD_RECOVERY__POSITIONS="halt")
        daemon = DaemonProcess(LIVE, tmp_path, env=env)
        try:
            daemon.wait_ready(timeout_s=60)
            halted = daemon.wait_for_event("trading_state_changed", current="HALTED")
            reason = halted["reason"]
            assert reason.startswith("recovery at start-up: binance holds -0.500 ETHUSDT"), reason
            assert "basisd flatten" in reason and "basisd resume" in reason, reason
            unexplained = daemon.wait_for_event("live_position_unexplained")
            assert unexplained["action"] == "halt" and unexplained["journal_quantity"] == "0", unexplained
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
        finally:
            daemon.close()
        # Nothing traded: the only order the venue has is the one placed by hand.
        assert venues.call(lambda: [o.client_id for v in ("binance", "bybit", "okx")
                                    for o in getattr(fake, v).orders.values()]) == [
            to_venue(ClientOrderId("byhand-1"), "binanceusdm")]
    finally:
        venues.stop()


def test_the_journal_lists_only_orders_whose_outcome_a_venue_must_settle(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    paper = Journal(path, "paper", "paper.yaml", 0)
    intent(paper, order("r1i9-1", PERP, Side.BUY, "0.1"))  # a paper run's order: its venue was simulated
    paper.close()
    journal = killed_run(path)
    for cid in ("r2i1-1", "r2i1-2", "r2i1-3", "r2i1-4", "r2i1-5"):
        intent(journal, order(cid, PERP, Side.SELL, "0.1"))
    journal.record_order(2, ClientOrderId("r2i1-1"), order("r2i1-1", PERP, Side.SELL, "0.1").instruction_id,
                         "filled", {"status": "filled"})
    journal.record_order(2, ClientOrderId("r2i1-2"), order("r2i1-2", PERP, Side.SELL, "0.1").instruction_id,
                         "error", {"error": "refused", "kind": "NonRetryableVenueError"})  # an answer
    journal.record_order(2, ClientOrderId("r2i1-3"), order("r2i1-3", PERP, Side.SELL, "0.1").instruction_id,
                         "error", {"error": "timed out", "kind": "UnknownOrderOutcome"})
    journal.record_order(2, ClientOrderId("r2i1-4"), order("r2i1-4", PERP, Side.SELL, "0.1").instruction_id,
                         "timeout", {"step": 4, "action": "SHORT_PERP"})
    intent(journal, order("r2i1-5", PERP, Side.SELL, "0.1"))  # sent again under the same id: one order
    # r2i1-1's answer said filled, and the run died before its trade was journaled (the chaos runner's `fill` kill):
    # listed, so its trade is read back; r2i1-6 is filled with its trade journaled: settled.
    six = order("r2i1-6", PERP, Side.SELL, "0.1")
    intent(journal, six)
    journal.record_order(2, six.client_order_id, six.instruction_id, "filled", {"status": "filled"})
    journal.record_report(2, "binance", "binance:77", "FillReport", {"client_order_id": "r2i1-6", "trade_id": "77"})
    kill(journal)
    Journal(path, "live", "live.yaml", 3)
    past = PastRuns(path)
    listed = [(o["client_order_id"], o["last_event"]) for o in past.unresolved_orders()]
    assert listed == [("r2i1-1", "filled"), ("r2i1-3", "error"), ("r2i1-4", "timeout"), ("r2i1-5", "intent")]
    past.record_recovery("order", "r2i1-5", "never_sent", {})
    past.record_recovery("order", "r2i1-1", "filled", {})
    assert [o["client_order_id"] for o in past.unresolved_orders()] == ["r2i1-3", "r2i1-4"]
    assert past.previous_unclean() is not None and past.unfinished_instructions() == ["r2i1"]
    past.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("make, instrument, size",
                         [(bybit_adapter, BYBIT_PERP, "0.10"), (okx_adapter, OKX_PERP, "0.1")], ids=["bybit", "okx"])
async def test_bybit_and_okx_orders_of_a_dead_run_are_found_with_their_trades(
        exchange_fake: Any, make: Any, instrument: InstrumentId, size: str) -> None:
    dead, reports = make(exchange_fake)
    async with dead:  # the run that sent it; its fill report never reached the journal
        sent = await dead.submit_order(order("r1i7-1", instrument, Side.SELL, size))
        assert sent.status == "filled"
        [fill] = [r for r in (reports.receive_nowait() for _ in range(len(reports))) if isinstance(r, FillReport)]
    venue, again = make(exchange_fake)
    async with venue:
        found = await venue.resolve_order(order("r1i7-1", instrument, Side.SELL, size))
        assert found is not None
        status, fills = found
        assert status.status == "filled" and [f.trade_id for f in fills] == [fill.trade_id]
        assert await venue.resolve_order(order("r1i7-2", instrument, Side.SELL, size)) is None  # never sent
        assert await venue.poll_fills() == 0 and len(again) == 0
