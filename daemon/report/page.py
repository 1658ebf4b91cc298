"""The page around the charts: a header (mode, share class, window, capital, final NAV), the statistics table
from `summary["statistics"]`, the run's own checks from the rest of the summary, and one `<div>` per chart.

Everything shown is read from the summary as it is: a key the summary does not have is skipped, never
invented (a run from before a key existed, or a mode where it means nothing, still gets a page). Keys this page
does not know (added to the summary later) are listed under "Other checks" as they are.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

MAX_ROWS = 40  # of a generic table: past this many, the rest are counted

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1b1b1b;
       margin: 0 auto; max-width: 1500px; padding: 16px 24px 48px; background: #fafafa; }
h1 { font-size: 22px; margin: 4px 0; } h2 { font-size: 16px; margin: 26px 0 6px; border-bottom: 1px solid #ddd; }
.sub { color: #555; margin-bottom: 10px; }
.kpis { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.kpi { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.kpi .v { font-size: 19px; font-weight: 600; } .kpi .k { color: #666; font-size: 12px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
@media (max-width: 1000px) { .grid { grid-template-columns: 1fr; } }
.card { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 8px 12px; overflow-x: auto; }
.card h3 { font-size: 14px; margin: 4px 0 2px; } .card p.note { color: #666; font-size: 12px; margin: 0 0 4px; }
.chart { width: 100%; height: 380px; } .chart.tall { height: 480px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; border-bottom: 1px solid #f0f0f0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } th { color: #555; font-weight: 600; }
.neg { color: #c0392b; } .missing { color: #999; font-style: italic; }
footer { color: #777; font-size: 12px; margin-top: 30px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def pct(value: Any, places: int = 2) -> str:
    return f"{float(value) * 100:.{places}f} %"


def num(value: Any, places: int = 2) -> str:
    return f"{float(value):,.{places}f}"


def _td(text: str, numeric: bool = False, negative: bool = False) -> str:
    classes = " ".join(c for c, on in (("n", numeric), ("neg", negative)) if on)
    return f'<td class="{classes}">{esc(text)}</td>' if classes else f"<td>{esc(text)}</td>"


def _rows(rows: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{esc(k)}</th>{_td(v, numeric=True, negative=v.startswith('-'))}</tr>" for k, v in rows)


def _drawdown_text(dd: Mapping[str, Any]) -> str:
    recovery = dd.get("recovery") or "not recovered"
    return (f"{pct(dd['depth'])} · peak {dd.get('peak', '?')} → trough {dd.get('trough', '?')} → {recovery}"
            f" ({dd.get('duration_days', '?')} d)")


# (key, label, how to show it) of the agreed `statistics` keys (fractions, not %), in the table's order
STATISTICS: tuple[tuple[str, str, str], ...] = (
    ("cagr", "CAGR", "pct"), ("volatility", "Volatility (daily, annualised)", "pct"), ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"), ("calmar", "Calmar", "ratio"), ("best_day", "Best day", "pct"),
    ("worst_day", "Worst day", "pct"), ("win_rate_days", "Winning days", "pct1"), ("days", "Days", "int"),
)


def statistics_table(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return ('<p class="missing">summary.json has no <code>statistics</code> (daily statistics): '
                'nothing to show here.</p>')
    rows: list[tuple[str, str]] = []
    for key, label, kind in STATISTICS:
        value = stats.get(key)
        if value is None:
            continue
        text = {"pct": lambda v: pct(v), "pct1": lambda v: pct(v, 1), "ratio": lambda v: f"{float(v):.2f}",
                "int": lambda v: str(v)}[kind](value)
        rows.append((label, text))
        if key == "calmar" and isinstance(stats.get("max_drawdown"), Mapping):
            rows.append(("Max drawdown", _drawdown_text(stats["max_drawdown"])))
    if "calmar" not in stats and isinstance(stats.get("max_drawdown"), Mapping):
        rows.append(("Max drawdown", _drawdown_text(stats["max_drawdown"])))
    return f"<table>{_rows(rows)}</table>"


def run_table(summary: Mapping[str, Any]) -> str:
    """The run's own figures from the summary: P&L, its residual, costs, instructions, liquidations, the worst
    HF and margin ratio seen."""
    rows: list[tuple[str, str]] = []
    currency = summary.get("currency", "")
    for key, label in (("final_nav", "Final NAV"), ("total_pnl", "Total P&L"), ("total_costs", "Costs")):
        if key in summary:
            rows.append((label, f"{num(summary[key])} {currency}"))
    if "pnl_residual_max_abs" in summary:
        rows.append(("P&L attribution residual (max |hour|)", str(summary["pnl_residual_max_abs"])))
    if "instructions" in summary:
        rows.append(("Instructions (failed)", f"{summary['instructions']} ({summary.get('failed_instructions', 0)})"))
    liquidations = summary.get("liquidations")
    if isinstance(liquidations, Mapping):
        rows.append(("Liquidations", ", ".join(f"{v}: {n}" for v, n in liquidations.items())))
    if "min_health_factor" in summary:
        rows.append(("Lowest health factor", str(summary["min_health_factor"])))
    for key, label in (("min_margin_ratio", "Lowest margin ratio"),
                       ("min_margin_ratio_intrabar", "Lowest margin ratio (intrabar)")):
        value = summary.get(key)
        if isinstance(value, Mapping) and value:
            rows.append((label, ", ".join(f"{v} {pct(r, 1)}" for v, r in value.items())))
    return f"<table>{_rows(rows + _legacy_and_end(summary))}</table>"


def _legacy_and_end(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A summary from before the daily statistics carries hourly APR and Sharpe: shown, and labelled so."""
    rows = []
    for key, label in (("apr", "APR (hourly returns; legacy)"), ("sharpe", "Sharpe (hourly returns; legacy)")):
        if key in summary and "statistics" not in summary:
            rows.append((label, pct(summary[key]) if key == "apr" else f"{float(summary[key]):.2f}"))
    for key, label in (("stopped", "Stopped"), ("trading_state_at_end", "Trading state at the end")):
        if key in summary:
            rows.append((label, str(summary[key])))
    return rows


