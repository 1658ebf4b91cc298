"""What the report needs from the run's configuration: who ran (mode, share class, capital) and every level a
chart draws, read from the config the run used — never a constant of the report's own."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.config import ResolvedConfig
from daemon.domain.strategy import ModeSpec, delta_asset

DEFAULT_FUNDING_INTERVAL_H = 8


@dataclass(frozen=True, slots=True)
class ReportContext:
    mode: str
    share_class: str
    currency: str
    capital: float
    source: str
    hedged: bool
    borrowing: bool
    asset: str  # whose delta the mode measures (ETH; BTC for btc_basis)
    # Delta, as fractions of the hedge: the strategy's rebalance band (the mode's position_deviation_threshold),
    # then risk's warn and act levels.
    rebalance_band: float
    delta_warn: float
    delta_act: float
    # AAVE: the target LTV λ and the liquidation threshold (HF = LT / LTV), the LTV warn and act offsets above λ.
    target_ltv: float
    liquidation_threshold: float
    ltv_warn_above_target: float
    ltv_act_above_target: float
    # CEX margin ratio levels (risk), and each venue's own maintenance ratio (its liquidation line).
    margin_warning: float
    margin_urgent: float
    margin_maintenance: float
    venue_maintenance: dict[str, float] = field(default_factory=dict)
    funding_interval_h: dict[str, int] = field(default_factory=dict)  # venue → hours between settlements


def report_context(config: ResolvedConfig, spec: ModeSpec) -> ReportContext:
    """From the config and the mode's spec the run was built with (λ, the liquidation threshold and the
    rebalance band as the strategy and the recorder used them)."""
    s = config.settings
    cex = {name: v for name, v in config.venues.items() if v.kind == "cex"}
    return ReportContext(
        mode=config.mode.name, share_class=config.share_class.name, currency=config.share_class.currency,
        capital=float(s.strategy.initial_capital), source=s.replay.source,
        hedged=config.hedged, borrowing=config.mode.borrowing, asset=delta_asset(spec),
        rebalance_band=float(spec.deviation_threshold), delta_warn=s.risk.delta_warn_fraction,
        delta_act=s.risk.delta_act_fraction,
        target_ltv=float(spec.target_ltv), liquidation_threshold=float(spec.liquidation_threshold),
        ltv_warn_above_target=s.risk.ltv_warn_above_target, ltv_act_above_target=s.risk.ltv_act_above_target,
        margin_warning=s.risk.margin_warning_ratio, margin_urgent=s.risk.margin_urgent_ratio,
        margin_maintenance=s.risk.margin_maintenance_ratio,
        venue_maintenance={n: v.maintenance_margin_ratio for n, v in cex.items() if v.maintenance_margin_ratio},
        funding_interval_h={n: v.funding_interval_h or DEFAULT_FUNDING_INTERVAL_H for n, v in cex.items()},
    )
