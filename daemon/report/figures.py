"""The report's charts, as plain Plotly JSON (`{"data": [...], "layout": {...}}`).

Built without plotly's graph objects: they validate and deep-copy every point (seconds for a long run), and these
figures use a handful of well-known attributes. Every level drawn (delta bands, HF and LTV thresholds, margin
levels) comes from the run's config through `ReportContext`; every series from the run's own files.
A chart whose data the run does not have (no hedge, no borrowing, no perps) is left out, not drawn empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from daemon.domain.pnl import COMPONENTS
from daemon.report import series as S
from daemon.report.context import ReportContext

Figure = dict[str, Any]
Trace = dict[str, Any]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
RED, ORANGE, AMBER, GREEN, GREY = "#c0392b", "#e67e22", "#d4ac0d", "#1e8449", "#7f8c8d"


def _r(values: Sequence[float | None], places: int) -> list[float | None]:
    """Rounded for the page (its size), None kept (a gap)."""
    return [None if v is None or not math.isfinite(v) else round(v, places) for v in values]


def _pct(values: Sequence[float | None], places: int = 4) -> list[float | None]:
    return _r([None if v is None else v * 100 for v in values], places)


def _line(x: Sequence[str], y: Sequence[float | None], name: str, **extra: Any) -> Trace:
    return {"type": "scatter", "mode": "lines", "x": list(x), "y": list(y), "name": name, **extra}


def _figure(traces: list[Trace], **layout: Any) -> Figure:
    base: dict[str, Any] = {"margin": {"l": 60, "r": 30, "t": 30, "b": 40}, "hovermode": "x unified",
                            "legend": {"orientation": "h", "y": -0.15}, "xaxis": {"type": "date"}}
    base.update(layout)
    return {"data": traces, "layout": base}


def _hline(figure: Figure, y: float, label: str, color: str, yref: str = "y", dash: str = "dot",
           side: str = "right") -> None:
    """A labelled horizontal level across the plot (what `Figure.add_hline` draws)."""
    layout = figure["layout"]
    layout.setdefault("shapes", []).append({
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": yref, "y0": y, "y1": y,
        "line": {"dash": dash, "color": color, "width": 1.5}})
    if not label:
        return
    layout.setdefault("annotations", []).append({
        "text": label, "showarrow": False, "xref": "paper", "x": 1 if side == "right" else 0,
        "xanchor": side, "yref": yref, "y": y, "yanchor": "bottom", "font": {"size": 10, "color": color}})


# --- performance ----------------------------------------------------------------------------------------


def equity(h: S.Hourly, ctx: ReportContext, instructions: Sequence[S.InstructionRow]) -> Figure:
    """NAV against the two benchmarks a quant asks for first — holding ETH, and lending the capital on AAVE
    without any leverage or hedge — with a marker at each instruction the strategy issued."""
    size = S.bucket_size(len(h.ts))
    x = S.thin_ts(h.ts, size)
    nav = h.col("nav")
    traces = [_line(x, _r(S.thin_last(nav, size), 4), "NAV", line={"width": 2.5, "color": "#1f4e79"})]
    eth = h.col("eth_usd")
    eth0 = next((v for v in eth if v), None)
    if eth0:
        if ctx.currency == "USDT":
            hold = [None if v is None else ctx.capital * v / eth0 for v in eth]
        else:  # in ETH, one ETH held is one ETH: the benchmark is the capital itself
            hold = [ctx.capital if v is not None else None for v in eth]
        # On its own axis (right): ETH moves tens of percent where a neutral book moves a few, and on one axis
        # the NAV would be a flat line. Both axes are in the share class's currency.
        traces.append(_line(x, _r(S.thin_last(hold, size), 4), "hold ETH (right axis)", yaxis="y2",
                            line={"width": 1, "color": GREY}))
    index = h.col("supply_index_usdt" if ctx.currency == "USDT" else "supply_index_weth")
    i0 = next((v for v in index if v), None)
    if i0:
        lend = [None if v is None else ctx.capital * v / i0 for v in index]
        reserve = "USDT" if ctx.currency == "USDT" else "WETH"
        traces.append(_line(x, _r(S.thin_last(lend, size), 4), f"pure lending ({reserve} on AAVE)",
                            line={"width": 1, "dash": "dash", "color": GREEN}))
    traces.extend(_instruction_markers(h, instructions))
    return _figure(traces, yaxis={"title": {"text": f"NAV, pure lending ({ctx.currency})"}},
                   yaxis2={"title": {"text": f"hold ETH ({ctx.currency})"}, "overlaying": "y", "side": "right",
                           "showgrid": False, "automargin": True},
                   margin={"l": 60, "r": 70, "t": 30, "b": 40})


def _instruction_markers(h: S.Hourly, instructions: Sequence[S.InstructionRow]) -> list[Trace]:
    if not instructions:
        return []
    nav_at = {ts: nav for ts, nav in zip(h.ts, h.col("nav"), strict=True) if nav is not None}
    by_change: dict[str, list[S.InstructionRow]] = {}
    for row in instructions:
        by_change.setdefault(row.change or "instruction", []).append(row)
    traces = []
    for change, rows in sorted(by_change.items()):
        shown = [r for r in rows if r.ts in nav_at]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{change} ({len(rows)})",
            "x": [r.ts for r in shown], "y": [round(nav_at[r.ts], 2) for r in shown],
            "marker": {"symbol": "triangle-down", "size": 9, "line": {"width": 1, "color": "#222"}},
            "text": [f"{r.type} {r.venue} {r.amount_usd:,.0f} USD: {r.reason}"[:160] for r in shown],
            "hovertemplate": "%{x}<br>%{text}<extra>" + change + "</extra>",
        })
    return traces


def underwater(h: S.Hourly) -> Figure:
    size = S.bucket_size(len(h.ts))
    dd = S.thin_min(S.drawdown(h.col("nav")), size)
    return _figure([_line(S.thin_ts(h.ts, size), _pct(dd), "drawdown", fill="tozeroy",
                          line={"color": RED, "width": 1})],
                   yaxis={"title": {"text": "% below the running peak"}, "ticksuffix": " %"})


def monthly_heatmap(monthly: dict[str, float]) -> Figure | None:
    if not monthly:
        return None
    years = sorted({m[:4] for m in monthly})
    z: list[list[float | None]] = [[None] * 12 for _ in years]
    text: list[list[str]] = [[""] * 12 for _ in years]
    for month, r in monthly.items():
        row, column = years.index(month[:4]), int(month[5:7]) - 1
        z[row][column] = round(r * 100, 3)
        text[row][column] = f"{r * 100:.2f} %"
    return _figure([{"type": "heatmap", "x": list(MONTHS), "y": years, "z": z, "text": text,
                     "colorscale": [[0, RED], [0.5, "#f4f4f4"], [1, GREEN]],
                     "zmid": 0, "texttemplate": "%{text}", "hovertemplate": "%{y} %{x}: %{z:.3f} %<extra></extra>",
                     "colorbar": {"ticksuffix": " %"}}],
                   xaxis={"type": "category"}, yaxis={"type": "category", "autorange": "reversed"},
                   hovermode="closest", margin={"l": 60, "r": 30, "t": 20, "b": 30})


def distribution(days: S.Daily) -> Figure | None:
    if len(days.returns) < 2:
        return None
    returns = days.returns
    mean = sum(returns) / len(returns)
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    figure = _figure([{"type": "histogram", "x": _pct(returns, 5), "nbinsx": 60, "name": "daily returns",
                       "marker": {"color": "#2e86c1"}}],
                     xaxis={"title": {"text": "daily return"}, "ticksuffix": " %"}, yaxis={"title": {"text": "days"}},
                     hovermode="closest", bargap=0.05)
    figure["layout"]["annotations"] = [{
        "text": f"{len(returns)} days · mean {mean * 100:.3f} % · σ {sd * 100:.3f} % · worst {min(returns) * 100:.2f} %"
                f" · best {max(returns) * 100:.2f} %", "showarrow": False, "xref": "paper", "yref": "paper",
        "x": 0, "y": 1.08, "xanchor": "left"}]
    return figure


def rolling_risk(days: S.Daily) -> Figure | None:
    if len(days.returns) < S.ROLLING_DAYS:
        return None
    vols, sharpes = S.rolling(days.returns)
    return _figure([_line(days.dates, _r(sharpes, 3), f"Sharpe ({S.ROLLING_DAYS} d)", line={"color": "#1f4e79"}),
                    _line(days.dates, _pct(vols, 3), f"volatility ({S.ROLLING_DAYS} d, annualised)", yaxis="y2",
                          line={"color": ORANGE})],
                   yaxis={"title": {"text": "Sharpe"}, "domain": [0.55, 1]},
                   yaxis2={"title": {"text": "volatility"}, "domain": [0, 0.45], "ticksuffix": " %"})


# --- attribution ----------------------------------------------------------------------------------------


def attribution(h: S.Hourly, ctx: ReportContext) -> Figure:
    """Each P&L component, cumulative, and their sum: where the return came from, hour by hour."""
    size = S.bucket_size(len(h.ts))
    x = S.thin_ts(h.ts, size)
    traces = []
    total: list[float] = [0.0] * len(h.ts)
    for name in COMPONENTS:
        if not h.has(name):
            continue
        running = S.cumulative(h.col(name))
        total = [a + b for a, b in zip(total, running, strict=True)]
        if any(running):
            traces.append(_line(x, _r(S.thin_last(running, size), 2), name))
    traces.append(_line(x, _r(S.thin_last(total, size), 2), "total",
                        line={"width": 3, "color": "#111"}))
    return _figure(traces, yaxis={"title": {"text": ctx.currency}})


def attribution_totals(totals: dict[str, float], ctx: ReportContext) -> Figure | None:
    """The components' totals as a waterfall from zero to the run's P&L."""
    items = [(k, totals[k]) for k in COMPONENTS if totals.get(k)]
    items += [(k, v) for k, v in totals.items() if k not in COMPONENTS and v]
    if not items:
        return None
    total = sum(v for _, v in items)
    return _figure([{"type": "waterfall", "orientation": "v", "x": [k for k, _ in items] + ["total"],
                     "y": [round(v, 2) for _, v in items] + [0], "measure": ["relative"] * len(items) + ["total"],
                     "text": [f"{v:,.0f}" for _, v in items] + [f"{total:,.0f}"], "texttemplate": "%{text}",
                     "textposition": "outside",
                     "increasing": {"marker": {"color": GREEN}}, "decreasing": {"marker": {"color": RED}},
                     "totals": {"marker": {"color": "#1f4e79"}}}],
                   xaxis={"type": "category", "automargin": True, "tickangle": -30},
                   yaxis={"title": {"text": ctx.currency}}, hovermode="closest", showlegend=False)


# --- risk ---------------------------------------------------------------------------------------------


def delta(h: S.Hourly, ctx: ReportContext) -> Figure | None:
    """Net delta as a fraction of the hedge with the three bands: the strategy's rebalance band, risk's warn and
    act levels. Each point is the range the delta covered in its bucket, so no breach is thinned away.

    The delta is the one the strategy hedges and `summary.json`'s `delta_bands` counts (`book_delta`, in the mode's
    asset, and its drift |delta| / hedge notional, signed here by the delta); a run from before those columns
    shows `net_delta_eth` over the ETH perps' size."""
    if h.has("book_delta") or h.has("delta_drift"):
        net, drift = h.col("book_delta"), h.col("delta_drift")
        frac = [math.copysign(d, n or 0.0) if d is not None else None for n, d in zip(net, drift, strict=True)]
        unit = ctx.asset
    elif h.has("net_delta_eth"):
        net, hedge = h.col("net_delta_eth"), h.col("hedge_eth")
        frac = [n / g if n is not None and g else None for n, g in zip(net, hedge, strict=True)]
        unit = "ETH"
    else:
        return None
    size = S.bucket_size(len(h.ts))
    x = S.thin_ts(h.ts, size)
    if not ctx.hedged or all(f is None for f in frac):
        low, high = S.thin_min(net, size), S.thin_max(net, size)
        return _figure([_line(x, _r(low, 4), "net delta (low)", line={"width": 0.5, "color": "#2e86c1"},
                              showlegend=False),
                        _line(x, _r(high, 4), f"net delta ({unit}; range in each bucket)", fill="tonexty",
                              line={"width": 0.5, "color": "#2e86c1"})],
                       yaxis={"title": {"text": unit}})
    low, high = S.thin_min(frac, size), S.thin_max(frac, size)
    figure = _figure([_line(x, _pct(low), "|δ| range low", line={"width": 0.5, "color": "#2e86c1"}),
                      _line(x, _pct(high), "net delta / hedge (range in each bucket)", fill="tonexty",
                            line={"width": 0.5, "color": "#2e86c1"})],
                     yaxis={"title": {"text": "net delta / hedge"}, "ticksuffix": " %"})
    # The rebalance band is labelled on the left: it often equals risk's warn level, labelled on the right.
    levels = ((ctx.rebalance_band, "rebalance band", GREEN, "left"), (ctx.delta_warn, "risk warn", AMBER, "right"),
              (ctx.delta_act, "risk act", RED, "right"))
    outside = []
    for level, label, color, side in levels:
        hours = sum(1 for f in frac if f is not None and abs(f) > level)
        outside.append(f"{label} ±{level:.1%}: {hours} h outside")
        _hline(figure, level * 100, f"{label} ±{level:.1%}", color, side=side)
        _hline(figure, -level * 100, "", color)
    figure["layout"]["annotations"].append({
        "text": " · ".join(outside) + f" (of {sum(1 for f in frac if f is not None)} hedged hours)",
        "showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": 1.06, "xanchor": "left"})
    figure["data"][0]["showlegend"] = False
    return figure


