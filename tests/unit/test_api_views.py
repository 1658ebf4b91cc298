"""The positions API's pure parts: JSON shaping (views), which updates to stream (tracker), routing and
authentication (http), the taps that feed it, and its settings."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.api.http import BearerAuth, Refusal, loopback_host, parse_action, route
from daemon.api.taps import ApiTaps, Stamped
from daemon.api.tracker import PositionTracker, TappedReport
from daemon.api.views import HealthInputs, ViewConfig, dec, encode, health, holdings, iso, summary
from daemon.bus import ConflatingChannel, LosslessChannel, WouldBlock
from daemon.config import load_config, load_settings
from daemon.domain.booking import fill_change_set
from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.messages import (
    BalancesChanged,
    OrderFilled,
    PortfolioSnapshotted,
    PositionView,
    RiskAssessed,
    Side,
    TradingState,
)
from daemon.errors import ConfigError
from daemon.lifecycle import ActorRecord, ActorState
from daemon.settings import ApiSettings, is_loopback

D = Decimal
T0 = 1_717_200_000_000_000_000  # 2024-06-01T00:00:00Z
PERP = "binance:Perp:ETHUSDT"
USDT_VIEW = ViewConfig("USDT", D("0.95"), "aave_v3", D(100_000))


def fill(side: Side, quantity: str, price: str, n: int = 1, instrument: str = PERP) -> OrderFilled:
    return OrderFilled(VenueId("binance"), TradeId(f"t{n}"), ClientOrderId(f"c{n}"), InstrumentId(instrument), side,
                       D(quantity), D(price), D(0), "USDT", T0 + n, T0 + n)


def books() -> Ledger:
    """20k USDT at binance, short 2 ETH there at 3000, and an AAVE loop: 10 aWeETH (scaled), 8 WETH debt (scaled)."""
    ledger = Ledger(("binance",), gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, T0, (TokenChange(WALLET, "USDT", D(80_000)),
                                                        TokenChange("binance", "USDT", D(20_000)))))
    ledger.apply(fill_change_set(fill(Side.SELL, "2", "3000")))
    ledger.apply(ChangeSet(Reason.ATOMIC_LEVERAGE_EXECUTION, T0, (TokenChange(WALLET, "aWeETH", D(10)),
                                                                  TokenChange(WALLET, "variableDebtWETH", D(8)))))
    return ledger


MARKET = MarketState(T0, {"ETH": D(3100)}, {("binance", "ETH"): D(3100)}, {"weETH": D("1.05")},
                     {"weETH": D("1.02"), "WETH": D(1)}, {"WETH": D("1.03")})


def snapshot(ledger: Ledger, mark: str = "3100", booked: int = 2, ts: int = T0) -> PortfolioSnapshotted:
    snap = ledger.snapshot()
    positions = tuple(PositionView(InstrumentId(f"{p.venue}:Perp:{p.instrument}"), p.quantity, p.entry_price, D(mark),
                                   p.realized_pnl, p.quantity * D(mark) - p.cost) for p in snap.perps if p.quantity)
    return PortfolioSnapshotted(positions, (), D(3100), D(0), D(100_000), booked, ts, ts, snap,
                                (("binance:Perp:ETHUSDT", D(0)), ("gas", D(3600))))


# --- views ------------------------------------------------------------------------------------------------


def test_decimals_are_exact_strings_without_exponent_and_timestamps_are_iso_utc() -> None:
    assert dec(D("1E+2")) == "100" and dec(D("1.500")) == "1.5" and dec(D("-0.00")) == "0"
    assert dec(D("0.000000000000000001")) == "0.000000000000000001"
    assert dec(None) is None and dec(D("Infinity")) is None
    assert iso(T0 + 1_500_000) == "2024-06-01T00:00:00.001Z" and iso(None) is None


def test_a_perp_is_valued_at_its_venues_mark_with_pnl_notional_and_leverage_on_the_venue_equity() -> None:
    rows = holdings(snapshot(books()), MARKET, USDT_VIEW)
    perp = rows[PERP]
    assert (perp.side, perp.quantity, perp.entry_price, perp.mark_price) == ("short", D(-2), D(3000), D(3100))
    assert perp.unrealized_pnl == D(-200) and perp.realized_pnl == 0
    assert perp.notional == D(6200)
    assert perp.leverage == D(6200) / D(19_800)  # the venue's 20,000 USDT less the 200 it is losing


def test_aave_collateral_and_debt_are_native_amounts_at_their_indexes_with_hf_and_ltv() -> None:
    body = summary(snapshot(books()), MARKET, USDT_VIEW, TradingState.ACTIVE, None, {})
    collateral_usd = D(10) * D("1.02") * D("1.05") * D(3100)  # scaled × liquidity index × oracle × ETH
    debt_usd = D(8) * D("1.03") * D(3100)
    book = body["onchain"]
    assert book["collateral"] == [{"token": "aWeETH", "asset": "weETH", "scaled_balance": "10", "amount": "10.2",
                                   "value": dec(collateral_usd)}]
    assert book["debt"][0]["amount"] == "8.24" and book["debt_value"] == dec(debt_usd)
    assert book["health_factor"] == dec(D("0.95") * collateral_usd / debt_usd)
    assert book["ltv"] == dec(debt_usd / collateral_usd)
    assert book["leverage"] == dec(collateral_usd / (collateral_usd - debt_usd))
    assert book["collateral_eth"] == dec(collateral_usd / D(3100))
    positions = body["positions"]
    assert positions["aave_v3:aWeETH"]["side"] == "long" and positions["aave_v3:aWeETH"]["quantity"] == "10.2"
    assert positions["aave_v3:variableDebtWETH"]["side"] == "short"
    assert "wallet:USDT" not in positions
    assert body["cash"] == {"binance": {"USDT": "20000"}, "wallet": {"USDT": "80000"}}


def test_the_summary_totals_and_shapes_every_position_with_strings() -> None:
    body = json.loads(encode(summary(snapshot(books()), MARKET, USDT_VIEW, TradingState.REDUCING, None,
                                     {PERP: T0 + 5})))
    assert body["timestamp"] == "2024-06-01T00:00:00.000Z" and body["currency"] == "USDT"
    assert body["active_positions"] == 3
    assert (body["unrealized_pnl"], body["realized_pnl"], body["total_pnl"]) == ("-200", "0", "-200")
    assert body["nav"] == "100000" and body["nav_change"] == "0"
    assert body["trading"] == {"state": "REDUCING"}
    perp = body["positions"][PERP]
    assert perp == {
        "symbol": PERP, "venue": "binance", "kind": "perp", "instrument": "ETHUSDT", "asset": "ETH", "side": "short",
        "quantity": "2", "entry_price": "3000", "current_price": "3100", "unrealized_pnl": "-200",
        "realized_pnl": "0", "total_pnl": "-200", "notional_value": "6200", "leverage": perp["leverage"],
        "last_updated": "2024-06-01T00:00:00.000Z",
    }
    exposure = D(6200) + D(10) * D("1.02") * D("1.05") * D(3100) + D(8) * D("1.03") * D(3100)
    assert body["total_exposure"] == dec(exposure)


def test_an_eth_share_class_sees_money_in_eth_and_prices_in_usd() -> None:
    eth = ViewConfig("ETH", D("0.95"), "aave_v3", D(30))
    perp = holdings(snapshot(books()), MARKET, eth)[PERP]
    assert perp.unrealized_pnl == D(-200) / D(3100) and perp.mark_price == D(3100)
    body = summary(snapshot(books()), MARKET, eth, TradingState.ACTIVE, None, {})
    assert body["nav"] == dec(D(100_000) / D(3100)) and body["onchain"]["debt"][0]["value"] == dec(D("8.24"))


def test_before_the_first_snapshot_the_summary_is_empty_not_an_error() -> None:
    body = summary(None, MarketState(0, {}), USDT_VIEW, TradingState.ACTIVE, None, {})
    assert body["positions"] == {} and body["timestamp"] is None and body["active_positions"] == 0


def test_missing_market_data_is_null_never_guessed() -> None:
    bare = MarketState(T0, {"ETH": D(3100)}, {("binance", "ETH"): D(3100)})  # no AAVE index, no LST oracle
    body = summary(snapshot(books()), bare, USDT_VIEW, TradingState.ACTIVE, None, {})
    assert body["positions"]["aave_v3:aWeETH"]["quantity"] is None
    assert body["onchain"]["valued"] is False and body["onchain"]["health_factor"] is None


def test_risk_readings_join_the_trading_state() -> None:
    risk = RiskAssessed(TradingState.ACTIVE, "WARNING", (("binance", D("0.18")), ("okx", D("Infinity"))), D("0.01"),
                        "NONE", D("0.002"), T0, T0)
    body = summary(None, MARKET, USDT_VIEW, TradingState.ACTIVE, risk, {})
    assert body["trading"] == {"state": "ACTIVE", "solvency": "WARNING", "drawdown": "0.01", "breaker": "NONE",
                               "mark_divergence": "0.002", "margin_ratios": {"binance": "0.18", "okx": None}}


# --- health -----------------------------------------------------------------------------------------------


def record(name: str, state: ActorState = ActorState.RUNNING, beat: float = 99.0) -> ActorRecord:
    return ActorRecord(name, state=state, last_beat_mono=beat)


def health_of(*records: ActorRecord, trading: TradingState = TradingState.ACTIVE,
              snap: PortfolioSnapshotted | None = None, stale: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    return health(HealthInputs(records, 100.0, 10.0, trading, snap, 0.5 if snap else None, stale, None, 2))


def test_health_is_healthy_degraded_or_unhealthy_with_the_reasons() -> None:
    snap = snapshot(books())
    status, body = health_of(record("positions"), record("api"), snap=snap)
    assert (status, body["status"], body["running"], body["reasons"]) == (200, "healthy", True, [])
    assert body["actors"]["positions"]["heartbeat_age_s"] == 1.0 and body["last_reconciliation"] is None
    assert body["data"]["series_ages_s"] == {"binance:Perp:ETHUSDT": "0", "gas": "3600"}
    assert body["data"]["max_series_age_s"] == "3600" and body["clients"] == 2

    status, body = health_of(record("positions", ActorState.BACKING_OFF), snap=snap, trading=TradingState.HALTED,
                             stale=("gas",))
    assert (status, body["status"], body["running"]) == (200, "degraded", False)
    assert body["reasons"] == ["actor positions backing_off", "trading HALTED", "stale market data: gas"]
    assert health_of(record("positions"))[1]["reasons"] == ["no portfolio snapshot yet"]

    status, body = health_of(record("risk", ActorState.FAILED), record("fills", beat=80.0), snap=snap)
    assert (status, body["status"]) == (503, "unhealthy")
    assert body["reasons"] == ["actor risk failed", "actor fills has not beaten for over 10 s"]


# --- tracker ----------------------------------------------------------------------------------------------


def test_a_fill_is_streamed_with_the_first_snapshot_that_contains_it() -> None:
    ledger = books()
    tracker = PositionTracker(D("0.01"), "aave_v3")
    tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 2, T0, 1)  # the initial picture
    sell = fill(Side.SELL, "1", "3100", n=7)
    tracker.add(TappedReport(3, sell, 1234))
    # A snapshot published before the books took report 3 says nothing about it (the price is unchanged).
    assert tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 2, T0 + 10, 2) == []
    ledger.apply(fill_change_set(sell))
    (update,) = tracker.update(holdings(snapshot(ledger, booked=3), MARKET, USDT_VIEW), 3, T0 + 20, 3)
    assert (update.event_type, update.symbol, update.origin_wall_ns) == ("fill", PERP, 1234)
    message = update.to_json(tracker.last_changed_ns[PERP])
    assert message["type"] == "position_update" and message["position"]["quantity"] == "3"
    assert message["fill"] == {"venue": "binance", "trade_id": "t7", "client_order_id": "c7", "symbol": PERP,
                               "side": "sell", "quantity": "1", "price": "3100", "fee": "0", "fee_currency": "USDT",
                               "timestamp": iso(T0 + 7)}
    assert message["change"] is None and message["position"]["last_updated"] == iso(T0 + 7)


def test_price_only_moves_are_throttled_against_the_last_update_sent() -> None:
    ledger = books()
    tracker = PositionTracker(D(1), "aave_v3")
    tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 2, T0, 0)

    def at(mark: str) -> list[str]:
        market = MarketState(T0, {"ETH": D(3100)}, {("binance", "ETH"): D(mark)}, MARKET.lst_rates,
                             MARKET.liquidity_index, MARKET.borrow_index)
        return [u.event_type for u in tracker.update(holdings(snapshot(ledger, mark), market, USDT_VIEW), 2, T0, 0)]

    assert at("3100.4") == []  # P&L moved 0.80: under the threshold of 1
    assert at("3100.3") == []  # 0.60 from the last update sent
    assert at("3100.6") == ["price_update"]  # 1.20: over it
    assert at("3100.9") == []  # 0.60 from 3100.6, where the last update went out
    assert at("3101.2") == ["price_update"]  # a slow drift gets through


def test_a_closed_position_and_a_balance_change_are_position_changes() -> None:
    ledger = books()
    tracker = PositionTracker(D("0.01"), "aave_v3")
    tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 2, T0, 0)
    gas = BalancesChanged(VenueId("chain"), "tx1", ChangeSet(Reason.GAS_FEE_PAID, T0 + 3, (
        TokenChange(WALLET, "ETH", D("-0.01")),), ref="i1"), T0 + 3, T0 + 3)
    tracker.add(TappedReport(3, gas, 5))
    ledger.apply(gas.change)
    (update,) = tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 3, T0, 0)
    assert (update.event_type, update.symbol) == ("position_change", "wallet:ETH")
    assert update.to_json(None)["change"] == {"venue": "chain", "report_id": "tx1", "reason": "GAS_FEE_PAID",
                                              "ref": "i1", "timestamp": iso(T0 + 3)}
    ledger.apply(ChangeSet(Reason.ATOMIC_DELEVERAGE_EXECUTION, T0, (TokenChange(WALLET, "aWeETH", D(-10)),
                                                                    TokenChange(WALLET, "variableDebtWETH", D(-8)))))
    updates = tracker.update(holdings(snapshot(ledger), MARKET, USDT_VIEW), 3, T0, 0)  # no report seen: dropped
    assert {(u.symbol, u.event_type, u.holding) for u in updates} == {
        ("aave_v3:aWeETH", "position_change", None), ("aave_v3:variableDebtWETH", "position_change", None)}


# --- http -------------------------------------------------------------------------------------------------


def test_routes_unknown_paths_404_and_other_methods_405() -> None:
    assert route("GET", "/api/v1/positions/summary?x=1") == "summary"
    assert route("GET", "/api/v1/positions/stream") == "stream"
    missing = route("GET", "/api/v1/positions")
    assert isinstance(missing, Refusal) and missing.status == 404
    wrong = route("POST", "/api/v1/positions/health")
    assert isinstance(wrong, Refusal) and wrong.status == 405 and wrong.headers == (("Allow", "GET"),)
    assert json.loads(wrong.body())["status"] == 405


def test_bearer_auth_401s_carry_www_authenticate_and_a_reason() -> None:
    auth = BearerAuth("s3cret-token-0123456789")
    assert auth.required and auth.check("Bearer s3cret-token-0123456789") is None
    assert auth.check("bearer  s3cret-token-0123456789 ") is None
    for header, error in ((None, "required"), ("Basic abc", "expected"), ("Bearer", "expected"),
                          ("Bearer s3cret-token-0123456788", "invalid token")):
        refusal = auth.check(header)
        assert refusal is not None and refusal.status == 401 and error in refusal.error
        assert dict(refusal.headers)["WWW-Authenticate"].startswith('Bearer realm="basisd"')
        assert "s3cret" not in refusal.error
    assert BearerAuth(None).check(None) is None


def test_without_a_token_only_requests_addressed_to_loopback_are_answered() -> None:
    for host in (None, "127.0.0.1:8765", "localhost", "LOCALHOST:1", "[::1]:8765", "127.9.9.9"):
        assert loopback_host(host), host
    for host in ("evil.example", "evil.example:8765", "10.0.0.1:8765", "[2001:db8::1]:80"):
        assert not loopback_host(host), host


def test_client_messages_are_actions_or_400_error_frames() -> None:
    assert parse_action('{"action": "get_summary"}') == "get_summary"
    assert parse_action('{"action": "ping", "extra": 1}') == "ping"
    for message in ("nope", b'{"action": "ping"}', '["ping"]', '{"action": 3}', '{"action": "halt"}', "[" * 5000):
        refusal = parse_action(message)
        assert isinstance(refusal, Refusal) and refusal.status == 400, message
        assert json.loads(refusal.frame())["type"] == "error"


# --- taps -------------------------------------------------------------------------------------------------


def test_the_tap_numbers_what_the_books_enqueue_and_stamps_snapshots_with_what_they_took() -> None:
    taps = ApiTaps(2, 4, ConflatingChannel[object]("api.market", 4, lambda m: "market"))
    books_inbox = taps.tap(LosslessChannel("positions.reports", 2))
    assert books_inbox.name == "positions.reports" and set(taps.channels()) == {
        "api.reports", "api.snapshots", "api.market", "positions.reports"}
    first, second = fill(Side.SELL, "1", "3000", 1), fill(Side.BUY, "1", "3000", 2)
    books_inbox.send_nowait(first)
    books_inbox.send_nowait(second)
    with pytest.raises(WouldBlock):
        books_inbox.send_nowait(fill(Side.BUY, "1", "3000", 3))  # full: not enqueued, so not copied either
    assert books_inbox.receive_nowait() is first
    taps.snapshots.publish(snapshot(books()))
    stamped = taps.snapshots.receive_nowait()
    assert isinstance(stamped, Stamped) and stamped.books_taken == 1
    copies = [taps.reports.receive_nowait(), taps.reports.receive_nowait()]
    assert [(c.seq, c.report) for c in copies] == [(1, first), (2, second)]
    with pytest.raises(TypeError):
        taps.snapshots.publish("not a snapshot")


# --- settings ---------------------------------------------------------------------------------------------


def test_api_settings_defaults_and_loopback() -> None:
    api = ApiSettings()
    assert (api.enabled, api.host, api.port, api.token) == (True, "127.0.0.1", 8765, None)
    assert is_loopback("::1") and is_loopback("127.0.0.2") and not is_loopback("0.0.0.0")
    assert not is_loopback("api.example")


def write_root(catalog: Path, api: dict[str, object]) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["api"] = api
    path = catalog / "api.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_exposed_api_without_a_token_is_refused_at_load_naming_the_key(catalog: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_root(catalog, {"host": "0.0.0.0"}))
    (problem,) = err.value.problems
    assert problem.key == "api.token" and "not a loopback address" in problem.message
    assert err.value.exit_code == 78
    with pytest.raises(ConfigError) as err:
        load_config(write_root(catalog, {"require_token": True}))
    assert err.value.problems[0].key == "api.token"
    secret = "x" * 20
    with pytest.raises(ConfigError) as err:
        load_config(write_root(catalog, {"token": [secret]}))
    assert secret not in str(err.value)
    assert load_config(write_root(catalog, {"host": "0.0.0.0", "token": secret})).settings.api.token is not None


def test_api_settings_come_from_the_environment_too(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASISD_API__PORT", "0")
    monkeypatch.setenv("BASISD_API__HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as err:
        load_settings(catalog / "replay.yaml")
    assert err.value.problems[0].key == "api.token"
    monkeypatch.setenv("BASISD_API__TOKEN", "t" * 32)
    settings = load_settings(catalog / "replay.yaml")
    assert settings.api.port == 0 and settings.api.token is not None
    assert settings.api.token.get_secret_value() == "t" * 32 and "t" * 32 not in repr(settings.api)
