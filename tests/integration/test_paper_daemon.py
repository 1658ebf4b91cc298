"""`basisd run --config configs/paper.yaml` in a child process, pointed at the exchange fake: real ccxt polling the
fake's public Binance endpoints over TLS (venue_redirect: the venues' host names go to the fake, TLS verified
against its certificate alone), eth_basis entering on the simulated exchanges at the fake's marks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.exchange.server import FakeExchange
from tests.integration.daemon_process import ROOT, DaemonProcess, metric_value

pytestmark = [pytest.mark.exchange_fake, pytest.mark.subprocess]

PAPER = ROOT / "configs" / "paper.yaml"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeExchange, asyncio.AbstractEventLoop]]:
    """The fake on its own event loop in a thread: the test waits on the daemon's output with blocking calls."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    exchange = FakeExchange(cert_dir=tmp_path / "fake-tls")
    asyncio.run_coroutine_threadsafe(exchange.start(), loop).result(10)
    try:
        yield exchange, loop
    finally:
        asyncio.run_coroutine_threadsafe(exchange.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def paper_env(exchange: FakeExchange, state_dir: Path, mode: str, hedge: dict[str, float] | None) -> dict[str, str]:
    """The environment of a paper daemon on the fake; `hedge` None: the shipped config's venues and hedge (eth_basis
    on Binance, Bybit and OKX), else the hedge (and venues) given."""
    venues = {} if hedge is None else {"BASISD_STRATEGY__VENUES": json.dumps(list(hedge)),
                                       "BASISD_STRATEGY__PARAMS__HEDGE_ALLOCATION": json.dumps(hedge)}
    return {
        # Tests and demos only: the venues' hosts go to the fake, whose certificate is the only one trusted.
        "BASISD_VENUE_REDIRECT__ADDRESS": f"127.0.0.1:{exchange.port}",
        "BASISD_VENUE_REDIRECT__CA_FILE": str(exchange.tls.cert_path),
        "BASISD_STRATEGY__MODE": mode,
        **venues,
        "BASISD_RUNTIME__STATE_DIR": str(state_dir),
        "BASISD_LOGGING__FORMAT": "json",
        # Decide every second on polls every half second (configs/paper.yaml: a minute and 2 s).
        "BASISD_STRATEGY__DECISION_INTERVAL_S": "1",
        "BASISD_MARKET__POLL_INTERVAL_S": "0.5",
    }


CASES = [
    # mode, hedge, the fake's perp marks (venue, its own symbol, mark), its Binance spot (symbol, price)
    ("paper.yaml", None,
     [("binance", "ETHUSDT", "3210.5"), ("bybit", "ETHUSDT", "3211"), ("okx", "ETH-USDT-SWAP", "3210")],
     ("ETHUSDT", "3209.9")),  # configs/paper.yaml as shipped: eth_basis hedged on all three venues
    ("eth_basis", {"binance": 1.0}, [("binance", "ETHUSDT", "3210.5")], ("ETHUSDT", "3209.9")),
    ("btc_basis", {"binance": 0.5, "bybit": 0.5}, [("binance", "BTCUSDT", "61000.5"), ("bybit", "BTCUSDT", "61010")],
     ("BTCUSDT", "60990")),
]


@pytest.mark.parametrize(("mode", "hedge", "marks", "spot"), CASES, ids=[c[0] for c in CASES])
def test_paper_enters_at_the_fake_s_marks_decides_on_its_timer_answers_status_and_stops_on_sigterm(
        fake: tuple[FakeExchange, asyncio.AbstractEventLoop], tmp_path: Path, mode: str,
        hedge: dict[str, float] | None, marks: list[tuple[str, str, str]], spot: tuple[str, str]) -> None:
    exchange, loop = fake
    mode = "eth_basis" if mode == "paper.yaml" else mode

    async def seed() -> None:
        for venue, symbol, mark in marks:
            getattr(exchange, venue).set_mark(symbol, Decimal(mark))
        exchange.binance.set_spot_price(spot[0], Decimal(spot[1]))
        exchange.binance.set_spot_price("ETHUSDT", Decimal("3209.9"))  # ETH values the wallet's gas

    asyncio.run_coroutine_threadsafe(seed(), loop).result(5)
    env = paper_env(exchange, tmp_path / "state", mode, hedge)
    daemon = DaemonProcess(PAPER, tmp_path, env=env)
    try:
        daemon.wait_ready(timeout_s=30)
        finished = daemon.wait_for_event("instruction_finished", timeout_s=30)
        assert finished["completed"] is True and finished["type"] == "ENTRY", finished
        fills = {e["instrument"]: e for e in daemon.events() if e.get("event") == "order_filled"}
        # Filled by the simulated exchanges at the fake's live prices (their slippage model moves them by cents).
        bought = fills[f"binance:Spot:{spot[0]}"]
        assert bought["side"] == "BUY" and abs(Decimal(bought["price"]) - Decimal(spot[1])) < Decimal("1")
        for venue, symbol, mark in marks:
            sold = fills[f"{venue}:Perp:{symbol.replace('-', '').removesuffix('SWAP')}"]  # OKX's ETH-USDT-SWAP
            assert sold["side"] == "SELL" and abs(Decimal(sold["price"]) - Decimal(mark)) < Decimal("1"), sold

        # The strategy decides on its timer, on the wall clock (the replay's rule, once per market hour, would
        # have taken one decision here).
        def decisions() -> float:
            return metric_value(daemon.scrape(), "basisd_strategy_decisions_total") or 0.0

        daemon.wait_for(lambda: decisions() >= 3, 30, "three decisions")

        status = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(PAPER)], cwd=ROOT,
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert mode in status.stdout and f"binance:Perp:{marks[0][1]}" in status.stdout, status.stdout

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(20) == 0, daemon.output()[-3000:]
        stopped = [e for e in daemon.events() if e.get("event") == "daemon_stopped"]
        assert stopped and stopped[-1]["reason"] == "signal SIGTERM"
    finally:
        daemon.close()
    # Paper asks the venues for public data only: nothing signed, no order reaches them.
    asked = {(r.host, r.method, r.path) for r in list(exchange.requests)}
    public = {("fapi.binance.com", "GET", "/fapi/v1/exchangeInfo"),
              ("fapi.binance.com", "GET", "/fapi/v1/premiumIndex"),
              ("api.binance.com", "GET", "/api/v3/exchangeInfo"), ("api.binance.com", "GET", "/api/v3/ticker/price"),
              ("api.bybit.com", "GET", "/v5/market/instruments-info"), ("api.bybit.com", "GET", "/v5/market/tickers")}
    # The public market streams too (market.source: stream; REST answers when they are not fresh): never a private
    # one, which would need a key (Binance's listenKey, Bybit's and OKX's private paths).
    streams = {(host, path) for host, method, path in asked if method == "WS"}
    assert streams and all(("/public/" in path or path.startswith(("/ws/", "/market/ws/")))
                           and "private" not in path for _, path in streams), streams
    asked -= {(host, "WS", path) for host, path in streams}
    # OKX's market data is all under its public and market paths (instruments, mark price, funding, tickers).
    asked -= {(h, m, p) for h, m, p in asked if h == "www.okx.com" and m == "GET"
              and p.startswith(("/api/v5/public/", "/api/v5/market/"))}
    assert asked <= public, asked - public
    assert not exchange.binance.orders and not exchange.bybit.orders and not exchange.okx.orders


