"""Load, resolve and cross-check a configuration; every mistake becomes one `ConfigProblem`.

A run is configured by one root YAML file (see `configs/replay.yaml`) plus the catalog files it names:
`modes/<mode>.yaml`, `share_classes/<class>.yaml` and `venues/<venue>.yaml` under the catalog directory.
Each problem names the file (or environment variable), the dotted key, and what was expected, so an
operator can fix all of them in one pass. Contradictions that cannot be resolved (a USDT share class that
stakes without a hedge, ADR-26) are errors; settings that can be derived (an ETH share class never hedges,
ADR-11) are corrected with a warning.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from daemon.errors import ConfigError, ConfigProblem
from daemon.settings import (
    CREDENTIAL_FILES,
    CREDENTIALS_DIRECTORY_ENV,
    ModeDefinition,
    RiskSettings,
    Settings,
    ShareClassDefinition,
    StrategyParams,
    VenueDefinition,
)

M = TypeVar("M", bound=BaseModel)

_CATALOG_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_SECRET_SECTIONS = ("credentials",)


@dataclass(frozen=True)
class ResolvedConfig:
    path: Path
    settings: Settings
    mode: ModeDefinition
    params: StrategyParams
    share_class: ShareClassDefinition
    venues: dict[str, VenueDefinition]
    warnings: tuple[str, ...]

    @property
    def hedged(self) -> bool:
        return self.mode.basis_trade


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every way it can fail into a `ConfigError` that names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(path), "(file)", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), "(file)", f"cannot be read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(syntax)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(str(path), where, f"not valid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "(top level)",
                                         f"expected a mapping of keys, found {type(data).__name__}")])
    return data


def _problems(
    exc: ValidationError, source: str, prefix: str = "", env_prefix: str | None = None
) -> list[ConfigProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join(([prefix] if prefix else []) + loc) or "(top level)"
        where = source
        if env_prefix is not None:
            env_name = _env_source(env_prefix, loc)
            if env_name is not None:
                where = f"environment variable {env_name}"
        kind = err["type"]
        if kind == "missing":
            message = "required key is missing"
        elif kind == "extra_forbidden":
            message = "unknown key (not a setting here; check the spelling)"
        else:
            message = err["msg"]
            secret = loc and loc[0] in _SECRET_SECTIONS
            if not secret and kind not in ("value_error", "assertion_error") and "input" in err:
                message += f" (was {err['input']!r})"
        out.append(ConfigProblem(where, key, message))
    return out


def _env_source(env_prefix: str, loc: list[str]) -> str | None:
    """The environment variable that supplied `loc` (or one of its parents), if any."""
    for depth in range(len(loc), 0, -1):
        name = env_prefix + "__".join(loc[:depth]).upper()
        if any(k.upper() == name for k in os.environ):
            return name
    return None


def _validate(model: type[M], data: dict[str, Any], source: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, source, prefix)) from None


def _catalog_file(catalog: Path, kind: str, name: str, root: Path, key: str) -> Path:
    if not _CATALOG_NAME.match(name):
        raise ConfigError([ConfigProblem(str(root), key,
                                         f"{name!r} is not a catalog name (lowercase letters, digits, _ and -)")])
    path = catalog / kind / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (catalog / kind).glob("*.yaml"))
        raise ConfigError([ConfigProblem(str(root), key,
                                         f"no {kind} named {name!r} in {catalog / kind} (available: "
                                         f"{', '.join(available) or 'none'})")])
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_settings(path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """The root settings alone: YAML file (with command-line `overrides` merged in) overridden by `BASISD_*`
    environment variables."""
    data = _merge(read_yaml(path), overrides or {})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, str(path), env_prefix="BASISD_")) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ResolvedConfig:
    """Load the root file and its catalog entries; raise `ConfigError` listing every problem found."""
    path = Path(path)
    settings = load_settings(path, overrides)
    strategy = settings.strategy
    catalog = (path.parent / strategy.catalog_dir).resolve()

    problems: list[ConfigProblem] = []
    loaded: dict[str, Any] = {}

    def attempt(label: str, fn: Any) -> None:
        try:
            loaded[label] = fn()
        except ConfigError as exc:
            problems.extend(exc.problems)

    def load_entry(kind: str, name: str, key: str, model: type[M]) -> M:
        file = _catalog_file(catalog, kind, name, path, key)
        entry = _validate(model, read_yaml(file), str(file))
        if getattr(entry, "name", name) != name:
            raise ConfigError([ConfigProblem(str(file), "name", f"must match the file name {name!r}")])
        return entry

    attempt("mode", lambda: load_entry("modes", strategy.mode, "strategy.mode", ModeDefinition))
    attempt("share_class", lambda: load_entry("share_classes", strategy.share_class, "strategy.share_class",
                                              ShareClassDefinition))
    if len(set(strategy.venues)) != len(strategy.venues):
        problems.append(ConfigProblem(str(path), "strategy.venues", "lists a venue twice"))
    for i, venue in enumerate(strategy.venues):
        attempt(f"venue:{venue}",
                lambda v=venue, i=i: load_entry("venues", v, f"strategy.venues[{i}]", VenueDefinition))
    if problems:
        raise ConfigError(problems)

    mode: ModeDefinition = loaded["mode"]
    share_class: ShareClassDefinition = loaded["share_class"]
    venues = {name: loaded[f"venue:{name}"] for name in strategy.venues}
    mode_file = str(catalog / "modes" / f"{mode.name}.yaml")
    replay = settings.replay
    if replay.source == "history" and replay.data_dir and not (path.parent / replay.data_dir).is_dir():
        raise ConfigError([ConfigProblem(str(path), "replay.data_dir",
                                         f"{path.parent / replay.data_dir} is not a directory")])
    params = _merge_params(mode, strategy.params, mode_file, str(path))
    mode, warnings = _cross_check(path, mode_file, settings, mode, params, share_class, venues)
    warnings = [*_shadowed_credential_files(), *warnings]
    return ResolvedConfig(path, settings, mode, params, share_class, venues, tuple(warnings))


def _shadowed_credential_files() -> list[str]:
    """Credential files an environment variable overrides: the environment wins, but one of the two is stale."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        return []
    shadowed = []
    for name, key in CREDENTIAL_FILES.items():
        env_name = _env_source("BASISD_", list(key))
        if env_name is not None and (Path(directory) / name).exists():
            shadowed.append(f"{Path(directory) / name}: {'.'.join(key)}: ignored: environment "
                            f"variable {env_name} sets it too, and the environment wins")
    return shadowed


