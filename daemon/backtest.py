"""`basisd backtest`: the live daemon's actors on a flat-out replay, and the report they leave.

The run is the same code as the daemon — supervisor, bus, actors, simulated venues — on a virtual clock that
advances only when every actor is idle. The recorder writes `hourly.csv` and `events.jsonl` as hours close;
this module then writes `summary.json` (sorted keys, exact decimals as strings, no wall-clock values: the same
inputs give the same bytes).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from daemon.app import Daemon
from daemon.backtest_charts import write_charts
from daemon.config import ResolvedConfig
from daemon.domain.exposure import perp_asset
from daemon.domain.performance import performance
from daemon.domain.pnl import COMPONENTS
from daemon.domain.view import strategy_view
from daemon.systemd import Notifier

HOUR_S = 3600


def overrides(*, data: str | None, start: datetime | None, end: datetime | None, mode: str | None,
              capital: float | None, out: str) -> dict[str, Any]:
    replay: dict[str, Any] = {"speed": None}
    if data is not None:
        replay.update(source="history", data_dir=str(Path(data).resolve()))
    if start is not None:
        replay["start"] = start.isoformat()
    if start is not None and end is not None:
        replay["hours"] = int((end - start).total_seconds() // HOUR_S)
    strategy: dict[str, Any] = {}
    if mode is not None:
        strategy["mode"] = mode
    if capital is not None:
        strategy["initial_capital"] = capital
    return {"runtime": {"mode": "backtest", "status_interval_s": 10}, "metrics": {"enabled": False},
            "replay": replay, "strategy": strategy, "backtest": {"out_dir": out}}


def run_backtest(config: ResolvedConfig) -> tuple[Daemon, dict[str, Any]]:
    holder: list[Daemon] = []

    async def main() -> None:
        daemon = Daemon(config, Notifier(""))
        holder.append(daemon)
        async with anyio.create_task_group() as tg:
            if sys.stderr.isatty():
                tg.start_soon(_progress, daemon)
            await daemon.run()
            tg.cancel_scope.cancel()
        if sys.stderr.isatty():
            sys.stderr.write("\n")

    anyio.run(main)
    daemon = holder[0]
    summary = build_summary(daemon)
    out = Path(config.settings.backtest.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_charts(out, summary["currency"], float(config.settings.strategy.initial_capital),
                 float(daemon.spec.target_ltv) if daemon.spec.borrowing else 0.0)
    return daemon, summary


async def _progress(daemon: Daemon) -> None:
    """A progress bar on a terminal: market time covered of the window."""
    replay = daemon.config.settings.replay
    start = int(replay.start.timestamp()) * 1_000_000_000
    span = replay.hours * HOUR_S * 1_000_000_000
    while True:
        done = min(1.0, max(0.0, (daemon.clock.now_ns() - start) / span))
        bar = "█" * int(done * 30)
        when = datetime.fromtimestamp(daemon.clock.now_ns() / 1e9, UTC).strftime("%Y-%m-%d")
        sys.stderr.write(f"\r  {bar:<30} {done:6.1%}  {when}")
        sys.stderr.flush()
        await anyio.sleep(0.25)


def _s(value: Decimal, places: int = 6) -> str:
    return f"{value:.{places}f}"


def build_summary(daemon: Daemon) -> dict[str, Any]:
    config, recorder, positions = daemon.config, daemon.recorder, daemon.positions
    assert recorder is not None, "a backtest runs with the recorder"
    s = config.settings
    capital = Decimal(str(s.strategy.initial_capital))
    final_nav = recorder.navs[-1] if recorder.navs else capital
    perf = performance(float(capital), [float(n) for n in recorder.navs])
    initial: dict[str, Any] = {}
    if recorder.first is not None:
        ledger, market = recorder.first
        view = strategy_view(ledger, market, daemon.spec, tuple(daemon.exchanges))
        ltv = view.aave_debt / view.aave_collateral if view.aave_collateral else Decimal(0)
        initial = {
            "aave_collateral_eth": _s(view.aave_collateral), "aave_debt_eth": _s(view.aave_debt),
            "ltv": _s(ltv), "health_factor": _s(daemon.spec.liquidation_threshold / ltv) if ltv else "inf",
            "leverage": _s(view.aave_collateral / (view.aave_collateral - view.aave_debt))
            if view.aave_collateral > view.aave_debt else "1",
            "perps": {p.venue: {"size": str(p.quantity), "entry": _s(p.entry_price, 2),
                                "mark": _s(market.mark(p.venue, perp_asset(p.instrument)), 2)}
                      for p in ledger.perps if p.quantity},
        }
    return {
        "mode": config.mode.name, "share_class": config.share_class.name,
        "currency": config.share_class.currency, "source": s.replay.source,
        "window": {"start": s.replay.start.isoformat(), "hours": len(recorder.navs)},
        "capital": str(capital), "initial_nav": str(capital), "final_nav": _s(final_nav),
        "total_pnl": _s(final_nav - capital),
        "pnl_by_component": {c: _s(positions.pnl_totals[c]) for c in COMPONENTS},
        "pnl_residual_max_abs": f"{float(positions.max_abs_residual):.3e}",
        "apr": round(perf.apr, 6), "volatility": round(perf.volatility, 6), "sharpe": round(perf.sharpe, 4),
        "max_drawdown": round(perf.max_drawdown, 6),
        "min_health_factor": _s(recorder.min_hf) if recorder.min_hf.is_finite() else "inf",
        "min_margin_ratio": {v: _s(r) for v, r in sorted(recorder.min_margin.items())},
        # The same at each hour's worst price (candle highs for shorts), where the history records them.
        "min_margin_ratio_intrabar": {name: _s(e.min_margin_ratio_intrabar)
                                      for name, e in sorted(daemon.exchanges.items())
                                      if e.min_margin_ratio_intrabar is not None},
        "instructions": daemon.strategy.instructions, "failed_instructions": daemon.strategy.failed_instructions,
        "total_costs": _s(positions.pnl_totals["transaction_costs"]),
        "liquidations": {"aave_v3": daemon.chain.liquidations,
                         **{name: e.liquidations for name, e in sorted(daemon.exchanges.items())}},
        "initial_positions": initial,
        "stopped": daemon.stop_reason or "failure", "trading_state_at_end": daemon.trading.state.value,
    }
