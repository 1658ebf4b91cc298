"""Interactive charts of a backtest, from its `hourly.csv`: cumulative P&L, P&L components, delta neutrality,
margin ratios against their thresholds, and HF/LTV. Plotly's script is written once beside them
(`plotly.min.js`), so the pages open offline.

The figures are built as plain Plotly JSON and written without validation: plotly's graph objects validate
and deep-copy every point (about 1.5 s for a 16-month hourly run, more than the rest of the report), and
these figures use only a handful of well-known attributes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.domain.pnl import COMPONENTS

# (label, level, where the label sits: the three lines are close, so their labels are spread out)
THRESHOLDS = (("warning 20 %", 0.20, "top left"), ("urgent 15 %", 0.15, "top right"),
              ("maintenance 10 % (liquidation)", 0.10, "bottom right"))

Figure = dict[str, Any]


def _figure(title: str, traces: list[dict[str, Any]], **layout: Any) -> Figure:
    return {"data": traces, "layout": {"title": {"text": title}, **layout}}


def _line(x: list[str], y: Sequence[float | None], name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name, **extra}


def _hline(figure: Figure, level: float, label: str, position: str, yref: str = "y") -> None:
    """A dotted horizontal line across the plot with its label (what `Figure.add_hline` draws)."""
    vertical, horizontal = position.split(" ")
    layout = figure["layout"]
    layout.setdefault("shapes", []).append({
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": yref, "y0": level, "y1": level,
        "line": {"dash": "dot"}})
    layout.setdefault("annotations", []).append({
        "text": label, "showarrow": False, "xref": "paper", "x": 0 if horizontal == "left" else 1,
        "xanchor": horizontal, "yref": yref, "y": level, "yanchor": "bottom" if vertical == "top" else "top"})


def write_charts(out: Path, currency: str, capital: float, target_ltv: float) -> list[Path]:
    import plotly.io as pio  # the one user of plotly: imported only when charts are made

    rows = list(csv.DictReader((out / "hourly.csv").read_text(encoding="utf-8").splitlines()))
    if not rows:
        return []
    ts = [r["ts"] for r in rows]

    def col(name: str) -> list[float | None]:
        return [None if r[name] in ("", "inf") else float(r[name]) for r in rows]

    charts: list[tuple[str, Figure]] = []
    nav = col("nav")
    charts.append(("cumulative_pnl", _figure(f"Cumulative P&L ({currency})", [
        _line(ts, [None if v is None else v - capital for v in nav], "P&L")])))
    traces = []
    for name in COMPONENTS:
        total, series = 0.0, []
        for v in col(name):
            total += v or 0.0
            series.append(total)
        if any(series):
            traces.append(_line(ts, series, name))
    charts.append(("pnl_components", _figure(f"Cumulative P&L by component ({currency})", traces)))
    charts.append(("delta", _figure("Net ETH delta (on chain + CEX)", [_line(ts, col("net_delta_eth"),
                                                                              "net delta")])))
    margins = _figure("CEX margin ratio per venue", [
        _line(ts, col(key), key.removeprefix("margin_ratio_")) for key in rows[0] if key.startswith("margin_ratio_")])
    for label, level, position in THRESHOLDS:
        _hline(margins, level, label, position)
    charts.append(("margin_ratios", margins))
    health = _figure("AAVE health factor and LTV", [_line(ts, col("hf"), "HF"),
                                                      _line(ts, col("ltv"), "LTV", yaxis="y2")],
                     yaxis2={"overlaying": "y", "side": "right"})
    if target_ltv:
        _hline(health, target_ltv, "target LTV λ", "top right", yref="y2")
    charts.append(("hf_ltv", health))
    written = []
    for name, figure in charts:
        path = out / f"{name}.html"
        pio.write_html(figure, path, include_plotlyjs="directory", full_html=True, validate=False)
        written.append(path)
    return written
