"""The bridge from a loaded configuration to the domain's `ModeSpec` (settings stay out of the domain)."""

from __future__ import annotations

from decimal import Decimal

from daemon.config import ResolvedConfig
from daemon.domain.strategy import ModeSpec
from daemon.settings import VenueDefinition


def mode_spec(config: ResolvedConfig) -> ModeSpec:
    p = config.params
    lending = [v for v in config.venues.values() if v.kind == "lending"]
    lst = p.lst or "weETH"
    # The venue that mints the LST (config.py checks that one does, for a staking mode).
    staking = next((name for name, v in config.venues.items() if v.kind == "staking" and v.lst == lst), "etherfi")
    threshold = lending[0].emode_liquidation_threshold if lending and lending[0].emode_liquidation_threshold \
        else 0.95
    return ModeSpec(
        name=config.mode.name, share_class=config.share_class.currency, asset=p.asset,
        lending=config.mode.lending, borrowing=config.mode.borrowing, staking=config.mode.staking,
        hedged=config.hedged, stake_allocation=Decimal(str(p.stake_allocation)),
        target_ltv=Decimal(str(p.max_ltv)) * (1 - Decimal(str(p.max_stake_spread_move))),
        liquidation_threshold=Decimal(str(threshold)),
        hedge_weights={v: Decimal(str(w)) for v, w in p.hedge_allocation.items()} if config.hedged else {},
        margin_ratio_target=Decimal(str(p.margin_ratio_target)),
        deviation_threshold=Decimal(str(p.position_deviation_threshold)),
        min_order_usd=Decimal(str(p.min_order_usd)), spot_venue=config.mode.spot_venue,
        lst=lst, staking_venue=staking, unwind=p.unwind, gas_reserve=Decimal(str(p.gas_reserve_eth)),
        leverage=p.leverage, min_loop_usd=Decimal(str(p.min_loop_position_usd)),
        max_leverage_iterations=p.max_leverage_iterations,
        withdrawal_fees_usdt={name: Decimal(str(v.withdrawal_fee.get("USDT", 0))) for name, v in config.venues.items()
                              if v.kind == "cex"},
        withdrawal_fees_asset={name: Decimal(str(v.withdrawal_fee.get(p.asset, 0))) for name, v in
                               config.venues.items() if v.kind == "cex"},
        # `live` without a chain (no `chain.address_book`): capital stays on the venues it was deposited to.
        wallet_transfers=config.settings.runtime.mode != "live" or config.settings.chain.address_book is not None,
        lot_steps={name: Decimal(str(v.lot_step[p.asset])) for name, v in config.venues.items()
                   if v.kind == "cex" and p.asset in v.lot_step},
        spot_lot_step=_spot_lot_step(config),
    )


def _spot_lot_step(config: ResolvedConfig) -> Decimal:
    """The lot step of the asset's spot pair on the mode's spot venue (QTY, 0.001, where the catalog names none)."""
    venue = config.venues.get(config.mode.spot_venue or "")
    step = venue.spot_lot_step.get(config.params.asset) if venue is not None else None
    return Decimal(str(step)) if step is not None else Decimal("0.001")


def coarsest_lot(venue: VenueDefinition, asset: str) -> Decimal:
    """The coarser of `venue`'s perp and spot lot steps in `asset` (0.001 where the catalog names none): what one
    quantity traded on both of its markets must be a multiple of."""
    return max(Decimal(str(venue.lot_step.get(asset, 0.001))), Decimal(str(venue.spot_lot_step.get(asset, 0.001))))
