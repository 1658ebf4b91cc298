"""The book's delta against its share class: one definition for the strategy, the report and the metrics.

The delta of an asset (ETH, or BTC for BTC basis) is every holding of it — wallet ETH (a USDT class's gas debt
is negative ETH), free LSTs at the oracle rate, AAVE collateral at the oracle rate minus debt at the borrow
index, spot on every venue, signed perps, and anything in transit (any account of the ledger counts, so a
transfer booked in flight is not lost) — less what the share class holds by definition: nothing for a USDT
class, its NAV for a class in the asset itself (an ETH class is long ETH by design: its delta is measured
against its ETH benchmark, DOMAIN §4, and it never hedges, ADR-11). The holdings are `compute_exposure`'s
(exposure.py), so the on-chain and CEX figures the metrics show add up to the same number.

The drift is |delta| / hedge notional: the delta at the asset's price over Σ |perp size| × the venue's mark, as
the risk's `delta_warn_fraction` / `delta_act_fraction` are defined (DOMAIN §8 #15: fractions of the hedge
notional) and `basisd_delta_drift_ratio` shows it. In practice it is |delta| / Σ |size| (marks and the price
are within a basis point or so), so a move of the price alone barely moves it. A mode that does not hedge has no
drift, and neither has a book with no perp open (before the entry, after a flatten: its delta is gas money);
the strategy re-hedges a long left without its perps on its own (`daemon.domain.strategy`).

The bands are counted hour by hour (`band_counts`): how many hours the drift was above each band, and the
longest run of consecutive hours above it. The strategy decides once per market hour, so a run of hours is a
run of decision cycles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.exposure import compute_exposure
from daemon.domain.ledger import LedgerSnapshot
from daemon.domain.market import MarketState
from daemon.domain.pnl import nav

ZERO = Decimal(0)
DECISION_CYCLE_HOURS = 1  # the strategy actor decides once per market hour


@dataclass(frozen=True, slots=True)
class BookDelta:
    asset: str
    holdings: Decimal  # every holding of the asset, in its units (perps signed)
    benchmark: Decimal  # what the share class holds by definition: 0 (USDT class), the NAV (a class in the asset)
    hedge: Decimal  # Σ |perp size| in the asset
    price_usd: Decimal  # of the asset (the valuation price the NAV uses)
    hedge_notional_usd: Decimal  # Σ |perp size| × the venue's mark
    hedged: bool = True  # the mode hedges this asset; False: no drift to measure

    @property
    def delta(self) -> Decimal:
        """Signed, in the asset: + long against the share class (the hedge must grow), − short."""
        return self.holdings - self.benchmark

    @property
    def drift(self) -> Decimal | None:
        """|delta| / hedge notional; None when there is no hedge to drift from (an unhedged mode, a flat book)."""
        return drift(self.delta, self.price_usd, self.hedge_notional_usd, self.hedged)


def drift(delta: Decimal, price_usd: Decimal, hedge_notional_usd: Decimal, hedged: bool = True) -> Decimal | None:
    """|delta| × price / hedge notional; None for a mode that does not hedge or a book with no perp open."""
    return abs(delta) * price_usd / hedge_notional_usd if hedged and hedge_notional_usd else None


def benchmark_holding(share_class: str, asset: str, equity: Decimal) -> Decimal:
    """The asset a share class holds by definition: its whole NAV (`equity`, in its own currency) when the
    class is the asset, nothing otherwise (a USDT class is flat every asset)."""
    return equity if share_class == asset else ZERO


def book_delta(snapshot: LedgerSnapshot, market: MarketState, share_class: str, asset: str = "ETH",
               hedged: bool = True) -> BookDelta:
    """The delta of `asset` held in `snapshot` at `market`, against `share_class` (module docstring); `hedged`:
    whether the mode hedges it (an ETH share class never does)."""
    exposure = compute_exposure(snapshot, market)
    hedge = sum((abs(p.size) for p in exposure.perps if p.asset == asset), ZERO)
    in_class = share_class == asset
    benchmark = benchmark_holding(share_class, asset, nav(snapshot, market, share_class) if in_class else ZERO)
    return BookDelta(asset, exposure.net_delta(asset), benchmark, hedge, market.price_usd(asset),
                     exposure.hedge_notional_usd(asset), hedged=hedged and not in_class)


# --- bands ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BandCount:
    band: Decimal  # a fraction of the hedge
    hours_outside: int
    longest_run_cycles: int  # consecutive decision cycles (hours) above the band
    hours: int  # hours counted (the whole window)

    @property
    def fraction_outside(self) -> float:
        return self.hours_outside / self.hours if self.hours else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"band": str(self.band), "hours_outside": self.hours_outside,
                "fraction_outside": round(self.fraction_outside, 6), "longest_run_cycles": self.longest_run_cycles}


def band_counts(drifts: Iterable[Decimal | None], bands: Mapping[str, Decimal]) -> dict[str, BandCount]:
    """For each named band, the hours whose drift was above it and the longest run of such hours. An hour with
    no drift (no hedge to drift from) is inside every band."""
    values = list(drifts)
    out: dict[str, BandCount] = {}
    for name, band in bands.items():
        outside = longest = run = 0
        for d in values:
            if d is not None and d > band:
                outside += 1
                run += 1
                longest = max(longest, run)
            else:
                run = 0
        out[name] = BandCount(band, outside, longest, len(values))
    return out


def delta_bands_summary(drifts: Iterable[Decimal | None], warn: Decimal, act: Decimal,
                        rebalance_band: Decimal | None) -> dict[str, object]:
    """`summary.json`'s `delta_bands`: hours outside the alert's warn level and the risk's act level (both from
    the config), the longest run outside each in decision cycles, the largest drift seen, and the band the
    strategy rebalances at (None for a mode that does not hedge)."""
    values = list(drifts)
    finite = [d for d in values if d is not None]
    counts = band_counts(values, {"warn": warn, "act": act})
    return {
        **{name: c.to_dict() for name, c in counts.items()},
        "hours": len(values), "hours_hedged": len(finite), "decision_cycle_hours": DECISION_CYCLE_HOURS,
        "max_drift": f"{max(finite):.6f}" if finite else None,
        "rebalance_band": str(rebalance_band) if rebalance_band is not None else None,
    }
