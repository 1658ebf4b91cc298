"""The shipped stress scenario (configs/stress.yaml) on the real daemon: each drawdown breaker level acts, once, in
order — level 1 unwinds half of every leg, level 2 half of what is left, level 3 the rest and halts — and the
P&L still adds up. The journal keeps each action."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.backtest import overrides, run_backtest
from daemon.config import load_config
from daemon.domain.ledger import WALLET
from daemon.domain.messages import TradingState
from daemon.domain.risk import BreakerAction, DrawdownAction
from daemon.journal import Journal
from daemon.metrics import BasisdCollector
from tests.conftest import CONFIGS

D = Decimal


def test_the_stress_scenario_shows_each_breaker_level_acting_in_order(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "stress.yaml", overrides(data=None, start=None, end=None, mode=None, capital=None,
                                                           out=str(tmp_path)))
    daemon, summary = run_backtest(config)
    actions = summary["breaker_actions"]
    assert json.loads((tmp_path / "summary.json").read_text())["breaker_actions"] == actions
    assert [(a["level"], a["action"]) for a in actions] == [(1, "reduce"), (2, "close_part"), (3, "flatten_and_halt")]
    times = [a["time"] for a in actions]
    assert times == sorted(times) and len(set(times)) == 3  # three moments, one level each
    drawdowns = [D(a["drawdown"]) for a in actions]
    assert D("0.03") <= drawdowns[0] < D("0.04") <= drawdowns[1] < D("0.05") <= drawdowns[2]
    assert [D(a["unwind_fraction"]) for a in actions] == [D("0.5"), D("0.5"), D(1)]
    # Levels 1 and 2 send the strategy's WITHDRAWAL of their share, level 3 its UNWIND: every leg, pro rata.
    assert "WITHDRAWAL: ATOMIC_DELEVERAGE_AAVE" in actions[0]["sent"]
    assert "WITHDRAWAL: ATOMIC_DELEVERAGE_AAVE" in actions[1]["sent"]
    assert "UNWIND: ATOMIC_DELEVERAGE_AAVE" in actions[2]["sent"]
    assert actions[2]["reason"].endswith("then halted")
    # After level 3 nothing is held: no debt, no LST, no perp, on the venues' own books as on ours.
    chain = daemon.simulated.chain.book
    assert chain.balance(WALLET, "variableDebtWETH") == 0 and chain.balance(WALLET, "aWeETH") == 0
    assert all(e.book.perp(v, "ETHUSDT").quantity == 0 for v, e in daemon.simulated.exchanges.items())
    assert summary["trading_state_at_end"] == TradingState.HALTED.value
    assert daemon.strategy.failed_instructions == summary["failed_instructions"]
    # The attribution still explains the whole loss.
    assert D(summary["pnl_residual_max_abs"]) < D("1e-12")
    total = sum(D(v) for v in summary["pnl_by_component"].values())
    assert abs(total - D(summary["total_pnl"])) < D("0.0001")
    # And the metrics say so: each level that acted (the latched level's gauge is the status actor's reading).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BasisdCollector(daemon._metric_sources()))
    samples = {(x.name, tuple(sorted(x.labels.items()))): x.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for x in f.samples}
    assert [samples[("basisd_drawdown_breaker_actions", (("level", str(n)),))] for n in (1, 2, 3)] == [1, 1, 1]
    assert samples[("basisd_execution_limit_stops", (("kind", "timed_out"),))] == 0


def test_a_breaker_action_is_journaled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite", "replay", "configs/replay.yaml", 0)
    action = BreakerAction(DrawdownAction.CLOSE_PART, D("0.5"), D("0.0412"), D("0.01"), 7, "drawdown breaker level 2")
    journal.record_risk_action(7, int(action.level), action.level.name, action.drawdown, action.daily_loss,
                               action.reason, "breaker2-7-1 (WITHDRAWAL: ...)")
    journal.close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        rows = db.execute("SELECT level, action, drawdown, daily_loss, reason, sent FROM risk_actions").fetchall()
    assert rows == [(2, "CLOSE_PART", "0.0412", "0.01", "drawdown breaker level 2", "breaker2-7-1 (WITHDRAWAL: ...)")]
