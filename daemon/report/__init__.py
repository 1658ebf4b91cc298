"""`report.html`: one self-contained page of a backtest, built from the run's own files (`summary.json`'s
content, `hourly.csv`, `instructions.csv`) and the levels of its config. plotly.js is inlined once, so the page
opens offline, from anywhere (mailed, archived), with nothing beside it.

What it shows, top to bottom: a header (mode, share class, window, capital, final NAV and the headline figures);
the daily statistics (`summary["statistics"]`) and the run's own checks; NAV against holding ETH and pure lending,
with a marker at every instruction; the drawdown under the running peak; the P&L attribution by component
(cumulative, and as a waterfall of totals); monthly returns; the distribution of daily returns; rolling 30-day
Sharpe and volatility; net delta against the rebalance band and risk's warn/act levels; AAVE health factor and
LTV against HF 1 and the configured levels; each venue's margin ratio against its levels; funding rates per
venue and the carry earned; then worst drawdowns, yearly returns and any other check the summary carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon.report import figures as F
from daemon.report import page
from daemon.report import series as S
from daemon.report.context import ReportContext, report_context

__all__ = ["REPORT", "ReportContext", "report_context", "write_report"]

REPORT = "report.html"


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs  # the one use of plotly: imported only when a report is written

    return str(get_plotlyjs())


def build_page(out: Path, summary: Mapping[str, Any], ctx: ReportContext,
               plotly_js: Callable[[], str] = _plotly_js) -> str:
    hourly = S.read_hourly(out / "hourly.csv")
    instructions = S.read_instructions(out / "instructions.csv")
    days = S.daily(hourly, ctx.capital)
    stats = summary.get("statistics") if isinstance(summary.get("statistics"), Mapping) else None
    monthly = {k: float(v) for k, v in (stats or {}).get("monthly_returns", {}).items()} or \
        S.monthly_returns(days, ctx.capital)
    totals = {k: float(v) for k, v in summary.get("pnl_by_component", {}).items()}
    cur = ctx.currency

    figures: dict[str, Any] = {}
    body: list[str] = []

    def add(chart_id: str, title: str, note: str, figure: dict[str, Any] | None, tall: bool = False) -> str:
        if figure is None:
            return ""
        figures[chart_id] = figure
        return page.chart(chart_id, title, note, tall)

    body.append(page.header(summary, hourly.ts[0] if hourly.ts else "?", hourly.ts[-1] if hourly.ts else "?",
                            len(days.dates)))
    body.append('<div class="grid">'
                f'<div class="card"><h3>Statistics (daily returns)</h3>{page.statistics_table(stats)}</div>'
                f'<div class="card"><h3>The run</h3>{page.run_table(summary)}</div></div>')
    n_instr = len(instructions)
    body.append("<h2>Performance</h2>")
    body.append(add("equity", f"NAV ({cur}) against holding ETH and pure lending",
                    f"Instruction markers: the {n_instr} instructions the strategy issued (hover for each). "
                    "Benchmarks start from the capital at the first hour's prices and indexes.",
                    F.equity(hourly, ctx, instructions), tall=True))
    body.append(add("underwater", "Drawdown (underwater)",
                    "Hourly NAV below its running peak (the table's max drawdown is on daily closes, as the daily "
                    "statistics are: an hour's dip that closes the day recovered is not in it).",
                    F.underwater(hourly)))
    body.append('<div class="grid">')
    body.append(add("monthly", "Monthly returns", "Month-end NAV on the previous month-end (the first on the capital).",
                    F.monthly_heatmap(monthly)))
    body.append(add("distribution", "Daily returns",
                    "Each UTC day's close (its NAV at the next 00:00) on the day before's, as the statistics have it.",
                    F.distribution(days)))
    body.append("</div>")
    body.append(add("rolling", f"Rolling {S.ROLLING_DAYS}-day Sharpe and volatility",
                    f"Daily returns, annualised over {S.DAYS_PER_YEAR} days, zero risk-free rate.",
                    F.rolling_risk(days)))
    body.append("<h2>Where the P&amp;L came from</h2>")
    body.append(add("attribution", f"P&L attribution by component, cumulative ({cur})",
                    f"Each hour's NAV change split exactly into its components (residual ≤ "
                    f"{summary.get('pnl_residual_max_abs', '?')} per hour).", F.attribution(hourly, ctx), tall=True))
    body.append(add("attribution_totals", f"Components' totals ({cur})", "From zero to the run's total P&L.",
                    F.attribution_totals(totals, ctx)))
    body.append("<h2>Risk</h2>")
    body.append(add("delta", "Net delta against its bands",
                    f"Net {ctx.asset} delta (the strategy's) as a fraction of the hedge; bands from the config: "
                    f"rebalance ±{ctx.rebalance_band:.1%} (mode's position_deviation_threshold), risk warn "
                    f"±{ctx.delta_warn:.1%} and act ±{ctx.delta_act:.1%} (risk.delta_*_fraction).",
                    F.delta(hourly, ctx)))
    body.append(add("health", "AAVE health factor and LTV",
                    "Lowest HF and highest LTV in each bucket; levels from the config (λ = max_ltv × (1 − "
                    "max_stake_spread_move), risk.ltv_*_above_target, the venue's liquidation threshold).",
                    F.health(hourly, ctx), tall=True))
    body.append(add("margin", "CEX margin ratio per venue",
                    "(USDT + uPnL) / notional at the venue's own mark, lowest in each bucket; levels from "
                    "risk.margin_*_ratio.", F.margin(hourly, ctx)))
    body.append(add("funding", "Funding rate per venue and carry earned",
                    "Each venue's last settled rate × settlements a year (its funding_interval_h), as the day's "
                    "time-weighted mean; the carry is the funding P&L of the trailing 30 days on NAV.",
                    F.funding(hourly, ctx, days)))
    tables = [("Worst drawdowns", page.worst_drawdowns_table(stats)), ("Yearly returns", page.yearly_table(stats))]
    if any(t for _, t in tables):
        body.append("<h2>Drawdowns and years</h2><div class=\"grid\">" + "".join(
            f'<div class="card"><h3>{title}</h3>{t}</div>' for title, t in tables if t) + "</div>")
    checks = page.other_checks(summary)
    if checks:
        body.append(f"<h2>Other checks</h2>{checks}")
    body.append(f"<footer>From this run's summary.json, hourly.csv ({len(hourly.ts)} hours, drawn at most "
                f"{S.MAX_POINTS} points a series: each bucket's last value, or its worst for a risk reading), "
                "instructions.csv and the run's config.</footer>")
    title = f"basisd backtest · {ctx.mode} · {ctx.share_class}"
    return page.document(title, "".join(body), figures, plotly_js())


def write_report(out: Path, summary: Mapping[str, Any], ctx: ReportContext) -> Path:
    """Write `report.html` in `out` (from the files the run wrote there) and return its path."""
    path = out / REPORT
    path.write_text(build_page(out, summary, ctx), encoding="utf-8")
    return path
