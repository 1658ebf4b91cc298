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
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from daemon.config_sources import (
    env_name_for,
    env_names_inside,
    env_source_name,
    environment_problems,
    field_at,
    known_keys,
    read_yaml,
    shorten,
)
from daemon.data.history import CATALOG
from daemon.domain.synthetic import LST_MARKETS
from daemon.errors import ConfigError, ConfigProblem
from daemon.settings import (
    CREDENTIAL_FILES,
    CREDENTIALS_DIRECTORY_ENV,
    LIVE_STALENESS_S,
    MIN_CAPITAL,
    ModeDefinition,
    RiskSettings,
    Settings,
    ShareClassDefinition,
    StrategyParams,
    VenueCredentials,
    VenueDefinition,
)

M = TypeVar("M", bound=BaseModel)

_CATALOG_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
# The only staking rewards recorded (daemon.data.rewards reads EtherFi's files, and the simulated chain pays them on
# weETH): any other LST earns its oracle growth alone, so it runs with rewards_mode base_only.
REWARDS_LST = "weETH"
_SECRET_SECTIONS = ("credentials",)
LIVE_DATA_MODES = ("paper", "live")  # runs on the venues' live market data, on the wall clock
PAPER_STRATEGY_MODES = ("btc_basis", "eth_basis")  # CEX-only: what paper's simulated exchanges can carry
MARKET_VENUES = ("binance", "bybit", "okx")  # whose public market data daemon.venues.ccxt_market reads


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


_MAX_PROBLEMS = 50  # one line each: past this many, the rest are counted, not listed
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"})
_SCALARS = (str, int, float, bool, date, type(None))
_SHOWN_KEY = re.compile(r"[A-Za-z0-9_\-.]{0,40}")

Blame = Callable[[list[str]], str]  # the source (file or environment variable) that supplied a key


def _fail(problems: list[ConfigProblem]) -> NoReturn:
    if len(problems) > _MAX_PROBLEMS:
        rest = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], ConfigProblem("(more)", "(more)", f"{rest} more problem(s) not shown")]
    raise ConfigError(problems)


def _is_secret(loc: list[str]) -> bool:
    return bool(loc) and (loc[0] in _SECRET_SECTIONS or loc[:2] == ["api", "token"])


def _shown_key(model: type[BaseModel], loc: list[str]) -> str:
    """`loc` as printed. A key the settings do not define is the operator's text: under credentials it may be the
    secret itself (`{api_secret=XYZ}` is one key, "api_secret=XYZ"), so it is never shown; elsewhere it is cut
    at the first character no key name has, and at 40 characters."""
    shown = []
    for depth, part in enumerate(loc):
        if part in known_keys(model, loc[:depth]):
            shown.append(part)
        elif _is_secret(loc):
            shown.append("(a key not shown)")
        else:
            head = _SHOWN_KEY.match(part)
            prefix = head.group(0) if head else ""
            shown.append(prefix if prefix == part else prefix + "…")
    return ".".join(shown)