def worst_drawdowns_table(stats: Mapping[str, Any] | None) -> str:
    worst = (stats or {}).get("worst_drawdowns")
    if not worst:
        return ""
    body = "".join(
        f"<tr>{_td(str(i))}{_td(pct(d['depth']), True, True)}{_td(d.get('peak', ''))}{_td(d.get('trough', ''))}"
        f"{_td(d.get('recovery') or 'not recovered')}{_td(str(d.get('duration_days', '')), True)}</tr>"
        for i, d in enumerate(worst, start=1))
    return ("<table><tr><th>#</th><th>depth</th><th>peak</th><th>trough</th><th>recovered</th><th>days</th></tr>"
            f"{body}</table>")


def yearly_table(stats: Mapping[str, Any] | None) -> str:
    yearly = (stats or {}).get("yearly_returns")
    if not yearly:
        return ""
    head = "".join(f"<th>{esc(y)}</th>" for y in yearly)
    cells = "".join(_td(pct(r), True, float(r) < 0) for r in yearly.values())
    return f"<table><tr>{head}</tr><tr>{cells}</tr></table>"


# Keys the header, the tables above and the charts already show.
SHOWN = frozenset({
    "mode", "share_class", "currency", "source", "window", "capital", "initial_nav", "final_nav", "total_pnl",
    "pnl_by_component", "pnl_residual_max_abs", "apr", "volatility", "sharpe", "max_drawdown", "min_health_factor",
    "min_margin_ratio", "min_margin_ratio_intrabar", "instructions", "failed_instructions", "total_costs",
    "liquidations", "initial_positions", "stopped", "trading_state_at_end", "statistics",
})


def _cell(value: Any) -> str:
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True)[:200]
    return str(value)


