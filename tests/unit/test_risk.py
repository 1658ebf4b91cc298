from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.domain.messages import TradingState
from daemon.domain.risk import (
    AaveReading,
    DrawdownAction,
    DrawdownBreaker,
    Level,
    RiskLimits,
    TrailingStop,
    aave_reading,
    delta_level,
    margin_reading,
    mark_divergence,
    order_allowed,
    permits,
    solvency_priorities,
    stale_series,
    trading_state,
)

D = Decimal
LIMITS = RiskLimits()


def test_short_at_full_margin_liquidates_after_an_81_8_percent_rise() -> None:
    reading = margin_reading("binance", D(30_000), D(-10), D(3000), D(3000), LIMITS)
    assert reading.ratio == 1 and reading.level is Level.OK
    assert round(reading.distance_to_liquidation, 3) == D("0.818")


def test_margin_levels_follow_the_ratio_warning_urgent_maintenance() -> None:
    # 10 ETH short from 3000 with 30,000 USDT: MR = (30,000 − 10·(P − 3000)) / (10·P)
    levels = {p: margin_reading("okx", D(30_000), D(-10), D(3000), D(p), LIMITS).level
              for p in (4900, 5000, 5200, 5220, 5455)}
    assert levels == {4900: Level.OK, 5000: Level.WARNING, 5200: Level.WARNING, 5220: Level.URGENT,
                      5455: Level.CRITICAL}


def test_a_venue_without_a_position_has_no_margin_risk() -> None:
    assert margin_reading("bybit", D(100), D(0), D(0), D(3000), LIMITS).level is Level.OK


def test_aave_thresholds_are_relative_to_the_target_ltv_not_the_seeds_hf_1_10() -> None:
    # DOMAIN §8 #3: at λ = 0.9094 the seed's "HF < 1.10" rule would fire permanently (HF 1.0446 at target).
    at_target = aave_reading(D(100), D("90.94"), D("0.95"), D("0.9094"), LIMITS)
    assert at_target.health_factor < D("1.10")
    assert at_target.level is Level.OK
    assert round(at_target.distance_to_liquidation, 4) == D("0.0427")
    assert aave_reading(D(100), D("92.0"), D("0.95"), D("0.9094"), LIMITS).level is Level.WARNING
    assert aave_reading(D(100), D("93.0"), D("0.95"), D("0.9094"), LIMITS).level is Level.URGENT
    assert aave_reading(D(100), D("96.0"), D("0.95"), D("0.9094"), LIMITS).level is Level.CRITICAL


def test_delta_drift_has_two_levels_as_a_fraction_of_hedge_notional() -> None:
    assert delta_level(D(1_000), D(100_000), LIMITS) == (D("0.01"), Level.OK)
    assert delta_level(D(-3_000), D(100_000), LIMITS)[1] is Level.WARNING
    assert delta_level(D(6_000), D(100_000), LIMITS)[1] is Level.URGENT
    assert delta_level(D(6_000), D(0), LIMITS)[1] is Level.OK


def test_mark_divergence_flags_and_alerts() -> None:
    assert mark_divergence({"binance": D(3000), "bybit": D(3010)}, LIMITS)[1] is Level.OK
    assert mark_divergence({"binance": D(3000), "bybit": D(3020)}, LIMITS)[1] is Level.WARNING
    assert mark_divergence({"binance": D(3000), "okx": D(3040)}, LIMITS)[1] is Level.URGENT


def test_stale_series_are_named_with_a_longer_limit_for_8_hourly_funding() -> None:
    ages = {"binance:Perp:ETHUSDT": D(7_300), "funding:okx:Perp:ETHUSDT": D(8 * 3600), "oracle:weETH/ETH": D(60)}
    assert stale_series(ages, LIMITS) == ("binance:Perp:ETHUSDT",)  # 8 h old funding is on schedule
    assert stale_series({"funding:okx:Perp:ETHUSDT": D(10 * 3600)}, LIMITS) == ("funding:okx:Perp:ETHUSDT",)


