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
    assert breaker.tripped is DrawdownAction.REDUCE
    breaker = breaker.observe(D(95_900))
    assert breaker.tripped is DrawdownAction.CLOSE_PART
    breaker = breaker.observe(D(99_000))  # a recovery does not un-trip it
    assert breaker.tripped is DrawdownAction.CLOSE_PART
    restored = DrawdownBreaker.from_dict(breaker.to_dict())
    assert restored == breaker
    assert restored.observe(D(94_000)).tripped is DrawdownAction.FLATTEN_AND_HALT
    assert restored.reset(D(99_000)).tripped is DrawdownAction.NONE


HOUR = 3_600 * 1_000_000_000
DAY = 24 * HOUR


def test_each_level_acts_once_in_order_reduce_then_close_part_then_flatten() -> None:
    breaker, actions = DrawdownBreaker(), []
    for hour, nav in enumerate((100_000, 96_900, 96_500, 95_900, 95_000, 94_900, 94_000)):
        breaker, action = breaker.step(D(nav), hour * HOUR + 5 * DAY)
        if action is not None:
            actions.append(action)
    assert [(a.level, a.unwind_fraction) for a in actions] == [
        (DrawdownAction.REDUCE, D("0.5")), (DrawdownAction.CLOSE_PART, D("0.5")),
        (DrawdownAction.FLATTEN_AND_HALT, D(1))]
    assert "level 1 (reduce)" in actions[0].reason and "no new exposure" in actions[0].reason
    assert actions[2].reason.endswith("then halted") and actions[2].drawdown == D("0.05")


def test_a_jump_past_levels_unwinds_what_each_would_have_one_by_one() -> None:
    start = DrawdownBreaker().observe(D(100_000), 0)
    _, action = start.step(D(95_800), HOUR)  # straight to level 2
    assert action is not None and action.level is DrawdownAction.CLOSE_PART
    assert action.unwind_fraction == D("0.75")  # half, then half of the rest
    seed_literal = DrawdownBreaker(close_unwind_fraction=D(1)).observe(D(100_000), 0)
    assert seed_literal.step(D(95_800), HOUR)[1].unwind_fraction == 1  # type: ignore[union-attr]


def test_the_daily_loss_limit_trips_level_1_below_the_drawdown_level_and_restarts_each_utc_day() -> None:
    breaker = DrawdownBreaker().observe(D(100_000), 0)  # day 0 opens at 100 000
    breaker, action = breaker.step(D(97_600), 20 * HOUR)  # −2.4 % in the day: under the 3 % drawdown level
    assert action is not None and action.level is DrawdownAction.REDUCE
    assert "since the day's first NAV" in action.reason and action.daily_loss == D("0.024")
    # A slow bleed of 1.5 % a day never trips it: each UTC day measures from its own first NAV.
    slow = DrawdownBreaker(reduce_fraction=D("0.5"), close_fraction=D("0.6"), halt_fraction=D("0.7"))
    nav = D(100_000)
    for day in range(10):
        slow, first = slow.step(nav, day * DAY)
        nav *= D("0.985")
        slow, last = slow.step(nav, day * DAY + 23 * HOUR)
        assert first is None and last is None, day
    assert slow.drawdown(nav) > D("0.14") and abs(slow.daily_loss(nav) - D("0.015")) < D("1e-20")


def test_the_breaker_s_own_unwind_costs_never_trip_the_next_level() -> None:
    breaker = DrawdownBreaker().observe(D(100_000), 0)
    breaker, action = breaker.step(D(96_900), HOUR)
    assert action is not None and action.level is DrawdownAction.REDUCE
    breaker = breaker.exclude(D(1_200))  # the unwind cost 1.2 % of NAV: swap fees on the gross collateral
    breaker, action = breaker.step(D(95_700), 2 * HOUR)
    assert action is None and breaker.drawdown(D(95_700)) == D("0.031")
    assert DrawdownBreaker.from_dict(breaker.to_dict()) == breaker
    assert breaker.reset(D(95_700)).excluded_costs == 0


def test_an_older_daemon_s_persisted_breaker_is_restored_with_its_level() -> None:
    old = {"peak_nav": "100000", "tripped": "CLOSE_ALL", "reduce_fraction": "0.03", "close_fraction": "0.04",
           "halt_fraction": "0.05"}
    restored = DrawdownBreaker.from_dict(old)
    assert restored.tripped is DrawdownAction.CLOSE_PART and restored.peak_nav == 100_000
    assert restored.daily_loss_fraction == DrawdownBreaker().daily_loss_fraction


@given(st.lists(st.decimals(min_value=D(50_000), max_value=D(150_000), places=2), min_size=1, max_size=60))
def test_levels_only_rise_and_act_at_most_once_each(navs: list[Decimal]) -> None:
    breaker, levels = DrawdownBreaker(), []
    for hour, nav in enumerate(navs):
        before = breaker.tripped
        breaker, action = breaker.step(nav, hour * HOUR)
        assert breaker.tripped >= before
        if action is not None:
            assert action.level is breaker.tripped and action.level > before
            assert D(0) < action.unwind_fraction <= 1
            levels.append(action.level)
    assert levels == sorted(set(levels))
    # A day's loss never exceeds the drawdown from the peak (what makes a daily limit above level 1 pointless).
    assert breaker.daily_loss(navs[-1]) <= breaker.drawdown(navs[-1])


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
    assert trading_state(Level.OK, DrawdownAction.REDUCE, False) is TradingState.REDUCING
    assert trading_state(Level.OK, DrawdownAction.CLOSE_PART, False) is TradingState.REDUCING
    assert trading_state(Level.OK, DrawdownAction.FLATTEN_AND_HALT, False) is TradingState.HALTED
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