def _merge_params(mode: ModeDefinition, overrides: dict[str, Any], mode_file: str, root: str) -> StrategyParams:
    merged = {**mode.params.model_dump(exclude_unset=True), **overrides}
    try:
        return StrategyParams.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for p in _problems(exc, mode_file, "params"):
            first = p.key.split(".")[1] if "." in p.key else ""
            if first in overrides:
                p = ConfigProblem(root, "strategy." + p.key, p.message)
            problems.append(p)
        raise ConfigError(problems) from None


def _cross_check(
    root: Path,
    mode_file: str,
    settings: Settings,
    mode: ModeDefinition,
    params: StrategyParams,
    share_class: ShareClassDefinition,
    venues: dict[str, VenueDefinition],
) -> tuple[ModeDefinition, list[str]]:
    """Checks that span files. Returns the mode (corrected where derivable) and the warnings."""
    warnings: list[str] = []
    src = str(root)
    if share_class.hedge == "never" and mode.basis_trade:
        warnings.append(f"{mode_file}: basis_trade: share class {share_class.name!r} never hedges (ADR-11); "
                        "corrected to false")
        mode = mode.model_copy(update={"basis_trade": False})
    problems = [
        *_share_class_problems(src, mode_file, mode, share_class),
        *_venue_problems(src, mode_file, settings, mode, params, venues),
        *_hedge_problems(src, mode_file, mode, params, venues),
    ]
    if problems:
        raise ConfigError(problems)
    return mode, warnings