def test_drawdown_breaker_levels_latch_and_survive_a_restart() -> None:
    breaker = DrawdownBreaker().observe(D(100_000))
    breaker = breaker.observe(D(96_900))
    assert breaker.tripped is DrawdownAction.CLOSE_WORST_HALF
    breaker = breaker.observe(D(95_900))
    assert breaker.tripped is DrawdownAction.CLOSE_ALL
    breaker = breaker.observe(D(99_000))  # a recovery does not un-trip it
    assert breaker.tripped is DrawdownAction.CLOSE_ALL
    restored = DrawdownBreaker.from_dict(breaker.to_dict())
    assert restored == breaker
    assert restored.observe(D(94_000)).tripped is DrawdownAction.CLOSE_ALL_AND_HALT
    assert restored.reset(D(99_000)).tripped is DrawdownAction.NONE


def test_trailing_stop_follows_the_best_price_then_trips() -> None:
    stop = TrailingStop(long=True, trail_fraction=D("0.05"), best_price=D(3000))
    for price in (3100, 3300, 3200):
        stop = stop.observe(D(price))
    assert not stop.triggered and stop.best_price == 3300
    assert stop.observe(D(3135)).triggered  # 5 % under 3300
    short = TrailingStop(long=False, trail_fraction=D("0.05"), best_price=D(3000)).observe(D(2800))
    assert short.observe(D(2940)).triggered


def test_trading_state_from_solvency_breaker_and_operator() -> None:
    assert trading_state(Level.WARNING, DrawdownAction.NONE, False) is TradingState.ACTIVE
    assert trading_state(Level.URGENT, DrawdownAction.NONE, False) is TradingState.REDUCING
    assert trading_state(Level.OK, DrawdownAction.CLOSE_WORST_HALF, False) is TradingState.REDUCING
    assert trading_state(Level.OK, DrawdownAction.CLOSE_ALL_AND_HALT, False) is TradingState.HALTED
    assert trading_state(Level.OK, DrawdownAction.NONE, True) is TradingState.HALTED


@pytest.mark.parametrize(("state", "reduces", "allowed"), [
    (TradingState.ACTIVE, False, True), (TradingState.ACTIVE, True, True),
    (TradingState.REDUCING, False, False), (TradingState.REDUCING, True, True),
    (TradingState.HALTED, False, False), (TradingState.HALTED, True, False),
])
def test_one_rule_decides_what_may_go_out_in_each_state(state: TradingState, reduces: bool, allowed: bool) -> None:
    assert permits(state, reduces) is allowed


qty = st.decimals(min_value=D(-50), max_value=D(50), places=3)


@given(qty, qty)
def test_in_reducing_an_allowed_order_never_increases_exposure(position: Decimal, order: Decimal) -> None:
    if order_allowed(TradingState.REDUCING, position, order):
        after = position + order
        assert abs(after) < abs(position)
        assert after == 0 or (after > 0) == (position > 0)
    assert not order_allowed(TradingState.HALTED, position, order)


def test_the_nearer_solvency_risk_comes_first_whichever_kind_it_is() -> None:
    far_cex = margin_reading("binance", D(30_000), D(-10), D(3000), D(3000), LIMITS)  # 81.8 % away
    near_cex = margin_reading("okx", D(3_600), D(-10), D(3000), D(3000), LIMITS)  # ~1.8 % away
    aave = aave_reading(D(100), D("90.94"), D("0.95"), D("0.9094"), LIMITS)  # 4.3 % away
    order = [p.source for p in solvency_priorities([far_cex, near_cex], aave)]
    assert order == ["cex:okx", "aave", "cex:binance"]
    healthy_cex = margin_reading("okx", D(60_000), D(-10), D(3000), D(3000), LIMITS)
    assert solvency_priorities([healthy_cex], aave)[0].source == "aave"
    assert isinstance(aave, AaveReading)