def _message(model: type[BaseModel], loc: list[str], err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        if _is_secret(loc):
            return ("unknown key (not shown: a key under credentials may hold the secret itself); expected one of: "
                    + ", ".join(known_keys(model, loc[:-1])))
        return "unknown key (not a setting here; check the spelling)"
    message = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    # Scalars only: a mapping or list may hold a secret, or be an alias bomb's expansion.
    if not _is_secret(loc) and kind not in ("value_error", "assertion_error") and "input" in err \
            and isinstance(value, _SCALARS):
        message += f" (was {shorten(repr(value))})"
    if kind in _BOUND_ERRORS:
        field = field_at(model, loc)
        reason = field.description if field is not None and field.description else ""
        if kind == "finite_number":
            reason = "no setting may be infinite or NaN"
        message += f"; {reason}" if reason else ""
    return message


def _problems(exc: ValidationError, model: type[BaseModel], blame: Blame, prefix: str = "") -> list[ConfigProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join(([prefix] if prefix else []) + [_shown_key(model, loc)] * bool(loc)) or "(top level)"
        out.append(ConfigProblem(blame(loc), key, _message(model, loc, err)))
    return out


def _file_blame(source: str) -> Blame:
    return lambda loc: source


def _root_blame(path: Path, overrides: dict[str, Any]) -> Blame:
    """Who supplied a root key: the environment variable that set it (the environment wins), the command line
    (an override of `basisd backtest`), else the file; a check of a whole section names every variable in it."""
    def blame(loc: list[str]) -> str:
        name = env_name_for(loc)
        if name is not None:
            return env_source_name(name)
        credential = _credential_file(loc)
        if credential is not None:
            return credential
        if _overridden(overrides, loc):
            return "command line"
        inside = env_names_inside(loc)
        if inside:
            return f"{path} with environment variable {', '.join(inside)}"
        return str(path)
    return blame


def _credential_file(loc: list[str]) -> str | None:
    """The file in $CREDENTIALS_DIRECTORY that supplied secret `loc`, if one did (it beats the YAML)."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        return None
    for name, key in CREDENTIAL_FILES.items():
        path = Path(directory) / name
        if list(key) == loc[:len(key)] and os.path.lexists(path):
            return str(path)
    return None


def _overridden(overrides: dict[str, Any], loc: list[str]) -> bool:
    node: Any = overrides
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return bool(loc) and not isinstance(node, dict)


def _reblame(problems: list[ConfigProblem], root: Path, blame: Blame) -> list[ConfigProblem]:
    """Problems found across files name the root file; the key may have come from the environment instead."""
    return [ConfigProblem(blame(re.sub(r"\[\d+\]", "", p.key).split(".")), p.key, p.message)
            if p.source == str(root) else p for p in problems]


def _validate(model: type[M], data: dict[str, Any], source: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _fail(_problems(exc, model, _file_blame(source), prefix))


def _catalog_file(catalog: Path, kind: str, name: str, root: Path, key: str) -> Path:
    if not _CATALOG_NAME.match(name):
        raise ConfigError([ConfigProblem(str(root), key, f"{shorten(repr(name), 60)} is not a catalog name "
                                                         "(lowercase letters, digits, _ and -)")])
    path = catalog / kind / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (catalog / kind).glob("*.yaml"))
        raise ConfigError([ConfigProblem(str(root), key,
                                         f"no {kind} named {shorten(repr(name), 60)} in {catalog / kind} (available: "
                                         f"{', '.join(available) or 'none'})")])
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_settings(path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """The root settings alone: YAML file (with command-line `overrides` merged in) overridden by `BASISD_*`
    environment variables. Raises `ConfigError`, and nothing else, for any bad input (SIGHUP relies on it)."""
    overrides = overrides or {}
    problems = environment_problems()
    try:
        data = _merge(read_yaml(path), overrides)
    except ConfigError as exc:
        _fail([*problems, *exc.problems])
    if problems:
        _fail(problems)  # the variables pydantic-settings would misread, or ignore, are fixed first
    blame = _root_blame(path, overrides)
    # pydantic-settings takes keyword arguments such as `_env_prefix`, `_secrets_dir` or `_cli_parse_args` to
    # configure itself: from a file, one would turn the environment off, read other files, or parse sys.argv.
    private = [key for key in data if key.startswith("_")]
    if private:
        _fail([ConfigProblem(blame([key]), _shown_key(Settings, [key]),
                             "unknown key (not a setting here; check the spelling)") for key in private])
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        _fail(_problems(exc, Settings, blame))
    except SettingsError as exc:  # not expected after environment_problems(); its text names no value
        _fail([ConfigProblem("environment", "(BASISD_*)", shorten(str(exc), 200))])
    if settings.runtime.mode == "backtest" and not _overridden(overrides, ["runtime", "mode"]):
        _fail([ConfigProblem(blame(["runtime", "mode"]), "runtime.mode",
                             "'backtest' is set by `basisd backtest` itself; a config says 'replay'")])
    return _live_staleness(settings)


def _live_staleness(settings: Settings) -> Settings:
    """On live market data, staleness is judged in seconds: the limits neither the file nor the environment set
    take the live defaults (`LIVE_STALENESS_S`) instead of the replay's hours."""
    if settings.runtime.mode not in LIVE_DATA_MODES:
        return settings
    unset = {k: v for k, v in LIVE_STALENESS_S.items() if k not in settings.risk.model_fields_set}
    if not unset:
        return settings
    return settings.model_copy(update={"risk": settings.risk.model_copy(update=unset)})


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ResolvedConfig:
    """Load the root file and its catalog entries; raise `ConfigError` listing every problem found."""
    path = Path(path)
    settings = load_settings(path, overrides)
    root_blame = _root_blame(path, overrides or {})
    strategy = settings.strategy
    try:
        catalog = (path.parent / strategy.catalog_dir).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        _fail([ConfigProblem(root_blame(["strategy", "catalog_dir"]), "strategy.catalog_dir",
                             f"{path.parent / strategy.catalog_dir} cannot be resolved: {shorten(str(exc))}")])

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
        _fail(_reblame(problems, path, root_blame))

    mode: ModeDefinition = loaded["mode"]
    share_class: ShareClassDefinition = loaded["share_class"]
    venues = {name: loaded[f"venue:{name}"] for name in strategy.venues}
    mode_file = str(catalog / "modes" / f"{mode.name}.yaml")
    replay = settings.replay
    if replay.source == "history" and replay.data_dir and not (path.parent / replay.data_dir).is_dir():
        _fail([ConfigProblem(root_blame(["replay", "data_dir"]), "replay.data_dir",
                             f"{path.parent / replay.data_dir} is not a directory")])
    params = _merge_params(mode, strategy.params, mode_file, root_blame)
    try:
        mode, warnings = _cross_check(path, mode_file, settings, mode, params, share_class, venues)
    except ConfigError as exc:
        _fail(_reblame(exc.problems, path, root_blame))
    warnings = [*_shadowed_credential_files(), *warnings]
    return ResolvedConfig(path, settings, mode, params, share_class, venues, tuple(warnings))


def _shadowed_credential_files() -> list[str]:
    """Credential files an environment variable overrides: the environment wins, but one of the two is stale."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        return []
    shadowed = []
    for name, key in CREDENTIAL_FILES.items():
        env_name = env_name_for(list(key))
        if env_name is not None and (Path(directory) / name).exists():
            shadowed.append(f"{Path(directory) / name}: {'.'.join(key)}: ignored: environment "
                            f"variable {env_name} sets it too, and the environment wins")
    return shadowed


def _merge_params(mode: ModeDefinition, overrides: dict[str, Any], mode_file: str, root_blame: Blame
                  ) -> StrategyParams:
    merged = {**mode.params.model_dump(exclude_unset=True), **overrides}
    try:
        return StrategyParams.model_validate(merged)
    except ValidationError as exc:
        def blame(loc: list[str]) -> str:
            # An override in the root's strategy.params (or the environment) is blamed there, with its full key.
            return root_blame(["strategy", "params", *loc]) if loc and loc[0] in overrides else mode_file

        problems = []
        for p in _problems(exc, StrategyParams, blame, "params"):
            first = p.key.split(".")[1] if "." in p.key else ""
            problems.append(ConfigProblem(p.source, "strategy." + p.key, p.message) if first in overrides else p)
        _fail(problems)


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
        *_capital_problems(src, mode_file, settings, params, share_class),
        *_venue_problems(src, mode_file, settings, mode, params, venues),
        *_hedge_problems(src, mode_file, mode, params, venues),
        *_runnable_problems(src, mode_file, settings, mode, params, share_class, venues),
        *_chaos_problems(src, settings, venues),
        *_paper_problems(src, settings, mode, params, venues),
    ]
    if problems:
        raise ConfigError(problems)
    return mode, warnings


def _capital_problems(src: str, mode_file: str, settings: Settings, params: StrategyParams,
                      share_class: ShareClassDefinition) -> list[ConfigProblem]:
    capital, currency = settings.strategy.initial_capital, share_class.currency
    least = MIN_CAPITAL[currency]
    if capital < least:
        return [ConfigProblem(src, "strategy.initial_capital",
                              f"{capital:g} {currency} is below the least a run accepts, {least:g} {currency}: "
                              "below it the entry's legs fall under the venues' minimum order size")]
    if currency == "ETH" and capital <= params.gas_reserve_eth:
        return [ConfigProblem(src, "strategy.initial_capital",
                              f"{capital:g} ETH leaves nothing to invest once params.gas_reserve_eth "
                              f"({params.gas_reserve_eth:g} ETH, {mode_file}) is kept back for gas")]
    return []


def running_actors(settings: Settings) -> list[str]:
    """The actors `daemon.app.Daemon` runs with these settings (keep in step with its composition)."""
    runtime = settings.runtime.mode
    names = ["positions", "fills", "execution", "risk", "strategy", "market_data", "status"]
    names += ["recorder"] * (runtime == "backtest")
    names += ["reconciler"] * settings.reconcile.enabled
    names += ["api"] * (settings.api.enabled and runtime != "backtest")
    return names


def _chaos_problems(src: str, settings: Settings, venues: dict[str, VenueDefinition]) -> list[ConfigProblem]:
    """Drills that name something this run does not have: refused before anything starts, as `run` would."""
    chaos, problems = settings.chaos, []
    exchanges = [name for name, v in venues.items() if v.kind == "cex"]
    problems += [ConfigProblem(src, _shown_key(Settings, ["chaos", "unreported_usdt", name]),
                               f"no simulated exchange named {shorten(repr(name), 40)} "
                               f"(exchanges: {', '.join(exchanges) or 'none'})")
                 for name in chaos.unreported_usdt if name not in exchanges]
    problems += [ConfigProblem(src, "chaos.unreachable_accounts", f"no simulated exchange named "
                               f"{shorten(repr(name), 40)} (exchanges: {', '.join(exchanges) or 'none'})")
                 for name in chaos.unreachable_accounts if name not in exchanges]
    actors = running_actors(settings)
    if chaos.fail_actor is not None and chaos.fail_actor not in actors:
        problems.append(ConfigProblem(src, "chaos.fail_actor", f"actor {chaos.fail_actor!r} does not run with this "
                                                               f"configuration (actors: {', '.join(actors)})"))
    return problems


def _paper_problems(src: str, settings: Settings, mode: ModeDefinition, params: StrategyParams,
                    venues: dict[str, VenueDefinition]) -> list[ConfigProblem]:
    """What paper and live cannot run: there is no chain adapter for AAVE or staking yet (paper simulates the
    exchanges at live prices, live trades them through ccxt); every exchange must be one whose data the daemon
    reads. Live also needs each venue's keys, and a state directory for the journal that numbers its runs."""
    runtime = settings.runtime.mode
    if runtime not in LIVE_DATA_MODES:
        return []
    problems = []
    on_chain = mode.lending or mode.borrowing or mode.staking
    if on_chain and runtime == "paper":
        problems.append(ConfigProblem(src, "strategy.mode", f"mode {mode.name!r} needs AAVE or staking on chain, "
                                                            "which paper does not simulate at live prices: paper "
                                                            f"runs {' or '.join(PAPER_STRATEGY_MODES)} (live runs "
                                                            "it with chain.address_book and the wallet's key)"))
    if runtime == "live":
        problems += _live_problems(src, settings, venues)
        if on_chain or settings.chain.address_book is not None:
            problems += _chain_problems(src, settings, mode.name)
    problems += _paper_venue_problems(src, mode, params, venues)
    market, risk, sup = settings.market, settings.risk, settings.supervisor
    if market.poll_interval_s >= risk.data_stale_after_s:
        problems.append(ConfigProblem(src, "market.poll_interval_s", f"{market.poll_interval_s:g} s must be below "
                                                                     f"risk.data_stale_after_s "
                                                                     f"({risk.data_stale_after_s:g} s), or every "
                                                                     "price is stale between two polls"))
    if market.poll_interval_s + market.request_timeout_s >= sup.heartbeat_timeout_s:
        problems.append(ConfigProblem(src, "market.poll_interval_s",
                                      f"{market.poll_interval_s:g} s plus market.request_timeout_s "
                                      f"({market.request_timeout_s:g} s) must be below "
                                      f"supervisor.heartbeat_timeout_s ({sup.heartbeat_timeout_s:g} s): the "
                                      "market-data actor beats once per poll"))
    if runtime == "paper" and market.paper_gas_gwei > risk.max_gas_price_gwei:
        problems.append(ConfigProblem(src, "market.paper_gas_gwei", f"{market.paper_gas_gwei:g} gwei is above "
                                                                    f"risk.max_gas_price_gwei "
                                                                    f"({risk.max_gas_price_gwei:g}): no entry "
                                                                    "would ever start"))
    if settings.venue_redirect.ca_file is not None:
        problems += _ca_file_problems(src, Path(src).parent / settings.venue_redirect.ca_file)
    return problems


def _live_problems(src: str, settings: Settings, venues: dict[str, VenueDefinition]) -> list[ConfigProblem]:
    """Live trades real accounts: every exchange needs its keys (named, never shown), client order ids must never
    repeat across restarts (the journal under runtime.state_dir numbers each run and prefixes its ids), and the
    drills that plant things on simulated exchanges have nothing to plant them on."""
    problems = []
    for name, v in venues.items():
        if v.kind != "cex" or name not in MARKET_VENUES:
            continue
        keys: VenueCredentials = getattr(settings.credentials, name)
        needed = ["api_key", "api_secret"] + (["passphrase"] if name == "okx" else [])
        problems += [ConfigProblem(src, f"credentials.{name}.{key}",
                                   f"live trades {name} with its API keys: set it (env "
                                   f"BASISD_{'__'.join(('CREDENTIALS', name, key)).upper()}, or the credential "
                                   f"file {name}_{key})") for key in needed if getattr(keys, key) is None]
    if not settings.runtime.state_dir:
        problems.append(ConfigProblem(src, "runtime.state_dir", "live needs a state directory: its journal numbers "
                                                                "each run, so that no client order id is ever "
                                                                "reused after a restart"))
    chaos = settings.chaos
    if chaos.unreported_usdt or chaos.unreachable_accounts or chaos.resting_orders_per_venue:
        problems.append(ConfigProblem(src, "chaos", "the drills plant balances and orders on simulated exchanges; "
                                                    "live trades real accounts: remove them"))
    return problems


def _chain_problems(src: str, settings: Settings, mode: str) -> list[ConfigProblem]:
    """An AAVE or staking mode in live trades the wallet on chain: it needs the market's address book, the RPC URL
    and the wallet's key (named, never shown); the fee cap must let an entry through under the risk limit's gas."""
    problems = []
    chain, creds = settings.chain, settings.credentials
    if chain.address_book is None:
        problems.append(ConfigProblem(src, "chain.address_book", f"mode {mode!r} trades AAVE on chain: name the "
                                                                 "market's address book (a JSON file; the local "
                                                                 "world writes one)"))
    else:
        book = Path(src).parent / chain.address_book
        if not book.is_file():
            problems.append(ConfigProblem(src, "chain.address_book", f"{book} is not a file"))
    for key, what in (("rpc_url", "the chain's JSON-RPC endpoint"), ("wallet_private_key", "the wallet's key")):
        if getattr(creds, key) is None:
            env = "BASISD_" + "__".join(("CREDENTIALS", key)).upper()
            problems.append(ConfigProblem(src, f"credentials.{key}", f"live on chain needs {what}: set it (env "
                                                                     f"{env}, or the credential file {key})"))
    return problems


def _paper_venue_problems(src: str, mode: ModeDefinition, params: StrategyParams,
                          venues: dict[str, VenueDefinition]) -> list[ConfigProblem]:
    """Every exchange must be one whose public data paper reads, listing the symbols it reads."""
    problems = []
    for i, (name, v) in enumerate(venues.items()):
        if v.kind != "cex":
            continue
        if name not in MARKET_VENUES:
            problems.append(ConfigProblem(src, f"strategy.venues[{i}]", f"paper reads market data from "
                                                                      f"{', '.join(MARKET_VENUES)} only, not {name!r}"))
        elif params.asset not in v.perp_symbols:
            problems.append(ConfigProblem(src, f"strategy.venues[{i}]", f"{name!r} lists no {params.asset} perpetual "
                                                                      "(perp_symbols) to read marks from"))
    exchanges = [name for name, v in venues.items() if v.kind == "cex"]
    spot = mode.spot_venue if mode.spot_venue in exchanges else next(iter(exchanges), None)
    for asset in dict.fromkeys((params.asset, "ETH")):  # ETH values the wallet's gas in every mode
        if spot is not None and asset not in venues[spot].spot_symbols:
            problems.append(ConfigProblem(src, "strategy.venues", f"{spot!r} lists no {asset} spot pair "
                                                                  "(spot_symbols) to read the spot price from"))
    return problems


def _ca_file_problems(src: str, path: Path) -> list[ConfigProblem]:
    """The certificate the redirected venues must present: loaded here as the run will load it."""
    if not path.is_file():
        return [ConfigProblem(src, "venue_redirect.ca_file", f"{path} is not a file")]
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [ConfigProblem(src, "venue_redirect.ca_file", f"{path} cannot be loaded as a PEM certificate: "
                                                             f"{shorten(str(exc))}")]
    return []


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
    if params.rewards_mode != "base_only" and params.lst != REWARDS_LST:
        problems.append(ConfigProblem(*_param(src, mode_file, settings, "rewards_mode"),
                                      f"{params.rewards_mode} needs {REWARDS_LST}: only EtherFi pays EIGEN/ETHFI "
                                      f"rewards (lst is {params.lst}; use base_only)"))
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


def _param(src: str, mode_file: str, settings: Settings, name: str) -> tuple[str, str]:
    """Where params.`name` came from: the root's strategy.params overrides the mode file's."""
    return (src, f"strategy.params.{name}") if name in settings.strategy.params else (mode_file, f"params.{name}")


def _runnable_problems(
    src: str, mode_file: str, settings: Settings, mode: ModeDefinition, params: StrategyParams,
    share_class: ShareClassDefinition, venues: dict[str, VenueDefinition],
) -> list[ConfigProblem]:
    """Combinations every single key accepts but that cannot run: each would start, then fail (or churn) on every
    decision cycle of the run. Issue 11 found the first one (an LST the replay did not publish); these are the
    rest found by running every mode with each parameter at its edges."""
    problems = []
    venue_file = Path(mode_file).parent.parent / "venues"
    # An LST is runnable when the simulated market carries it and the chain can stake and supply it; on recorded
    # history, when its AAVE oracle rate and reserve index are series the data catalog knows.
    for v in venues.values():
        if v.kind == "staking" and v.lst not in LST_MARKETS:
            problems.append(ConfigProblem(str(venue_file / f"{v.name}.yaml"), "lst",
                                          f"{v.lst!r} is not an LST the daemon can stake (known: "
                                          f"{', '.join(sorted(LST_MARKETS))})"))
    if mode.staking and params.lst is not None and settings.replay.source == "history":
        missing = [k for k in (f"oracle:{params.lst}/ETH", f"aave:{params.lst}:liquidity_index") if k not in CATALOG]
        if missing:
            problems.append(ConfigProblem(*_param(src, mode_file, settings, "lst"),
                                          f"the history has no {' and no '.join(missing)} series for {params.lst}"))
    if mode.staking and params.asset != "ETH":
        problems.append(ConfigProblem(*_param(src, mode_file, settings, "asset"),
                                      f"a staking mode's asset is ETH (its LST {params.lst} is staked ETH), not "
                                      f"{params.asset}"))
    # The ETH class cannot run gas debt: with nothing kept back, every transaction of the entry reverts, every hour.
    if share_class.currency == "ETH" and (mode.staking or mode.lending) and params.gas_reserve_eth <= 0:
        problems.append(ConfigProblem(*_param(src, mode_file, settings, "gas_reserve_eth"),
                                      "must be above 0 for an ETH share class that transacts on chain: its wallet "
                                      "ETH pays every transaction's gas"))
    if mode.basis_trade:
        # A hedge that opens, or is topped up to, a margin ratio at or below the warning level is in warning from
        # its first hour: each top-up lands below the line that triggers the next (and below the urgent level the
        # risk actor only reduces, so every instruction fails).
        warning = settings.risk.margin_warning_ratio
        if mode.staking:
            a = params.stake_allocation
            entry = (1 - a) / a
            if entry <= warning:
                problems.append(ConfigProblem(*_param(src, mode_file, settings, "stake_allocation"),
                                              f"{a:g} leaves a CEX margin ratio of {entry:.3g} at entry ((1 − a) / a),"
                                              f" not above risk.margin_warning_ratio {warning:g}"))
        if params.margin_ratio_target <= warning:
            problems.append(ConfigProblem(*_param(src, mode_file, settings, "margin_ratio_target"),
                                          f"{params.margin_ratio_target:g} must be above risk.margin_warning_ratio "
                                          f"{warning:g}: the margin is topped up to it once below that level"))
    return problems


def reload_problems(config: ResolvedConfig, new: Settings) -> list[ConfigProblem]:
    """What a SIGHUP's new risk thresholds contradict in the running configuration (a margin warning level above
    the mode's margin target, an urgent level under a venue's maintenance margin): the checks across files that
    `load_config` made at start, made again with the thresholds that would apply. Empty: the reload may apply."""
    settings = config.settings.model_copy(update={"risk": new.risk})
    catalog = (config.path.parent / settings.strategy.catalog_dir).resolve()
    mode_file = str(catalog / "modes" / f"{config.mode.name}.yaml")
    try:
        _cross_check(config.path, mode_file, settings, config.mode, config.params, config.share_class, config.venues)
    except ConfigError as exc:
        return list(exc.problems)
    return []


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
