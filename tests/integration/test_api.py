"""The positions API on the real replay daemon in a child process: HTTP with urllib, the stream with a real
WebSocket client (websockets' synchronous one)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.daemon_process import DaemonProcess

pytestmark = pytest.mark.subprocess

TOKEN = "test-token-7f3a9c1e5b2d4a68"
SUMMARY, HEALTH, STREAM = "/api/v1/positions/summary", "/api/v1/positions/health", "/api/v1/positions/stream"
ACTORS = {"positions", "fills", "execution", "risk", "strategy", "market_data", "status", "api", "reconciler"}
CEX_VENUES = ("binance", "bybit", "okx")
Json = dict[str, Any]


def api_config(catalog: Path, *, trade_often: bool = False, speed: int = 36_000, **api: object) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["runtime"]["status_interval_s"] = 0.5
    data["replay"]["speed"] = speed  # ten market hours a second
    data["api"] = {"port": 0, **api}
    if trade_often:
        # Rebalance on the smallest drift: fills every few market hours instead of a few times a year.
        data["strategy"]["params"] = {"position_deviation_threshold": 0.00001, "min_order_usd": 0.01}
        for venue in ("binance", "bybit", "okx"):
            path = catalog / "venues" / f"{venue}.yaml"
            path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "min_order_usd": 0.01}))
    path = catalog / "api_run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        proc = DaemonProcess(config, tmp_path, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


class Api:
    def __init__(self, proc: DaemonProcess, token: str | None = None) -> None:
        self.port = int(proc.wait_for_event("api_listening")["port"])
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, token: str | None = None, method: str = "GET", body: bytes | None = None
            ) -> tuple[int, Json, Message]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", body, headers, method=method)
        try:
            with self._opener.open(request, timeout=5) as response:
                return response.status, json.loads(response.read()), response.headers
        except HTTPError as err:
            with err:
                return err.code, json.loads(err.read()), err.headers

    def connect(self, token: str | None = None, **kwargs: Any) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws: ClientConnection = connect(f"ws://127.0.0.1:{self.port}{STREAM}", additional_headers=headers,
                                       proxy=None, open_timeout=5, **kwargs)
        return ws


def receive_until(ws: ClientConnection, wanted: Callable[[Json], bool], timeout_s: float = 20,
                  seen: list[Json] | None = None) -> Json:
    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message: Json = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            break
        seen.append(message)
        if wanted(message):
            return message
    raise AssertionError(f"no such message within {timeout_s} s; got {Counter(m['type'] for m in seen)}")


def signed(position: Json | None) -> Decimal:
    if position is None:
        return Decimal(0)
    quantity = Decimal(position["quantity"] or 0)
    return -quantity if position["side"] == "short" else quantity


def test_a_client_gets_the_state_then_every_fill_with_its_position_and_a_summary_on_request(
    catalog: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    proc = daemons(api_config(catalog, trade_often=True))
    api = Api(proc)
    with api.connect() as ws:
        initial = json.loads(ws.recv(timeout=10))
        assert initial["type"] == "initial_state"
        assert {"timestamp", "active_positions", "total_exposure", "total_pnl", "realized_pnl", "unrealized_pnl",
                "positions", "onchain", "trading"} <= initial.keys()
        # Every fill arrives with the position that includes it: per symbol, the quantities shown move by
        # exactly the fills shown (fills booked in one snapshot share its position, hence the running sum).
        quantity = {symbol: signed(p) for symbol, p in initial["positions"].items()}
        unexplained: dict[str, Decimal] = {}
        fills: list[Json] = []
        while len(fills) < 6:
            update = receive_until(ws, lambda m: m["type"] == "position_update", timeout_s=30)
            symbol, shown = update["symbol"], signed(update["position"])
            if update["event_type"] != "fill":
                if not unexplained.get(symbol):
                    assert update["event_type"] == "position_change" or shown == quantity.get(symbol, 0), update
                    quantity[symbol] = shown
                continue
            fills.append(update)
            fill = update["fill"]
            assert fill["side"] in ("buy", "sell") and Decimal(fill["quantity"]) > 0 and fill["trade_id"]
            # A fill whose holding is gone by the snapshot that includes it (spot ETH bought and already
            # withdrawn, a perp closed) comes with `position: null`; any other names when it last changed.
            assert isinstance(update["origin_ns"], int)
            assert update["position"] is None or update["position"]["last_updated"], update
            moved = Decimal(fill["quantity"]) * (1 if fill["side"] == "buy" else -1)
            if fill["symbol"] == symbol:  # a perp (a spot fill moves the venue's token holding)
                unexplained[symbol] = unexplained.get(symbol, Decimal(0)) + moved
                if shown == quantity.get(symbol, 0) + unexplained[symbol]:
                    quantity[symbol], unexplained[symbol] = shown, Decimal(0)
                else:
                    assert shown != quantity.get(symbol, 0), f"{update} shows the position from before the fill"
        ws.send(json.dumps({"action": "get_summary"}))
        summary = receive_until(ws, lambda m: m["type"] == "summary")
        assert summary["positions"] and summary["trading"]["state"] == "ACTIVE"
        ws.send(json.dumps({"action": "ping"}))
        assert receive_until(ws, lambda m: m["type"] == "pong")["timestamp"]

        status, body, headers = api.get(SUMMARY)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert body["currency"] == "USDT" and body["active_positions"] >= 4
        perp = body["positions"]["binance:Perp:ETHUSDT"]
        assert perp["side"] == "short" and Decimal(perp["notional_value"]) > 0 and perp["entry_price"]
        assert Decimal(body["onchain"]["health_factor"]) > 1 and body["onchain"]["collateral"][0]["asset"] == "weETH"
        # The books' exact attribution rides along: every component, as exact decimal strings.
        from daemon.domain.pnl import COMPONENTS

        assert set(body["pnl_by_component"]) == set(COMPONENTS)
        assert Decimal(body["pnl_by_component"]["transaction_costs"]) < 0  # the entry paid fees and gas
        status, health, _ = api.get(HEALTH)
        assert status == 200 and health["status"] in ("healthy", "degraded") and health["running"] is True
        assert set(health["actors"]) == ACTORS and health["clients"] == 1
        last = health["last_reconciliation"]  # the start-up run at least, before READY=1
        assert last["runs"] >= 1 and last["failures"] == 0 and set(last["drift_usd"]) == {*CEX_VENUES, "wallet"}
        assert all(Decimal(v) == 0 for v in last["drift_usd"].values()) and health["data"]["series_ages_s"]

        # A stop closes the stream with "going away", and the daemon still exits at once and cleanly.
        proc.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
        assert (ws.close_code, ws.close_reason) == (1001, "daemon stopping")
    assert proc.wait_exit(timeout_s=5) == 0
    assert [e["reason"] for e in proc.events() if e.get("event") == "api_client_disconnected"] == ["daemon stopping"]


def test_a_stalled_client_is_cut_off_and_another_keeps_receiving(
    catalog: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    proc = daemons(api_config(catalog, trade_often=True, speed=72_000, client_queue_size=4, ping_interval_s=60))
    api = Api(proc)
    received: list[tuple[float, Json]] = []

    def read(ws: ClientConnection) -> None:
        try:
            for message in ws:
                received.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            pass

    with api.connect() as live:
        reader = threading.Thread(target=read, args=(live,), daemon=True)
        reader.start()
        # The stalled client: a small receive buffer, and it never reads (one frame buffered in the library).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", api.port))
        with connect(f"ws://127.0.0.1:{api.port}{STREAM}", sock=sock, proxy=None, max_queue=1) as stalled:
            for _ in range(50):
                stalled.send(json.dumps({"action": "get_summary"}))  # a few kB each, which it will not read
            cut = proc.wait_for_event("api_client_too_slow", timeout_s=30)
            cut_at = time.monotonic()
            assert cut["reason"] == "client too slow: 4 messages queued"
            # What was already on its socket arrives, then the close frame with the reason.
            with pytest.raises(ConnectionClosed):
                while True:
                    stalled.recv(timeout=10)
            assert (stalled.close_code, stalled.close_reason) == (1008, "client too slow: 4 messages queued")
        proc.wait_for(lambda: sum(1 for t, m in received if t > cut_at and m["type"] == "position_update") >= 5,
                      20, "updates to the live client after the cut")
        status, health, _ = api.get(HEALTH)
        assert status == 200 and health["clients"] == 1 and health["api"]["clients_cut_off"] == 1
        assert all(a["restarts"] == 0 for a in health["actors"].values())
    reader.join(timeout=10)
    assert received[0][1]["type"] == "initial_state"


def test_unauthenticated_and_malformed_requests_are_refused_and_change_nothing(
    catalog: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    proc = daemons(api_config(catalog), env={"BASISD_API__TOKEN": TOKEN})
    api = Api(proc)
    proc.wait_for_event("instruction_finished", type="ENTRY")
    proc.wait_for_event("status")
    status, before, _ = api.get(SUMMARY, TOKEN)
    assert status == 200 and before["trading"]["state"] == "ACTIVE"

    command = json.dumps({"action": "halt"}).encode()
    for path, token, method, data, code in [
        (SUMMARY, None, "GET", None, 401), (HEALTH, None, "GET", None, 401),
        (SUMMARY, "wrong-token-000000000000", "GET", None, 401), ("/metrics", None, "GET", None, 404),
        ("/api/v1/positions/halt", TOKEN, "POST", command, 404), (SUMMARY, TOKEN, "POST", command, 405),
        (SUMMARY, TOKEN, "POST", None, 405), (HEALTH, TOKEN, "DELETE", None, 405), (STREAM, TOKEN, "PUT", b"x", 405),
    ]:
        status, body, headers = api.get(path, token, method, data)
        assert (status, body["status"]) == (code, code), (path, method, body)
        assert body["error"]
        if code == 401:
            assert headers["WWW-Authenticate"].startswith('Bearer realm="basisd"')
        if code == 405:
            assert headers["Allow"] == "GET"
    assert 'error="invalid_token"' in api.get(SUMMARY, "wrong-token-000000000000")[2]["WWW-Authenticate"]

    with pytest.raises(InvalidStatus) as refused:
        api.connect()
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        api.connect("wrong-token-000000000000")
    with api.connect(TOKEN) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "initial_state"
        for bad, error in (("{not json", "malformed JSON"), ('{"action": "halt"}', "unknown action 'halt'"),
                           (b"\x00\x01", "binary frames"), ('{"act": 1}', "expected")):
            ws.send(bad)
            reply = receive_until(ws, lambda m: m["type"] == "error")
            assert reply["status"] == 400 and error in reply["error"], reply
        ws.send(json.dumps({"action": "get_summary"}))  # the connection is still open and served
        assert receive_until(ws, lambda m: m["type"] == "summary")["trading"]["state"] == "ACTIVE"

    status, after, _ = api.get(SUMMARY, TOKEN)
    assert status == 200 and after["trading"] == {**after["trading"], "state": "ACTIVE"}

    def perps(summary: Json) -> dict[str, tuple[str, str]]:
        return {s: (p["side"], p["quantity"]) for s, p in summary["positions"].items() if p["kind"] == "perp"}

    assert perps(after) == perps(before) and len(perps(before)) == 3
    assert not [e for e in proc.events() if e.get("event") == "trading_state_changed"]
    refusals = [e for e in proc.events() if e.get("event") in ("api_request_refused", "api_message_refused")]
    assert len(refusals) >= 13
    status, health, _ = api.get(HEALTH, TOKEN)
    assert status == 200 and health["trading_state"] == "ACTIVE"
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(timeout_s=5) == 0
    assert TOKEN not in proc.output()