def health(h: S.Hourly, ctx: ReportContext) -> Figure | None:
    """AAVE health factor (each bucket's lowest) with HF = 1 and the HF at risk's LTV levels; LTV (each bucket's
    highest) below it with λ and the warn and act levels above λ. Levels from the config."""
    if not ctx.borrowing or not h.has("hf"):
        return None
    size = S.bucket_size(len(h.ts))
    x = S.thin_ts(h.ts, size)
    figure = _figure([_line(x, _r(S.thin_min(h.col("hf"), size), 5), "health factor (lowest)",
                            line={"color": "#1f4e79"}),
                      _line(x, _r(S.thin_max(h.col("ltv"), size), 5), "LTV (highest)", yaxis="y2",
                            line={"color": ORANGE})],
                     yaxis={"title": {"text": "HF"}, "domain": [0.55, 1]},
                     yaxis2={"title": {"text": "LTV"}, "domain": [0, 0.45], "tickformat": ".1%"})
    lt, target = ctx.liquidation_threshold, ctx.target_ltv
    warn, act = target + ctx.ltv_warn_above_target, target + ctx.ltv_act_above_target
    _hline(figure, 1.0, "HF 1: liquidation", RED, dash="solid")
    if lt and target:
        _hline(figure, lt / act, f"HF at risk act (LTV {act:.2%})", ORANGE)
        _hline(figure, lt / warn, f"HF at risk warn (LTV {warn:.2%})", AMBER)
        _hline(figure, lt / target, f"HF at target λ {target:.2%}", GREEN, side="left")
    _hline(figure, target, f"target λ {target:.2%}", GREEN, yref="y2", side="left")
    _hline(figure, warn, f"warn {warn:.2%}", AMBER, yref="y2")
    _hline(figure, act, f"act {act:.2%}", ORANGE, yref="y2")
    if lt:
        _hline(figure, lt, f"liquidation threshold {lt:.0%}", RED, yref="y2", dash="solid")
    return figure


