"""`basisd backtest`: the live daemon's actors on a flat-out replay, and the report they leave.

The run is the same code as the daemon — supervisor, bus, actors, simulated venues — on a virtual clock that
advances only when every actor is idle. The recorder writes `hourly.csv` and `events.jsonl` as hours close;
this module then writes `summary.json` (sorted keys, exact decimals as strings, no wall-clock values: the same
inputs give the same bytes).

The exit code tells the truth about the report: the output directory is checked before the run starts (exit 73
if it cannot be written), a failure of the feed or of the data fails the run with its own code (65, 66, 70), and
a run that stopped before it covered its window (the bars delivered against the window's hours) is a failure
too (70; 130 when stopped by a signal). A failed run leaves no `summary.json` behind, not even a previous run's.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from daemon.app import Daemon
from daemon.backtest_risk import liquidation_events, worst_before_action
from daemon.config import ResolvedConfig
from daemon.data.series import iso
from daemon.domain.exposure import perp_asset
from daemon.domain.neutrality import delta_bands_summary
from daemon.domain.pnl import COMPONENTS
from daemon.domain.risk import RiskLimits
from daemon.domain.statistics import daily_statistics
from daemon.domain.strategy import rebalance_band
from daemon.domain.view import strategy_view
from daemon.errors import ExitCode, IncompleteRunError, OutputError, find_basisd_error
from daemon.progress import BacktestProgress
from daemon.report import REPORT, report_context, write_report
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


def prepare_output(out: Path) -> None:
    """Make sure the report can be written before anything runs, and that no earlier run's summary survives in
    it to be taken for this run's (nor its report.html); OutputError (exit 73) naming the directory otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not out.is_dir():
            raise NotADirectoryError(20, "not a directory", str(out))
        fd, probe = tempfile.mkstemp(prefix=".basisd-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
        (out / "summary.json").unlink(missing_ok=True)
        (out / REPORT).unlink(missing_ok=True)  # nor an earlier run's page
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot write the report there: {exc.strerror or exc}") from None


def run_backtest(config: ResolvedConfig) -> tuple[Daemon, dict[str, Any]]:
    """Run the backtest and write its report; a BasisdError (with its exit code) if the run failed or stopped
    short of its window."""
    out = Path(config.settings.backtest.out_dir)
    prepare_output(out)
    holder: list[Daemon] = []
    replay = config.settings.replay
    progress = BacktestProgress(replay.hours, lambda: holder[0].market_data.batches if holder else 0,
                                lambda: holder[0].clock.now_ns() if holder else int(replay.start.timestamp() * 1e9),
                                sys.stderr)

    async def main() -> None:
        daemon = Daemon(config, Notifier(""))
        holder.append(daemon)
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress.follow)
            await daemon.run()
            tg.cancel_scope.cancel()
        progress.finish()

    try:
        with progress:  # entered before the daemon is built: on a terminal its actors log above the bar
            anyio.run(main)
    except Exception as exc:  # the task group wraps the daemon's own error: surface it, with its exit code
        error = find_basisd_error(exc)
        if error is None:
            raise
        raise error from None
    daemon = holder[0]
    check_complete(daemon)
    summary = build_summary(daemon)
    try:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_instructions(out, daemon)
        write_report(out, summary, report_context(config, daemon.spec))
    except OSError as exc:
        raise OutputError(f"cannot write the report in {out}: {exc.filename or out}: {exc.strerror or exc}") from None
    return daemon, summary


def check_complete(daemon: Daemon) -> None:
    """IncompleteRunError unless the replay delivered every hour of its window and ended because it had."""
    replay = daemon.config.settings.replay
    delivered, reason = daemon.market_data.batches, daemon.stop_reason or "failure"
    if delivered >= replay.hours and reason == "replay finished":
        return
    start = int(replay.start.timestamp()) * 1_000_000_000
    end = datetime.fromtimestamp((start + replay.hours * HOUR_S * 1_000_000_000) / 1e9, UTC)
    error = IncompleteRunError(
        f"the replay covered {delivered} of the {replay.hours} hours of its window "
        f"({replay.start.isoformat()} → {end.isoformat()}; stopped: {reason}): no summary was written")
    if reason.startswith("signal"):
        error.exit_code = ExitCode.INTERRUPTED
    raise error


