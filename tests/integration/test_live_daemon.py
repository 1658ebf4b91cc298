"""`basisd run --config configs/live.yaml` in a child process against the exchange fake: real ccxt, signed requests
to the venues' real host names over TLS (venue_redirect), `eth_basis` on Binance, Bybit and OKX with the capital
each account holds. The fake is the venues: what it holds at the end is the truth the books must equal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fakes.exchange.server import FakeExchange
from tests.integration.daemon_process import ROOT, DaemonProcess, metric_value

pytestmark = [pytest.mark.exchange_fake, pytest.mark.subprocess]

LIVE = ROOT / "configs" / "live.yaml"
PERPS = {"binance": "ETHUSDT", "bybit": "ETHUSDT", "okx": "ETH-USDT-SWAP"}  # the fake's own market ids
T = TypeVar("T")


class ThreadedFake:
    """The fake on its own event loop in a thread: the test waits on the daemon with blocking calls."""

    def __init__(self, cert_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.fake = FakeExchange(cert_dir=cert_dir)
        self.fake.market_streams.heartbeat_s = 1.0  # the venues re-send every subscribed quote, a still market too
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the fake's loop (its state is not thread-safe)."""
        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def wait(self, coroutine: Any) -> Any:
        """Run a coroutine of the fake's on its loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def venues(tmp_path: Path) -> Iterator[ThreadedFake]:
    fake = ThreadedFake(tmp_path / "fake-tls")
    try:
        yield fake
    finally:
        fake.stop()


def live_env(fake: FakeExchange, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "BASISD_VENUE_REDIRECT__ADDRESS": f"127.0.0.1:{fake.port}",
        "BASISD_VENUE_REDIRECT__CA_FILE": str(fake.tls.cert_path),
        "BASISD_RUNTIME__STATE_DIR": str(state_dir),
        "BASISD_LOGGING__FORMAT": "json",
        "BASISD_STRATEGY__DECISION_INTERVAL_S": "1",
        "BASISD_MARKET__POLL_INTERVAL_S": "0.5",
        "BASISD_EXCHANGE__FILLS_POLL_INTERVAL_S": "1",
    }
    for venue in ("binance", "bybit", "okx"):
        keys = fake.credentials(venue)
        env[f"BASISD_CREDENTIALS__{venue.upper()}__API_KEY"] = keys.api_key
        env[f"BASISD_CREDENTIALS__{venue.upper()}__API_SECRET"] = keys.secret
    env["BASISD_CREDENTIALS__OKX__PASSPHRASE"] = fake.credentials("okx").passphrase
    return {**env, **extra}


def basisd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(LIVE), "--json"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def venue_truth(fake: FakeExchange) -> dict[str, Any]:
    """What the fake holds: each venue's short, Binance's spot ETH, and every client id it was sent."""
    shorts = {v: (p.amount if (p := getattr(fake, v).position(sym)) is not None else Decimal(0))
              for v, sym in PERPS.items()}
    client_ids = [o.client_id for v in PERPS for o in getattr(fake, v).orders.values()]
    return {"shorts": shorts, "spot_eth": fake.binance.balance("ETH", "spot"), "client_ids": client_ids}


def finished(daemon: DaemonProcess, kind: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == "instruction_finished" and e.get("type") == kind]


@contextlib.contextmanager
def entered(env: dict[str, str], tmp_path: Path) -> Iterator[DaemonProcess]:
    """The live daemon against the fake once its entry has finished; leaving the block, SIGTERM must stop it cleanly."""
    daemon = DaemonProcess(LIVE, tmp_path, env=env)
    try:
        daemon.wait_ready(timeout_s=60)
        daemon.wait_for(lambda: bool(finished(daemon, "ENTRY")), 60, "the entry")
        yield daemon
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()


def test_live_eth_basis_enters_rebalances_on_a_reconciled_drift_and_is_flattened_against_the_venues(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    # The reconciler books a drift up to this much to the venues' figures instead of halting (the drift below is
    # 0.5 ETH, about 1,500 USD at the fake's 3,000).
    env = live_env(fake, tmp_path / "state", BASISD_RECONCILE__HALT_ABOVE_USD="5000")
    daemon = DaemonProcess(LIVE, tmp_path, env=env)
    try:
        daemon.wait_ready(timeout_s=60)
        opened = {e["venue"]: e["balances"] for e in daemon.events() if e.get("event") == "live_account_opened"}
        assert opened == {"binance": {"USDT": "20000.00000000"}, "bybit": {"USDT": "10000.00000000"},
                          "okx": {"USDT": "10000.00000000"}}
        daemon.wait_for(lambda: bool(finished(daemon, "ENTRY")), 60, "the entry")
        entry = finished(daemon, "ENTRY")[0]
        assert entry["completed"] is True, entry
        truth = venues.call(lambda: venue_truth(fake))
        # Long spot on Binance, short on all three, each within what its account held (no transfer between them).
        assert truth["spot_eth"] > 0 and all(s < 0 for s in truth["shorts"].values()), truth
        hedged = -sum(truth["shorts"].values(), Decimal(0))
        assert abs(truth["spot_eth"] - hedged) < Decimal("0.05"), truth  # lot rounding and the spot fee only
        # Bybit trades ETH in lots of 0.01 (its catalog entry says so and start-up checked it against the venue).
        assert truth["shorts"]["bybit"] % Decimal("0.01") == 0
        # The marks came from the venues' public streams (market.source: stream).
        live = {(e["venue"], e["kind"]) for e in daemon.events() if e.get("event") == "market_stream_live"}
        assert {("binance", "Perp"), ("binance", "Spot"), ("bybit", "Perp"), ("okx", "Perp")} <= live, live

        # The venue's books and ours agree: one reconciliation now, on demand.
        answer = basisd(env, "reconcile")
        assert answer.returncode == 0, answer.stderr
        report = json.loads(answer.stdout)
        assert report["trading"] == "ACTIVE" and not report.get("drifts"), report

        # The venue's spot balance moves without a trade: the reconciler books the venue's figure, and the delta it
        # leaves is traded away by a rebalance of the shorts.
        venues.call(lambda: fake.binance.drift_balance("ETH", Decimal("0.5"), wallet="spot"))
        answer = basisd(env, "reconcile")
        assert answer.returncode == 0, answer.stderr
        drifted = json.loads(answer.stdout)
        assert any("binance:ETH" in d for d in drifted["drifts"]), drifted
        daemon.wait_for(lambda: any(e["completed"] for e in finished(daemon, "DELTA_ADJUST")), 60, "the rebalance")
        truth = venues.call(lambda: venue_truth(fake))
        hedged = -sum(truth["shorts"].values(), Decimal(0))
        assert abs(truth["spot_eth"] - hedged) < Decimal("0.05"), truth

        # The operator's flatten: every leg unwound on the venues, reduce-only.
        answer = basisd(env, "flatten", "--reason", "test over")
        assert answer.returncode == 0, answer.stderr
        daemon.wait_for(lambda: any(e["completed"] for e in finished(daemon, "UNWIND")), 60, "the unwind")
        truth = venues.call(lambda: venue_truth(fake))
        assert all(s == 0 for s in truth["shorts"].values()), truth
        assert truth["spot_eth"] < Decimal("0.001"), truth  # what is left is below the spot pair's lot

        # The books after the flatten are the venues' truth, to the last unit.
        answer = basisd(env, "reconcile")
        assert answer.returncode == 0, answer.stderr
        assert not json.loads(answer.stdout).get("drifts"), answer.stdout

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()
    # No client order id was ever sent twice, and every one is the daemon's own (its journal run prefixes them).
    ids = truth["client_ids"]
    assert len(ids) == len(set(ids)) and all(i.startswith("bd1") or i.startswith("r1") for i in ids), ids


def test_live_refuses_to_start_with_keys_a_venue_rejects_naming_the_key_never_the_secret(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state", BASISD_CREDENTIALS__BYBIT__API_SECRET="not-the-right-secret-at-all")
    daemon = DaemonProcess(LIVE, tmp_path, env=env)
    try:
        code = daemon.wait_exit(60)
        output = daemon.output()
    finally:
        daemon.close()
    assert code == 78, output[-3000:]
    assert "bybit" in output and "credentials.bybit" in output, output[-3000:]
    assert "not-the-right-secret-at-all" not in output and fake.credentials("bybit").secret not in output
    assert not any(getattr(fake, v).orders for v in PERPS)  # nothing was sent anywhere


def test_an_order_whose_answer_never_came_is_found_on_the_venue_by_its_client_id_and_not_sent_again(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    # The entry's first order (the spot buy) is booked by the venue, and its answer held past the daemon's timeout.
    venues.call(lambda: fake.faults.timeout_after_place(path="/api/v3/order", delay=4.0))
    env = live_env(fake, tmp_path / "state", BASISD_EXCHANGE__REQUEST_TIMEOUT_S="1")
    with entered(env, tmp_path) as daemon:
        entry = finished(daemon, "ENTRY")[0]
        assert entry["completed"] is True, entry
        spot_orders = venues.call(lambda: [o for o in fake.binance.orders.values() if o.market == "spot"])
        assert len(spot_orders) == 1 and spot_orders[0].status == "FILLED", spot_orders
        buys = [e for e in daemon.events() if e.get("event") == "order_filled" and "Spot" in e["instrument"]]
        assert len(buys) == 1, buys  # booked once
    ids = venues.call(lambda: venue_truth(fake))["client_ids"]
    assert len(ids) == len(set(ids)), ids


def test_a_venue_s_ban_stops_every_request_to_it_until_the_ban_ends_then_trading_goes_on(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state")
    with entered(env, tmp_path) as daemon:
        banned_at = venues.call(lambda: len(fake.requests))
        venues.call(lambda: fake.faults.ban(seconds=6, host="fapi.binance.com"))

        def usdm(status: int | None = None) -> list[Any]:
            return [r for r in list(fake.requests)[banned_at:] if r.host == "fapi.binance.com"
                    and (status is None or r.status == status)]

        # Polled every half second (market data) and every second (fills) without the ban: both wait it out.
        daemon.wait_for(lambda: bool(venues.call(lambda: usdm(418))), 30, "the ban")
        daemon.wait_for(lambda: bool(venues.call(lambda: usdm(200))), 60, "a request after the ban")
        refused = venues.call(lambda: usdm(418))
        assert len(refused) <= 3, [(r.path, r.status) for r in refused]  # one per client, at most one in flight
        # The operator sees it: the adapter's gate for that host counted the ban.
        seen = metric_value(daemon.scrape(), "basisd_venue_bans_seen", venue="binance", exchange="binanceusdm")
        assert seen is not None and seen >= 1
        assert metric_value(daemon.scrape(), "basisd_venue_degraded", venue="bybit", exchange="bybit") == 0


def test_a_venue_whose_clock_is_off_is_not_traded_and_the_daemon_says_why(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    venues.call(lambda: setattr(fake.bybit, "clock_skew_ms", 5000))
    daemon = DaemonProcess(LIVE, tmp_path, env=live_env(fake, tmp_path / "state"))
    try:
        code = daemon.wait_exit(60)
        output = daemon.output()
    finally:
        daemon.close()
    assert code == 78, output[-3000:]
    assert "bybit: the venue's clock is" in output and "refusing to trade" in output, output[-3000:]
    assert not any(getattr(fake, v).orders for v in PERPS)


def test_private_streams_dropped_mid_session_reconnect_and_no_fill_is_lost_or_booked_twice(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state", BASISD_RECONCILE__HALT_ABOVE_USD="5000")

    def healthy() -> dict[str, float | None]:
        scrape = daemon.scrape()
        return {v: metric_value(scrape, "basisd_venue_stream_healthy", venue=v) for v in PERPS}

    with entered(env, tmp_path) as daemon:
        daemon.wait_for(lambda: all(h == 1 for h in healthy().values()), 60, "every venue's stream healthy")
        # Every venue's private sockets go down at once; a rebalance trades while they come back.
        venues.wait(fake.binance_streams.drop_user_connections())
        venues.wait(fake.binance_streams.drop_spot_user_connections())
        venues.wait(fake.bybit_streams.drop_connections())
        venues.wait(fake.okx_streams.drop_connections())
        venues.call(lambda: fake.binance.drift_balance("ETH", Decimal("0.5"), wallet="spot"))
        assert basisd(env, "reconcile").returncode == 0
        daemon.wait_for(lambda: any(e["completed"] for e in finished(daemon, "DELTA_ADJUST")), 60, "the rebalance")

        def reconnected() -> bool:
            scrape = daemon.scrape()
            return all((metric_value(scrape, "basisd_venue_stream_reconnects", venue=v) or 0) >= 1 for v in PERPS)

        daemon.wait_for(reconnected, 60, "every venue's stream reconnected")
        daemon.wait_for(lambda: all(h == 1 for h in healthy().values()), 60, "every venue's stream healthy again")
        booked = [e for e in daemon.events() if e.get("event") == "order_filled"]
        traded = venues.call(lambda: [(v, t.id) for v in PERPS for t in getattr(fake, v).trades])
        assert len(booked) == len(traded), (booked, traded)  # each of the venues' trades booked exactly once
        assert len({(e["venue"], e["client_order_id"]) for e in booked}) == len(booked)


def test_the_funding_the_venues_pay_is_booked_once_and_the_books_still_equal_the_venues(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state", BASISD_EXCHANGE__FUNDING_POLL_INTERVAL_S="5")

    def found() -> dict[str, int]:
        out: dict[str, int] = {}
        for e in daemon.events():
            if e.get("event") == "funding_payments_found":
                out[e["venue"]] = out.get(e["venue"], 0) + e["payments"]
        return out

    with entered(env, tmp_path) as daemon:
        # One settlement on each venue's short (a positive rate: the shorts are paid).
        def settle_everywhere() -> None:
            for venue, symbol in PERPS.items():
                getattr(fake, venue).settle_funding(symbol, rate=Decimal("0.0001"))

        venues.call(settle_everywhere)
        daemon.wait_for(lambda: found() == {"binance": 1, "bybit": 1, "okx": 1}, 60, "the three payments")
        answer = basisd(env, "reconcile")
        assert answer.returncode == 0, answer.stderr
        report = json.loads(answer.stdout)
        assert report["trading"] == "ACTIVE" and not report.get("drifts"), report
        time.sleep(6)  # another funding poll: nothing new
        assert found() == {"binance": 1, "bybit": 1, "okx": 1}


def test_keys_a_venue_stops_accepting_after_start_up_halt_trading_naming_the_venue_never_the_secret(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state")

    def halted() -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == "trading_state_changed" and e["current"] == "HALTED"]

    with entered(env, tmp_path) as daemon:
        # What Binance answers a key deleted, or one whose permission or IP allow-list entry was removed.
        venues.call(lambda: fake.faults.binance_error(-2015, "Invalid API-key, IP, or permissions for action.",
                                                      status=401, host="fapi.binance.com", times=None))
        daemon.wait_for(lambda: bool(halted()), 60, "the halt")
        reason = halted()[0]["reason"]
        assert reason.startswith("a venue refused our keys after start-up: binance:"), reason
        assert fake.credentials("binance").secret not in daemon.output()


def test_a_deposit_an_operator_sends_an_account_is_booked_as_capital_not_a_drift(
        venues: ThreadedFake, tmp_path: Path) -> None:
    fake = venues.fake
    env = live_env(fake, tmp_path / "state", BASISD_EXCHANGE__TRANSFERS_POLL_INTERVAL_S="5")
    with entered(env, tmp_path) as daemon:
        # 1,000 USDT arrive on Bybit from outside the books (Bybit credits its funding account first).
        venues.call(lambda: fake.bybit.credit_deposit("USDT", Decimal(1000), "ETH", "0xfeed"))
        daemon.wait_for(lambda: any(e.get("event") == "deposits_booked" for e in daemon.events()), 60,
                        "the deposit booked")
        answer = basisd(env, "reconcile")
        assert answer.returncode == 0, answer.stderr
        report = json.loads(answer.stdout)
        assert report["trading"] == "ACTIVE" and not report.get("drifts"), report
        assert venues.call(lambda: fake.bybit.balance("USDT", fake.bybit.spot_wallet)) > Decimal(10000)  # swept in