def _share_class_problems(
    src: str, mode_file: str, mode: ModeDefinition, share_class: ShareClassDefinition
) -> list[ConfigProblem]:
    problems = []
    if share_class.name not in mode.share_classes:
        problems.append(ConfigProblem(src, "strategy.share_class",
                                      f"mode {mode.name!r} runs only with share class "
                                      f"{' or '.join(mode.share_classes)}, not {share_class.name!r}"))
    if share_class.hedge == "always" and mode.staking and not mode.basis_trade:
        problems.append(ConfigProblem(mode_file, "basis_trade",
                                      f"share class {share_class.name!r} must hedge the ETH it stakes "
                                      "(ADR-26): set basis_trade: true, or use an ETH share class"))
    return problems


def _venue_problems(
    src: str, mode_file: str, settings: Settings, mode: ModeDefinition, params: StrategyParams,
    venues: dict[str, VenueDefinition],
) -> list[ConfigProblem]:
    problems = []
    kinds = {v.kind for v in venues.values()}
    problems += [ConfigProblem(src, "strategy.venues", f"mode {mode.name!r} needs a {kind} venue; none is listed")
                 for kind in mode.required_venue_kinds if kind not in kinds]
    if mode.staking:
        if params.lst is None:
            problems.append(ConfigProblem(mode_file, "params.lst", "a staking mode must name its LST"))
        elif not any(v.kind == "staking" and v.lst == params.lst for v in venues.values()):
            problems.append(ConfigProblem(src, "strategy.venues", f"no staking venue mints {params.lst} (params.lst)"))
    if params.rewards_mode != "base_only" and params.lst != "weETH":
        problems.append(ConfigProblem(mode_file, "params.rewards_mode", f"{params.rewards_mode} needs weETH: only "
                                      f"EtherFi pays EIGEN/ETHFI rewards (lst is {params.lst}; use base_only)"))
    if mode.borrowing:
        problems += [ConfigProblem(mode_file, "params.max_ltv",
                                   f"{params.max_ltv:g} exceeds {v.name}'s e-mode LTV {v.emode_ltv:g}")
                     for v in venues.values()
                     if v.kind == "lending" and v.emode_ltv is not None and params.max_ltv > v.emode_ltv]
    if mode.spot_venue is not None and mode.spot_venue not in venues:
        problems.append(ConfigProblem(src, "strategy.venues",
                                      f"mode {mode.name!r} buys spot on {mode.spot_venue!r}, which is not listed"))
    urgent = settings.risk.margin_urgent_ratio
    problems += [ConfigProblem(src, "risk.margin_urgent_ratio",
                               f"{urgent:g} must be above {v.name}'s maintenance margin ratio "
                               f"{v.maintenance_margin_ratio:g}")
                 for v in venues.values()
                 if v.maintenance_margin_ratio is not None and urgent <= v.maintenance_margin_ratio]
    return problems


def _hedge_problems(
    src: str, mode_file: str, mode: ModeDefinition, params: StrategyParams, venues: dict[str, VenueDefinition]
) -> list[ConfigProblem]:
    if not mode.basis_trade:
        return []
    problems = []
    if not params.hedge_allocation:
        problems.append(ConfigProblem(mode_file, "params.hedge_allocation",
                                      "a hedged mode needs perp venue weights that sum to 1"))
    for venue, weight in params.hedge_allocation.items():
        definition = venues.get(venue)
        if definition is None:
            if weight > 0:
                problems.append(ConfigProblem(src, "strategy.venues",
                                              f"hedge_allocation gives {venue!r} weight {weight:g} but the venue "
                                              "is not listed"))
        elif definition.kind != "cex" or params.asset not in definition.perp_symbols:
            problems.append(ConfigProblem(mode_file, f"params.hedge_allocation.{venue}",
                                          f"{venue!r} has no {params.asset} perpetual to hedge with"))
    return problems


def diff_reloadable(old: Settings, new: Settings) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """What a SIGHUP may apply (risk thresholds) and which other changed keys need a restart."""
    changed = [
        (f"risk.{field}", getattr(old.risk, field), getattr(new.risk, field))
        for field in RiskSettings.model_fields
        if getattr(old.risk, field) != getattr(new.risk, field)
    ]
    ignored = [
        section for section in Settings.model_fields
        if section != "risk" and getattr(old, section) != getattr(new, section)
    ]
    return changed, ignored