INSTRUCTION_COLUMNS = ("ts", "instruction_id", "change", "type", "venue", "amount_usd", "reduces_exposure", "reason")


def write_instructions(out: Path, daemon: Daemon) -> None:
    """`instructions.csv`: every instruction the strategy issued, in the hour `hourly.csv` books it in (the
    report's markers on the equity curve)."""
    with (out / "instructions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(INSTRUCTION_COLUMNS)
        for ts_ns, instruction_id, instruction, change in daemon.strategy.issued:
            writer.writerow([iso(ts_ns), instruction_id, change, instruction.type, instruction.venue,
                             f"{instruction.amount_usd:.2f}", instruction.reduces_exposure, instruction.reason])


def _s(value: Decimal, places: int = 6) -> str:
    return f"{value:.{places}f}"


def delta_bands(daemon: Daemon, drifts: list[Decimal | None]) -> dict[str, Any]:
    """Hours the book's delta was outside the alert's warn band and the risk's act band (daemon.domain.neutrality)."""
    risk = daemon.config.settings.risk
    act = Decimal(str(risk.delta_act_fraction))
    band = rebalance_band(daemon.spec, RiskLimits(delta_act_fraction=act)) if daemon.spec.hedged else None
    return delta_bands_summary(drifts, Decimal(str(risk.delta_warn_fraction)), act, band)


def build_summary(daemon: Daemon) -> dict[str, Any]:
    config, recorder, positions = daemon.config, daemon.recorder, daemon.positions
    assert recorder is not None, "a backtest runs with the recorder"
    s = config.settings
    capital = Decimal(str(s.strategy.initial_capital))
    final_nav = recorder.navs[-1] if recorder.navs else capital
    # The daily statistics (daemon.domain.statistics); they replace the hourly APR / volatility / Sharpe /
    # max drawdown this summary used to carry at its top level, which no one computes that way.
    statistics = daily_statistics(list(zip(recorder.times, (float(n) for n in recorder.navs), strict=True)),
                                  float(capital))
    initial: dict[str, Any] = {}
    if recorder.first is not None:
        ledger, market = recorder.first
        view = strategy_view(ledger, market, daemon.spec, tuple(daemon.simulated.exchanges))
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
        "statistics": statistics.to_dict(),
        # At each hour's close, after the venues and the strategy acted (the book as it was left); the worst the
        # venues saw before acting, and every liquidation with its time: daemon.backtest_risk.
        "min_health_factor": _s(recorder.min_hf) if recorder.min_hf.is_finite() else "inf",
        "min_margin_ratio": {v: _s(r) for v, r in sorted(recorder.min_margin.items())},
        "worst_before_action": worst_before_action(daemon.simulated.chain, daemon.simulated.exchanges),
        "liquidation_events": liquidation_events(daemon.simulated.chain, daemon.simulated.exchanges),
        # The same at each hour's worst price (candle highs for shorts), where the history records them.
        "min_margin_ratio_intrabar": {name: _s(e.min_margin_ratio_intrabar)
                                      for name, e in sorted(daemon.simulated.exchanges.items())
                                      if e.min_margin_ratio_intrabar is not None},
        "instructions": daemon.strategy.instructions, "failed_instructions": daemon.strategy.failed_instructions,
        "delta_bands": delta_bands(daemon, recorder.drifts),
        "total_costs": _s(positions.pnl_totals["transaction_costs"]),
        "liquidations": {"aave_v3": daemon.simulated.chain.liquidations,
                         **{name: e.liquidations for name, e in sorted(daemon.simulated.exchanges.items())}},
        "initial_positions": initial,
        "stopped": daemon.stop_reason or "failure", "trading_state_at_end": daemon.trading.state.value,
        # Each drawdown breaker level that acted, in order (actors.risk): level, action, market time, drawdown
        # from the peak and loss since the UTC day's first NAV, the share of the book unwound, and what was sent.
        "breaker_actions": list(daemon.risk.actions),
        # Instructions seed 004's limits refused or deferred (gas above the cap, a leg past the position limit).
        "instructions_refused_by_limits": daemon.execution.refused,
    }
