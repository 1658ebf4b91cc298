"""The request gate's state machine (`daemon.venues.request_gate.RequestGate`) and the ccxt corrections it relies
on (`daemon.venues.ccxt_quirks`), on their own: the venue's waits, jitter, bans, degraded and lost access."""

from __future__ import annotations

import random

import ccxt
import pytest

from daemon.errors import UnknownOrderOutcome, VenueAccessLost, VenueDegraded, VenueRateLimited, VenueRejected
from daemon.venues.ccxt_errors import Call, map_error
from daemon.venues.ccxt_quirks import corrected
from daemon.venues.request_gate import GateClosed, GatePolicy, RequestGate


class Clock:
    def __init__(self, ms: int = 1_800_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def gate(clock: Clock, seed: int = 1, jitter_s: float = 1.0) -> RequestGate:
    return RequestGate("binance", "binanceusdm", now_ms=clock, rng=random.Random(seed),
                       policy=GatePolicy(jitter_s=jitter_s))


def test_a_retry_after_closes_the_gate_for_at_least_that_long_and_at_most_the_jitter_more() -> None:
    for seed in range(50):
        clock = Clock()
        g = gate(clock, seed, jitter_s=1.0)
        g.record(VenueRateLimited("429", retry_after_s=7))
        assert clock.ms + 7_000 <= g.closed_until_ms <= clock.ms + 8_000
        clock.ms = g.closed_until_ms - 1
        with pytest.raises(GateClosed) as caught:
            g.check("fetch_balance")
        assert caught.value.retry_after_s == pytest.approx(0.001) and caught.value.banned_until_ms is None
        clock.ms = g.closed_until_ms
        g.check("fetch_balance")  # open again


def test_the_jitter_spreads_clients_throttled_at_once() -> None:
    clock = Clock()
    reopen = set()
    for seed in range(20):
        g = gate(clock, seed)
        g.record(VenueRateLimited("429", retry_after_s=3))
        reopen.add(g.closed_until_ms)
    assert len(reopen) > 10


def test_a_ban_keeps_the_gate_closed_until_its_end_and_is_counted_once() -> None:
    clock = Clock()
    g = gate(clock, jitter_s=0.5)
    until = clock.ms + 120_000
    for _ in range(3):  # the same ban answered three times (three requests already in flight)
        g.record(VenueRateLimited("418", retry_after_s=120, banned_until_ms=until))
    assert g.bans_seen == 1 and g.rate_limits_seen == 3 and g.state == "banned"
    assert until <= g.closed_until_ms <= until + 500
    with pytest.raises(GateClosed, match="banned by the venue until") as caught:
        g.admit_order("order x", risk_reducing=True)  # no request at all: not even one reducing risk
    assert caught.value.banned_until_ms == until and g.requests_refused == 1
    clock.ms = g.closed_until_ms
    g.succeeded(Call.READ)
    assert g.state == "open" and g.banned_until_ms is None


def test_a_degraded_venue_takes_no_new_exposure_and_recovers_on_a_read() -> None:
    clock = Clock()
    g = gate(clock)
    g.record(UnknownOrderOutcome("502 on create", "c1", venue_degraded=True))
    assert g.degraded and g.degraded_episodes == 1
    with pytest.raises(VenueDegraded, match="no new orders there"):
        g.admit_order("order c2", risk_reducing=False)
    g.admit_order("order c3", risk_reducing=True)  # reduce-only and cancels are still tried
    g.record(VenueDegraded("503"))
    assert g.degraded_episodes == 1  # the same episode
    g.succeeded(Call.WRITE)
    assert g.degraded  # a write that got through says little: only a read ends it
    g.succeeded(Call.READ)
    assert not g.degraded and g.state == "open"
    g.admit_order("order c2", risk_reducing=False)


def test_lost_access_refuses_everything_after() -> None:
    g = gate(Clock())
    g.record(VenueAccessLost("binance no longer accepts the API key"))
    for _ in range(2):
        with pytest.raises(VenueAccessLost, match="not sent: fetch_balance"):
            g.check("fetch_balance")
    assert g.state == "access_lost" and g.requests_refused == 2


def test_a_rejection_does_not_close_or_degrade_the_gate() -> None:
    g = gate(Clock())
    g.record(VenueRejected("-2019", "-2019 Margin is insufficient."))
    assert g.state == "open" and g.counters()["rate_limits_seen"] == 0


def test_binance_key_refused_after_a_success_is_access_lost_not_a_rate_limit() -> None:
    # What ccxt raises for -2015 once `hasAlreadyAuthenticatedSuccessfully` is set.
    raw = ccxt.DDoSProtection('binanceusdm {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}')
    error = map_error(corrected(raw), venue="binanceusdm", call=Call.READ, key_setting="venues.binance.api_key")
    assert isinstance(error, VenueAccessLost) and "venues.binance.api_key" in str(error)
    # A real 418 / 429 stays a rate limit.
    ban = ccxt.DDoSProtection('binanceusdm 418 I\'m a teapot {"code":-1003,"msg":"banned until 1800000120000"}')
    assert isinstance(map_error(corrected(ban), venue="binanceusdm", call=Call.READ), VenueRateLimited)


def test_okx_order_timed_out_is_an_unknown_outcome() -> None:
    raw = ccxt.ExchangeError('okx {"code":"1","data":[{"clOrdId":"x1","ordId":"","sCode":"51149","sMsg":"Order timed '
                             'out, please try again later.","tag":""}],"msg":"All operations failed"}')
    error = map_error(corrected(raw), venue="okx", call=Call.WRITE, client_order_id="x1")
    assert isinstance(error, UnknownOrderOutcome) and error.client_order_id == "x1"
    refused = ccxt.InsufficientFunds('okx {"code":"1","data":[{"sCode":"51008","sMsg":"no margin"}],"msg":""}')
    assert corrected(refused) is refused


def test_production_clients_keep_ccxts_own_rate_limiter_and_every_client_is_gated() -> None:
    import ccxt.async_support as ccxt_async

    from daemon.bus import LosslessChannel
    from daemon.clock import WallClock
    from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials

    made: dict[str, dict[str, object]] = {}

    def factory(exchange_id: str, settings: dict[str, object]) -> object:
        made[exchange_id] = settings
        return getattr(ccxt_async, exchange_id)(settings)

    config = CcxtVenueConfig(venue="binance", exchanges={"Perp": "binanceusdm", "Spot": "binance"},
                             instruments=("binance:Perp:ETHUSDT", "binance:Spot:ETHUSDT"),
                             credentials=Credentials("key-1234", "secret-5678"))
    venue = CcxtExchange(config, WallClock(), LosslessChannel("r", 10), factory=factory)
    assert {i: s["enableRateLimit"] for i, s in made.items()} == {"binanceusdm": True, "binance": True}
    assert {i: g.host for i, g in venue.gates.items()} == {"binanceusdm": "fapi.binance.com",
                                                            "binance": "api.binance.com"}
    assert venue.funding is not None  # two wallets under one account
    assert venue.counters()["gates"]["binance"]["state"] == "open"