def margin(h: S.Hourly, ctx: ReportContext) -> Figure | None:
    venues = h.prefixed("margin_ratio_")
    if not venues:
        return None
    size = S.bucket_size(len(h.ts))
    x = S.thin_ts(h.ts, size)
    figure = _figure([_line(x, _r(S.thin_min(v, size), 5), venue) for venue, v in venues.items()],
                     yaxis={"title": {"text": "margin ratio"}, "tickformat": ".0%"})
    _hline(figure, ctx.margin_warning, f"warning {ctx.margin_warning:.0%}", AMBER)
    _hline(figure, ctx.margin_urgent, f"urgent {ctx.margin_urgent:.0%}", ORANGE, side="left")
    _hline(figure, ctx.margin_maintenance, f"maintenance {ctx.margin_maintenance:.0%} (liquidation)", RED,
           dash="solid")
    for venue, level in sorted(ctx.venue_maintenance.items()):
        if venue in venues and abs(level - ctx.margin_maintenance) > 1e-12:
            _hline(figure, level, f"{venue} maintenance {level:.1%}", RED)
    return figure


def funding(h: S.Hourly, ctx: ReportContext, days: S.Daily) -> Figure | None:
    """Each venue's funding rate, annualised (rate × settlements a year, from the venue's interval), as the day's
    time-weighted mean; and the carry the book earned: funding P&L over the trailing 30 days, annualised on NAV."""
    venues = h.prefixed("funding_rate_")
    if not venues:
        return None
    dates: list[str] = []
    per_day: dict[str, dict[str, list[float]]] = {}
    for i, ts in enumerate(h.ts):
        day = ts[:10]
        if not dates or dates[-1] != day:
            dates.append(day)
        for venue, rates in venues.items():
            if rates[i] is not None:
                per_day.setdefault(venue, {}).setdefault(day, []).append(rates[i] or 0.0)
    traces = []
    for venue in venues:
        scale = 24 * 365 / ctx.funding_interval_h.get(venue, 8)
        means = [sum(r) / len(r) * scale if (r := per_day.get(venue, {}).get(d)) else None for d in dates]
        traces.append(_line(dates, _pct(means, 3), f"{venue} rate (annualised)", line={"width": 1}))
    if h.has("funding_pnl") and days.navs:
        daily_funding: dict[str, float] = {}
        for ts, v in zip(h.ts, h.col("funding_pnl"), strict=True):
            daily_funding[ts[:10]] = daily_funding.get(ts[:10], 0.0) + (v or 0.0)
        earned = [daily_funding.get(d, 0.0) for d in days.dates]
        window = min(S.ROLLING_DAYS, len(earned))
        trailing = S.trailing_sum(earned, window)
        carry = [t / nav * 365 / min(i + 1, window) if nav else None
                 for i, (t, nav) in enumerate(zip(trailing, days.navs, strict=True))]
        traces.append(_line(days.dates, _pct(carry, 3), f"carry earned on NAV ({window} d, annualised)",
                            line={"width": 3, "color": "#111"}))
    return _figure(traces, yaxis={"title": {"text": "annualised"}, "ticksuffix": " %"})
