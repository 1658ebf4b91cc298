"""Every run the catalog accepts, generated from `configs/` (never listed by hand): each mode, on each share class
it allows, and for a staking mode on each LST some staking venue mints (etherfi: weETH, lido: wstETH, and whatever
venue file is added next). A new mode, share class or staking venue is covered by the tests that use this, the
moment its file exists.

The venues of a combination are what the mode needs, drawn from the catalog: its hedge venues (the weights of
`params.hedge_allocation`), its spot venue, every lending venue when it lends or borrows, and the one staking venue
that mints the LST. Rewards are EtherFi's only (`daemon.config.REWARDS_LST`): on another LST the mode runs with
`rewards_mode: base_only`, as check-config demands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.config import REWARDS_LST
from daemon.settings import ModeDefinition, ShareClassDefinition, VenueDefinition
from tests.conftest import CONFIGS

CAPITAL = {"USDT": 100_000, "ETH": 30}  # in the share class's currency: well above MIN_CAPITAL, as a desk would run


@dataclass(frozen=True)
class Combination:
    mode: str
    share_class: str
    currency: str
    venues: tuple[str, ...]
    staking_venue: str | None = None
    lst: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the root config's strategy.params overrides

    @property
    def id(self) -> str:
        return "-".join([self.mode, self.share_class, *([self.lst] if self.lst else [])])

    @property
    def capital(self) -> int:
        return CAPITAL[self.currency]

    def strategy(self, catalog: Path = CONFIGS) -> dict[str, Any]:
        """The root config's `strategy` section for this combination."""
        out: dict[str, Any] = {"mode": self.mode, "share_class": self.share_class, "venues": list(self.venues),
                               "initial_capital": self.capital, "catalog_dir": str(catalog)}
        if self.params:
            out["params"] = dict(self.params)
        return out


def _entries(catalog: Path, kind: str, model: Any) -> list[Any]:
    return [model.model_validate(yaml.safe_load(p.read_text())) for p in sorted((catalog / kind).glob("*.yaml"))]


def combinations(catalog: Path = CONFIGS) -> list[Combination]:
    modes: list[ModeDefinition] = _entries(catalog, "modes", ModeDefinition)
    classes = {c.name: c for c in _entries(catalog, "share_classes", ShareClassDefinition)}
    venues: list[VenueDefinition] = _entries(catalog, "venues", VenueDefinition)
    stakers = [v for v in venues if v.kind == "staking"]
    out = []
    for mode in modes:
        for class_name in mode.share_classes:
            share_class = classes[class_name]
            hedged = mode.basis_trade and share_class.hedge != "never"
            needed: list[str] = []
            if "cex" in mode.required_venue_kinds or hedged:
                weights = mode.params.hedge_allocation
                needed += [v for v, w in weights.items() if w > 0] if weights else \
                    [v.name for v in venues if v.kind == "cex"]
            if mode.spot_venue is not None and mode.spot_venue not in needed:
                needed.append(mode.spot_venue)
            if mode.lending or mode.borrowing or "lending" in mode.required_venue_kinds:
                needed += [v.name for v in venues if v.kind == "lending"]
            if not (mode.staking or "staking" in mode.required_venue_kinds):
                out.append(Combination(mode.name, class_name, share_class.currency, tuple(needed)))
                continue
            for staker in stakers:
                assert staker.lst is not None  # a staking venue must name it (settings)
                params: dict[str, Any] = {"lst": staker.lst}
                if staker.lst != REWARDS_LST and mode.params.rewards_mode != "base_only":
                    params["rewards_mode"] = "base_only"
                out.append(Combination(mode.name, class_name, share_class.currency, (*needed, staker.name),
                                       staker.name, staker.lst, params))
    return out


COMBINATIONS = combinations()
COMBINATION_IDS = [c.id for c in COMBINATIONS]
