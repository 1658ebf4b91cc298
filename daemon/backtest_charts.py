"""Interactive charts of a backtest, from its `hourly.csv`: cumulative P&L, P&L components, delta neutrality,
margin ratios against their thresholds, and HF/LTV. Plotly's script is written once beside them
(`plotly.min.js`), so the pages open offline."""

from __future__ import annotations

import csv
from pathlib import Path

from daemon.domain.pnl import COMPONENTS

# (label, level, where the label sits: the three lines are close, so their labels are spread out)
THRESHOLDS = (("warning 20 %", 0.20, "top left"), ("urgent 15 %", 0.15, "top right"),
              ("maintenance 10 % (liquidation)", 0.10, "bottom right"))


def write_charts(out: Path, currency: str, capital: float, target_ltv: float) -> list[Path]:
    import plotly.graph_objects as go  # the one user of plotly: imported only when charts are made

    rows = list(csv.DictReader((out / "hourly.csv").read_text(encoding="utf-8").splitlines()))
    if not rows:
        return []
    ts = [r["ts"] for r in rows]

    def col(name: str) -> list[float | None]:
        return [None if r[name] in ("", "inf") else float(r[name]) for r in rows]

    charts: list[tuple[str, go.Figure]] = []
    nav = col("nav")
    charts.append(("cumulative_pnl", go.Figure(
        go.Scatter(x=ts, y=[None if v is None else v - capital for v in nav], name="P&L"),
        layout={"title": f"Cumulative P&L ({currency})"})))
    components = go.Figure(layout={"title": f"Cumulative P&L by component ({currency})"})
    for name in COMPONENTS:
        total, series = 0.0, []
        for v in col(name):
            total += v or 0.0
            series.append(total)
        if any(series):
            components.add_trace(go.Scatter(x=ts, y=series, name=name))
    charts.append(("pnl_components", components))
    charts.append(("delta", go.Figure(go.Scatter(x=ts, y=col("net_delta_eth"), name="net delta"),
                                      layout={"title": "Net ETH delta (on chain + CEX)"})))
    margins = go.Figure(layout={"title": "CEX margin ratio per venue"})
    for key in [k for k in rows[0] if k.startswith("margin_ratio_")]:
        margins.add_trace(go.Scatter(x=ts, y=col(key), name=key.removeprefix("margin_ratio_")))
    for label, level, position in THRESHOLDS:
        margins.add_hline(y=level, line_dash="dot", annotation_text=label, annotation_position=position)
    charts.append(("margin_ratios", margins))
    health = go.Figure(layout={"title": "AAVE health factor and LTV", "yaxis2": {"overlaying": "y", "side": "right"}})
    health.add_trace(go.Scatter(x=ts, y=col("hf"), name="HF"))
    health.add_trace(go.Scatter(x=ts, y=col("ltv"), name="LTV", yaxis="y2"))
    if target_ltv:
        health.add_hline(y=target_ltv, line_dash="dot", annotation_text="target LTV λ", yref="y2")
    charts.append(("hf_ltv", health))
    written = []
    for name, figure in charts:
        path = out / f"{name}.html"
        figure.write_html(path, include_plotlyjs="directory", full_html=True)
        written.append(path)
    return written
