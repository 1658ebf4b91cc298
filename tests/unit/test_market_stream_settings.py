"""The market streams' settings and reconnect back-off (`daemon.venues.ccxt_market_stream`), without a network."""

from __future__ import annotations

import pytest

from daemon.venues.ccxt_market_stream import MarketStreamSettings
from daemon.venues.reconnect import backoff_delay


@pytest.mark.parametrize("bad", [
    {"stale_after_s": 0}, {"funding_stale_after_s": -1}, {"first_quote_wait_s": -0.1},
    {"reconnect_after_stale": 0.5}, {"ping_interval_s": 30, "dead_after_s": 30}, {"backoff_jitter": 1.0},
    {"backoff_initial_s": 2, "backoff_max_s": 1},
])
def test_settings_that_cannot_work_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="market streams"):
        MarketStreamSettings(**bad)


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    s = MarketStreamSettings(backoff_initial_s=0.5, backoff_max_s=4, backoff_jitter=0.5)
    assert [backoff_delay(n, s, rand=lambda: 0.0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff_delay(2, s, rand=lambda: 0.999) == pytest.approx(2 * (1 - 0.5 * 0.999))
    assert backoff_delay(10_000, s, rand=lambda: 0.0) == 4  # no overflow on a long outage