def generic(value: Any, depth: int = 0) -> str:
    """A summary value of any shape as a small table: a mapping of mappings (or a list of mappings) with their
    keys as columns, any other mapping as rows (a nested value as its own table), anything else as text."""
    if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()) and \
            all(not isinstance(x, Mapping | list) for v in value.values() for x in v.values()):
        columns = list(dict.fromkeys(k for v in value.values() for k in v))
        head = "<tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
        body = "".join(f"<tr><th>{esc(k)}</th>" + "".join(_td(_cell(v.get(c, "")), True) for c in columns) + "</tr>"
                       for k, v in list(value.items())[:MAX_ROWS])
        return f"<table>{head}{body}</table>" + _more(len(value))
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        columns = list(dict.fromkeys(k for v in value for k in v))
        head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
        body = "".join("<tr>" + "".join(_td(_cell(v.get(c, ""))) for c in columns) + "</tr>" for v in value[:MAX_ROWS])
        return f"<table>{head}{body}</table>" + _more(len(value))
    if isinstance(value, Mapping) and value:
        rows = []
        for k, v in list(value.items())[:MAX_ROWS]:
            inner = generic(v, depth + 1) if isinstance(v, Mapping | list) and v and depth < 3 else esc(_cell(v))
            rows.append(f"<tr><th>{esc(k)}</th><td>{inner}</td></tr>")
        return f"<table>{''.join(rows)}</table>" + _more(len(value))
    if isinstance(value, Mapping | list) and not value:
        return '<span class="missing">none</span>'
    return esc(_cell(value))


def _more(n: int) -> str:
    return f'<p class="note">… and {n - MAX_ROWS} more (summary.json has them all)</p>' if n > MAX_ROWS else ""


def other_checks(summary: Mapping[str, Any]) -> str:
    parts = [f'<div class="card"><h3>{esc(key)}</h3>{generic(summary[key])}</div>'
             for key in sorted(summary) if key not in SHOWN]
    return f'<div class="grid">{"".join(parts)}</div>' if parts else ""


def header(summary: Mapping[str, Any], first_ts: str, last_ts: str, days: int) -> str:
    currency = summary.get("currency", "")
    capital = float(summary.get("capital", 0) or 0)
    final = float(summary.get("final_nav", capital) or capital)
    total = final - capital
    stats = summary.get("statistics") or {}
    kpis = [("Final NAV", f"{final:,.2f} {currency}"),
            ("Total P&L", f"{total:,.2f} {currency} ({total / capital * 100 if capital else 0:.2f} %)")]
    for key, label, kind in (("cagr", "CAGR", "pct"), ("sharpe", "Sharpe (daily)", "ratio"),
                             ("volatility", "Volatility", "pct")):
        if stats.get(key) is not None:
            kpis.append((label, pct(stats[key]) if kind == "pct" else f"{float(stats[key]):.2f}"))
    if isinstance(stats.get("max_drawdown"), Mapping):
        kpis.append(("Max drawdown", pct(stats["max_drawdown"]["depth"])))
    strip = "".join(f'<div class="kpi"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
                    for k, v in kpis)
    hours = (summary.get("window") or {}).get("hours", "?")
    return (f"<h1>basisd backtest · {esc(summary.get('mode', '?'))} · share class "
            f"{esc(summary.get('share_class', '?'))} ({esc(currency)})</h1>"
            f'<div class="sub">{esc(first_ts)} → {esc(last_ts)} UTC · {esc(hours)} hours ({days} days) · capital '
            f"{capital:,.2f} {esc(currency)} · market: {esc(summary.get('source', '?'))}</div>"
            f'<div class="kpis">{strip}</div>')


def chart(chart_id: str, title: str, note: str, tall: bool = False) -> str:
    return (f'<div class="card"><h3>{esc(title)}</h3><p class="note">{esc(note)}</p>'
            f'<div class="chart{" tall" if tall else ""}" id="{esc(chart_id)}"></div></div>')


def document(title: str, body: str, figures: Mapping[str, Any], plotly_js: str) -> str:
    # "</" inside a <script> would end it early: JSON escapes it harmlessly as "<\/".
    data = json.dumps(figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>'
            f"<script>{plotly_js}</script></head><body>{body}"
            f'<script type="application/json" id="basisd-figures">{data}</script>'
            "<script>\n"
            "const figures = JSON.parse(document.getElementById('basisd-figures').textContent);\n"
            "for (const [id, f] of Object.entries(figures)) {\n"
            "  Plotly.newPlot(id, f.data, f.layout, {responsive: true, displaylogo: false});\n"
            "}\n</script></body></html>\n")