def test_a_venue_that_stops_answering_goes_stale_in_seconds_and_trading_takes_no_new_exposure_until_it_is_back(
        fake: tuple[FakeExchange, asyncio.AbstractEventLoop], tmp_path: Path) -> None:
    exchange, loop = fake

    def on_fake(fn: Callable[[], object]) -> None:
        async def call() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(call(), loop).result(5)

    # REST polling (the public streams' own fallback to REST is tests/integration/test_ccxt_market_stream.py's).
    env = {**paper_env(exchange, tmp_path / "state", "eth_basis", {"binance": 1.0}),
           "BASISD_RISK__DATA_STALE_AFTER_S": "2", "BASISD_MARKET__SOURCE": "rest"}
    daemon = DaemonProcess(PAPER, tmp_path, env=env)

    def changed_to(state: str) -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == "trading_state_changed" and e["current"] == state]

    try:
        daemon.wait_ready(timeout_s=30)
        daemon.wait_for_event("instruction_finished", timeout_s=30)
        on_fake(lambda: exchange.faults.maintenance(host="binance.com", times=None))
        daemon.wait_for(lambda: bool(changed_to("REDUCING")), 30, "trading REDUCING on stale data")
        reason = changed_to("REDUCING")[0]["reason"]
        assert reason.startswith("stale market data") and "binance:Perp:ETHUSDT" in reason, reason
        assert [e["venue"] for e in daemon.events() if e.get("event") == "market_venue_degraded"] == ["binance"]
        on_fake(exchange.faults.clear)
        daemon.wait_for(lambda: bool(changed_to("ACTIVE")), 30, "trading ACTIVE again")
        assert changed_to("ACTIVE")[0]["reason"] == "risk cleared"
        assert [e["venue"] for e in daemon.events() if e.get("event") == "market_venue_recovered"] == ["binance"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(20) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()
