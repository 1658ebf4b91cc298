"""The shipped stress scenario (configs/stress.yaml) on the real daemon: the simulated venues liquidate as the
real ones would, the books follow the venues exactly, trading halts, and the P&L still adds up."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from daemon.backtest import overrides, run_backtest
from daemon.config import load_config
from daemon.domain.ledger import WALLET
from daemon.domain.messages import TradingState
from tests.conftest import CONFIGS


def test_a_price_gap_and_a_depeg_liquidate_on_the_venues_and_the_books_follow(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "stress.yaml", overrides(data=None, start=None, end=None, mode=None, capital=None,
                                                           out=str(tmp_path)))
    daemon, summary = run_backtest(config)
    # ETH +90 % at hour 48 is past every venue's liquidation line (100 % margin ≈ +82 %): each exchange closes
    # the short at its own mark. The weETH de-peg of 6 % at hour 120 takes HF below 1: AAVE liquidates.
    assert all(daemon.simulated.exchanges[v].liquidations >= 1 for v in ("binance", "bybit", "okx"))
    assert daemon.simulated.chain.liquidations >= 1
    assert summary["liquidations"]["aave_v3"] == daemon.simulated.chain.liquidations
    assert Decimal(summary["pnl_by_component"]["liquidation_losses"]) < 0
    # The first liquidation halted trading, and nothing reopened a position afterwards.
    assert summary["trading_state_at_end"] == TradingState.HALTED.value
    assert "liquidated on" in daemon.trading.reason
    assert all(daemon.simulated.exchanges[v].book.perp(v, "ETHUSDT").quantity == 0 for v in daemon.simulated.exchanges)
    # What each venue holds is what our books say it holds, to the last digit.
    ours = daemon.positions.ledger
    for name, exchange in daemon.simulated.exchanges.items():
        for token in ("USDT", "ETH"):
            assert ours.balance(name, token) == exchange.book.balance(name, token), (name, token)
        assert ours.perp(name, "ETHUSDT").quantity == exchange.book.perp(name, "ETHUSDT").quantity
    for token in ("ETH", "USDT", "weETH", "aWeETH", "variableDebtWETH"):
        assert ours.balance(WALLET, token) == daemon.simulated.chain.book.balance(WALLET, token), token
    assert daemon.simulated.chain.health_factor() >= 1  # the liquidators stopped once health was restored
    # The attribution explains the whole loss, liquidations included.
    assert Decimal(summary["pnl_residual_max_abs"]) < Decimal("1e-12")
    total = sum(Decimal(v) for v in summary["pnl_by_component"].values())
    assert abs(total - Decimal(summary["total_pnl"])) < Decimal("0.0001")


def test_the_report_shows_the_breach_each_venue_acted_on_and_when(tmp_path: Path) -> None:
    """Issue 11 §2: read after the venues act, the summary's minima hid the breaches (HF 1.005 and margin 0.935
    where the venues liquidated). The worst readings before any action are below each venue's line, at the hour
    each liquidation happened, and the summary lists the liquidations per venue with their times."""
    config = load_config(CONFIGS / "stress.yaml", overrides(data=None, start=None, end=None, mode=None, capital=None,
                                                           out=str(tmp_path)))
    daemon, summary = run_backtest(config)
    worst, events = summary["worst_before_action"], summary["liquidation_events"]
    venues = daemon.simulated
    assert len(events) == venues.chain.liquidations + sum(e.liquidations for e in venues.exchanges.values())
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    by_venue = {e["venue"]: e for e in events}
    # ETH gapped up at hour 48 (2024-06-03 00:00): every short was liquidated there, below the 10 % line, while
    # the hourly minimum (read after the venues acted) never went near it.
    assert {"binance", "bybit", "okx"} <= set(by_venue)
    for venue in ("binance", "bybit", "okx"):
        reading = worst["margin_ratio"][venue]
        assert Decimal(reading["value"]) < Decimal("0.10") < Decimal(summary["min_margin_ratio"][venue])
        assert reading["at"] == by_venue[venue]["at"] == "2024-06-03 00:00"
        assert by_venue[venue]["trigger"] == "margin_ratio" and by_venue[venue]["value_before"] == reading["value"]
        assert Decimal(by_venue[venue]["loss"]) > 0 and by_venue[venue]["unit"] == "USDT"
    if "aave_v3" in by_venue:  # the de-peg at hour 120, if the position was still open then
        hf = worst["health_factor"]
        assert Decimal(hf["value"]) < 1 < Decimal(summary["min_health_factor"])
        assert hf["at"] == by_venue["aave_v3"]["at"] and by_venue["aave_v3"]["trigger"] == "health_factor"


def test_the_last_bar_of_the_window_is_recorded(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "stress.yaml", overrides(data=None, start=None, end=None, mode=None, capital=None,
                                                           out=str(tmp_path)))
    _, summary = run_backtest(config)
    rows = (tmp_path / "hourly.csv").read_text().splitlines()
    assert summary["window"]["hours"] == config.settings.replay.hours == len(rows) - 1
    assert rows[-1].startswith("2024-06-10 23:00,")  # 2024-06-01 00:00 + 239 h: the window's last bar
    assert Decimal(rows[-1].split(",")[1]) == Decimal(summary["final_nav"])
