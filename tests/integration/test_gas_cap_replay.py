"""The gas price cap on the real daemon and the synthetic market: the entry waits, cycle after cycle, while gas is
above `risk.max_gas_price_gwei`, and goes out — whole — at the first hour gas is back under it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from daemon.backtest import overrides, run_backtest
from daemon.config import load_config
from daemon.domain.synthetic import SyntheticMarketSpec, generate
from tests.conftest import CONFIGS

CAP_GWEI = Decimal(5)


def test_an_entry_waits_for_gas_under_the_cap_and_then_goes_out_whole(tmp_path: Path) -> None:
    base = overrides(data=None, start=None, end=None, mode=None, capital=None, out=str(tmp_path))
    base["replay"]["hours"] = 24
    base["risk"] = {"max_gas_price_gwei": float(CAP_GWEI)}
    config = load_config(CONFIGS / "replay.yaml", base)
    replay = config.settings.replay
    bars = list(generate(SyntheticMarketSpec(seed=replay.seed, start=replay.start, hours=replay.hours,
                                             venues=["binance", "bybit", "okx"])))
    cheap = next(n for n, bar in enumerate(bars) if bar.gas_gwei <= CAP_GWEI)
    assert cheap > 0  # the market opens above the cap (seed 7: about 6 gwei)
    daemon, summary = run_backtest(config)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    first_trade = next(e for e in events if e["reason"] != "INITIAL_CAPITAL")
    assert first_trade["ts"] == datetime.fromtimestamp(bars[cheap].ts_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
    # One deferral per hour above the cap, no step done, nothing halted; then the whole entry went out.
    assert summary["instructions_refused_by_limits"] == cheap == summary["failed_instructions"]
    assert summary["trading_state_at_end"] == "ACTIVE"
    assert all(e.book.perp(v, "ETHUSDT").quantity < 0 for v, e in daemon.simulated.exchanges.items())
    assert daemon.execution.timed_out == 0
