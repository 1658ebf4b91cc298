"""Settings: frozen pydantic models, one per concern, with units in their names.

The root (`Settings`) is read from one YAML file and overridden by environment variables
`BASISD_<SECTION>__<KEY>` (e.g. `BASISD_METRICS__PORT=9500`); secrets may also come from files in
`$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`, see "secrets" below). The strategy section names a
mode, a share class and venues, each defined by its own file under `configs/modes/`, `configs/share_classes/` and
`configs/venues/` (see `daemon.config`, which loads and cross-checks them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from daemon.domain.reconcile import Tolerance


class Frozen(BaseModel):
    # allow_inf_nan=False: no setting means anything at infinity or NaN, and either passes every bound check
    # (inf > 0; NaN compares false with everything), so they are refused everywhere, whatever else a field allows.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL character, which no path may hold")
    return value


# A path as written in a config: refused at load time if no file system could hold it (os calls raise ValueError).
PathText = Annotated[str, AfterValidator(_no_nul)]

# Bounds shared by several fields; each exists so that a typo or a unit mix-up is refused, not run.
DAY_S = 86_400.0
HOUR_S = 3_600.0
MAX_USD = 1e9  # a threshold above a billion dollars is a typo, not a risk limit


# --- process ---------------------------------------------------------------------------------------------


class BacktestSettings(Frozen):
    out_dir: PathText = Field("backtest-out", description="Where summary.json, hourly.csv and events.jsonl go")


class RuntimeSettings(Frozen):
    mode: Literal["live", "paper", "replay", "backtest"] = "replay"
    status_interval_s: float = Field(
        5.0, ge=0.1, le=DAY_S, description="Seconds between status lines: 0.1 at least (more often floods the log), "
                                           "a day at most")
    run_for_s: float | None = Field(None, gt=0, le=3650 * DAY_S,
                                    description="Stop after this many real seconds, ten years at most (None: run on)")
    state_dir: PathText | None = Field(
        None, description="Where state that must survive a restart is kept (the drawdown breaker); unset, a "
                          "restart starts afresh, as a replay should. Live: the unit's StateDirectory."
    )


class SupervisorSettings(Frozen):
    # Floors of 10 ms: below, a restart or heartbeat loop spins the event loop; ceilings of an hour: longer, a
    # failed actor stays down unnoticed (a heartbeat at most each minute, as the watchdog needs).
    restart_backoff_initial_s: float = Field(0.5, ge=0.01, le=HOUR_S)
    restart_backoff_max_s: float = Field(30.0, ge=0.01, le=HOUR_S)
    restart_backoff_multiplier: float = Field(2.0, ge=1, le=10)
    restart_jitter_fraction: float = Field(0.2, ge=0, lt=1)
    restart_budget_count: int = Field(5, ge=0, le=1000, description="Failures tolerated within the window")
    restart_budget_window_s: float = Field(60.0, ge=1, le=DAY_S)
    heartbeat_interval_s: float = Field(1.0, ge=0.01, le=60)
    heartbeat_timeout_s: float = Field(10.0, ge=0.05, le=HOUR_S)

    @model_validator(mode="after")
    def _ordered(self) -> SupervisorSettings:
        if self.restart_backoff_max_s < self.restart_backoff_initial_s:
            raise ValueError("restart_backoff_max_s must be at least restart_backoff_initial_s")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must be greater than heartbeat_interval_s")
        return self


class ChannelSettings(Frozen):
    """Bounds of the edges between actors (messages for lossless channels, keys for conflating ones)."""

    commands_capacity: int = Field(1024, ge=1, le=1_000_000)
    fills_capacity: int = Field(4096, ge=1, le=1_000_000)
    order_events_capacity: int = Field(1024, ge=1, le=1_000_000)
    market_data_keys: int = Field(1024, ge=1, le=100_000)
    snapshot_keys: int = Field(16, ge=1, le=1024)


class LoggingSettings(Frozen):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsSettings(Frozen):
    enabled: bool = True
    host: str = Field("127.0.0.1", description="Listen address; anything but loopback needs a token")
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port (logged at start-up)")
    token: SecretStr | None = Field(
        None, validate_default=True,
        description="Bearer token for /metrics (Authorization: Bearer ...); at least 16 characters; required when "
                    "metrics.host is not loopback. BASISD_METRICS__TOKEN")

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, v: object) -> object:
        # Refused as a value error so that the message never echoes what was given (it may be the secret).
        if v is not None and not isinstance(v, str | SecretStr):
            raise ValueError("must be a string")
        return v

    @field_validator("token")
    @classmethod
    def _token_where_needed(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        value = v.get_secret_value() if v is not None else ""
        host = info.data.get("host", "127.0.0.1")
        if not value and not is_loopback(host):
            raise ValueError(f"required: metrics listens on {host!r}, which is not a loopback address (set "
                             "metrics.token or BASISD_METRICS__TOKEN, or listen on 127.0.0.1)")
        if value and len(value) < 16:
            raise ValueError("too short: use at least 16 characters (e.g. `openssl rand -hex 32`)")
        return v if value else None


class ReconcileSettings(Frozen):
    """The reconciler: our books against the venues' own view (actors/reconciler.py)."""

    enabled: bool = True
    interval_s: float = Field(3600.0, ge=60, le=7 * DAY_S,
                              description="Market seconds between reconciliations (and one at start-up): a minute "
                                          "to a week (more often only repeats the venues' calls)")
    halt_above_usd: float = Field(
        100.0, ge=0, le=MAX_USD,
        description="A drift worth more than this (or any perp size difference) halts trading; "
                    "smaller token drifts are booked to the venues' figures and logged")
    startup_timeout_s: float = Field(
        30.0, ge=0.1, le=HOUR_S,
        description="READY=1 waits for the start-up reconciliation this long; past it, trading is "
                    "halted until one completes")
    max_deferrals: int = Field(
        10, ge=1, le=1000,
        description="Times a reconciliation waits for the books to catch up with the venues' reports "
                    "before it compares anyway")
    positions_interval_s: float = Field(
        60.0, ge=1, le=7 * DAY_S,
        description="Live: seconds between comparisons of the exchanges' perp positions alone, between the full "
                    "runs of every `interval_s`")
    dust: dict[str, float] = Field(
        default_factory=dict,
        description="Per token (as the books name it: USDT, ETH, aWeETH ...), a difference no larger than this "
                    "agrees (a venue's rounding): booked to the venue's figure, never a drift")
    relative_tolerance: float = Field(
        0.01, ge=0, le=0.5,
        description="A token difference no larger than this fraction of the venue's figure agrees (0.01: 1 %): "
                    "booked to the venue's figure, never a drift. Perp sizes are never tolerated")

    @field_validator("dust")
    @classmethod
    def _dust(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [token for token, level in v.items() if not level >= 0]
        if bad:
            raise ValueError(f"dust levels are amounts of at least 0 (not for: {', '.join(sorted(bad))})")
        return v

    def tolerance(self) -> Tolerance:
        """The reconciler's tolerance from these figures (imported here: the domain does not load at config time)."""
        from decimal import Decimal

        from daemon.domain.reconcile import Tolerance

        return Tolerance({token: Decimal(str(level)) for token, level in self.dust.items()},
                         Decimal(str(self.relative_tolerance)))


class RecoverySettings(Frozen):
    """Recovery at a live start-up (daemon.recovery): what a restart does with what the journal cannot explain."""

    positions: Literal["adopt", "halt"] = Field(
        "adopt", description="A perp a venue holds that the journal's fills do not account for (or of another "
                             "size): adopt it at the venue's entry price and trade on, or come up HALTED naming it "
                             "(`basisd flatten` closes it, `basisd resume` adopts it)")


class ControlSettings(Frozen):
    """The local control socket of `basisd halt | resume | status` (daemon/control.py)."""

    enabled: bool = Field(True, description="Listen on the control socket (never in a backtest)")
    flatten_on_halt: bool = Field(
        False, description="An operator's halt (SIGUSR1, basisd halt) also unwinds every position, reduce-only, "
                           "while trading stays HALTED; `basisd halt --flatten/--no-flatten` decides per halt")
    socket: PathText | None = Field(
        None, description="Unix socket path; unset: $RUNTIME_DIRECTORY/control.sock under systemd, else "
                          "<runtime.state_dir>/control.sock, else <tmp>/basisd-<uid>/control.sock")


class ApiSettings(Frozen):
    """The positions API: HTTP and WebSocket on one port (`actors.api`). Read-only; loopback by default."""

    enabled: bool = Field(True, description="Serve the API (never in a backtest)")
    host: str = Field("127.0.0.1", description="Listen address; anything but loopback needs a token")
    port: int = Field(8765, ge=0, le=65535, description="0 picks a free port (logged as api_listening)")
    require_token: bool = Field(False, description="Ask for the bearer token on loopback too")
    token: SecretStr | None = Field(
        None, validate_default=True,
        description="Bearer token (Authorization: Bearer ...); at least 16 characters. BASISD_API__TOKEN")
    client_queue_size: int = Field(
        256, ge=1, le=100_000, description="Messages queued per WebSocket client; a client this far behind is "
                                           "disconnected (close code 1008) so it never slows the daemon")
    ping_interval_s: float = Field(20.0, ge=1, le=3600, description="Keepalive: a ping each way this often; a "
                                                                   "client silent for as long again is dropped")
    close_timeout_s: float = Field(5.0, ge=0.1, le=60, description="How long a closing handshake may take")
    price_update_threshold: float = Field(
        0.01, ge=0, le=MAX_USD,
        description="A price-only update is streamed once a position's unrealized P&L moved more "
                    "than this since the last one sent, in the share class's currency")
    allowed_origins: tuple[str, ...] = Field(
        (), description="Browser origins allowed to open the stream (e.g. https://dash.example); a request "
                        "with any other Origin header is refused")

    @field_validator("token", mode="before")
    @classmethod
    def _token_is_text(cls, v: object) -> object:
        # Refused as a value error so that the message never echoes what was given (it may be the secret).
        if v is not None and not isinstance(v, str | SecretStr):
            raise ValueError("must be a string")
        return v

    @field_validator("token")
    @classmethod
    def _token_where_needed(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        value = v.get_secret_value() if v is not None else ""
        host, required = info.data.get("host", "127.0.0.1"), info.data.get("require_token", False)
        if not value and not is_loopback(host):
            raise ValueError(f"required: the API listens on {host!r}, which is not a loopback address (set "
                             "api.token or BASISD_API__TOKEN, or listen on 127.0.0.1)")
        if not value and required:
            raise ValueError("required: api.require_token is true (set api.token or BASISD_API__TOKEN)")
        if value and len(value) < 16:
            raise ValueError("too short: use at least 16 characters (e.g. `openssl rand -hex 32`)")
        return v if value else None


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (a name other than localhost is never assumed so)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Every actor the daemon can run (daemon.app composes them; `actor.name` of each class under actors/).
ActorName = Literal["positions", "fills", "execution", "risk", "strategy", "market_data", "status", "recorder",
                    "reconciler", "api"]


class ChaosSettings(Frozen):
    """Fault injection for drills. Never set in production configs."""

    fail_actor: ActorName | None = Field(None, description="Name of an actor to break")
    fail_after_s: float = Field(1.0, ge=0.01, le=DAY_S,
                                description="Seconds each run of that actor lasts before the fault")
    fault: Literal["raise", "hang"] = Field(
        "raise", description="raise: the actor crashes (tests restarts); hang: it stops beating (tests the watchdog)"
    )
    storm: bool = Field(False, description="Every actor fails as fail_actor's would (a crash storm; instead of "
                                           "fail_actor)")
    crash_count: int | None = Field(None, ge=1, le=100_000,
                                    description="Crashes of each failing actor, after which it runs undisturbed "
                                                "(null: it fails every fail_after_s until the daemon stops)")
    unreported_usdt: dict[str, Annotated[float, Field(gt=0, le=MAX_USD)]] = Field(
        default_factory=dict, description="USDT each named simulated exchange credits at start without reporting "
                                          "it (the accounts start empty, so credits only) — a drill for the reconciler")
    unreachable_accounts: tuple[str, ...] = Field(
        (), max_length=10, description="Simulated exchanges whose account queries time out — a drill for the "
                                       "reconciler (the start-up reconciliation cannot run, so trading waits)")
    resting_orders_per_venue: int = Field(
        0, ge=0, le=100, description="Far-from-market limit orders each simulated exchange holds open from the "
                                     "start, so an emergency-stop drill has open orders to cancel")

    @model_validator(mode="after")
    def _one_target(self) -> ChaosSettings:
        if self.storm and self.fail_actor is not None:
            raise ValueError("set fail_actor (one actor) or storm (every actor), not both")
        if self.crash_count is not None and not self.storm and self.fail_actor is None:
            raise ValueError("crash_count needs fail_actor or storm: no actor is set to fail")
        return self


# --- market -------------------------------------------------------------------------------------------

MAX_REPLAY_HOURS = 24 * 365 * 10
MAX_REPLAY_SPEED = 1e7  # beyond, "as fast as possible" is what is meant: null
REPLAY_EARLIEST = datetime(2015, 7, 30, tzinfo=UTC)
REPLAY_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class ShockSettings(Frozen):
    """A stress event in the synthetic market (see `daemon.domain.synthetic.Shock`)."""

    at_hour: int = Field(ge=1, le=MAX_REPLAY_HOURS, description="Hours after the replay's start")
    eth_move_fraction: float = Field(0.0, gt=-0.95, le=10.0, description="0.9 = ETH jumps 90 %")
    lst_oracle_move_fraction: float = Field(0.0, gt=-0.5, lt=0.5, description="-0.06 = the LST de-pegs 6 %")


class ReplaySettings(Frozen):
    source: Literal["synthetic", "history"] = "synthetic"
    data_dir: PathText | None = Field(None, description="The history directory (source: history), relative to the "
                                                   "config file")
    proxies: dict[str, str] | None = Field(
        None, description="Series → proxy series when it has no value (None: the defaults, OKX → Binance and "
                          "Binance's paging holes → Bybit; {}: fail on any missing value)")
    seed: int = Field(7, ge=0, le=2**63 - 1)
    start: datetime = Field(datetime(2024, 6, 1, tzinfo=UTC),
                            description=f"UTC; the replay lies within {REPLAY_EARLIEST:%Y-%m-%d} (Ethereum's launch: "
                                        f"no ETH market before) and {REPLAY_LATEST:%Y-%m-%d}")
    hours: int = Field(24 * 365, ge=2, le=MAX_REPLAY_HOURS, description="Length of the replayed market")
    speed: float | None = Field(
        3600.0, ge=0.01, le=MAX_REPLAY_SPEED,
        description=f"Market seconds per real second, {MAX_REPLAY_SPEED:.0e} at most; null runs flat out (faster)"
    )
    shocks: tuple[ShockSettings, ...] = Field((), description="Stress events in the synthetic market")

    @model_validator(mode="after")
    def _history_needs_data(self) -> ReplaySettings:
        if self.source == "history" and not self.data_dir:
            raise ValueError("source: history needs data_dir (the history directory)")
        if self.source == "history" and self.shocks:
            raise ValueError("shocks apply to the synthetic market only (source: synthetic)")
        for shock in self.shocks:
            if shock.at_hour >= self.hours:
                raise ValueError(f"a shock at hour {shock.at_hour} is past the replay's end (hours: {self.hours})")
        if self.start + timedelta(hours=self.hours) > REPLAY_LATEST:
            raise ValueError(f"the replay ends after {REPLAY_LATEST:%Y-%m-%d} (start + hours)")
        return self

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("start must carry a time zone, e.g. 2024-06-01T00:00:00Z")
        v = v.astimezone(UTC)
        if not REPLAY_EARLIEST <= v < REPLAY_LATEST:
            raise ValueError(f"start must lie between {REPLAY_EARLIEST:%Y-%m-%d} (Ethereum's launch) and "
                             f"{REPLAY_LATEST:%Y-%m-%d}")
        return v


# --- live market data (paper; live later) ----------------------------------------------------------------


class MarketSettings(Frozen):
    """The venues' public market data in paper and live: their streams through ccxt.pro, REST as the backstop."""

    poll_interval_s: float = Field(
        2.0, ge=0.5, le=60, description="Seconds between polls of every venue's marks, funding and spot: half a "
                                        "second at least (the venues' rate limits), a minute at most")
    request_timeout_s: float = Field(
        5.0, ge=0.1, le=60, description="A venue that has not answered a poll within this many seconds is "
                                        "degraded for that poll")
    paper_gas_gwei: float = Field(
        10.0, ge=0.01, le=10_000, description="The gas price paper's simulated wallet pays (there is no chain "
                                              "adapter yet); published with every poll")
    source: Literal["rest", "stream"] = Field(
        "stream", description="Where paper and live read the venues' marks, funding and spot: their public "
                              "websocket streams (ccxt.pro; REST answers whenever a stream is missing or stale), "
                              "or REST polling only")
    stream_stale_after_s: float = Field(
        15.0, ge=1, le=300, description="A streamed mark or spot price older than this many seconds is stale: REST "
                                        "answers until the stream is fresh again (the venues push continuously)")
    stream_funding_stale_after_s: float = Field(
        150.0, ge=10, le=3600, description="The same for a streamed funding rate (OKX pushes it every 30-90 s)")
    stream_first_wait_s: float = Field(
        2.0, ge=0, le=30, description="The first poll waits this long for the stream's first message before "
                                      "asking REST; below request_timeout_s")

    @model_validator(mode="after")
    def _first_wait_within_the_poll(self) -> MarketSettings:
        if self.source == "stream" and self.stream_first_wait_s >= self.request_timeout_s:
            raise ValueError("market.stream_first_wait_s must be shorter than market.request_timeout_s (the poll "
                             "would time out before REST could answer)")
        return self


class ExchangeSettings(Frozen):
    """The live exchange accounts (`runtime.mode: live`, daemon/venues/ccxt_exchange.py)."""

    leverage: int = Field(3, ge=1, le=20, description="Leverage set on every traded perpetual at start-up (the "
                                                      "margin the venue asks per order; the books size margin "
                                                      "themselves)")
    max_clock_skew_ms: int = Field(1000, ge=10, le=60_000,
                                   description="A venue whose clock is further from ours than this is not traded "
                                               "(signed requests would be refused or mistimed)")
    request_timeout_s: float = Field(10.0, ge=0.5, le=120,
                                     description="A signed request unanswered this long has an unknown outcome (an "
                                                 "order is then looked up by its client id, never resent blindly)")
    fills_poll_interval_s: float = Field(5.0, ge=0.5, le=3600,
                                         description="Seconds between reads of the trades since the last one seen "
                                                     "on every venue: the backstop that finds a fill whatever else "
                                                     "missed it")
    fills_stream: bool = Field(True, description="Fills from the venues' private streams (ccxt.pro), the REST "
                                                 "backstop beside them; false: the REST backstop alone")
    stream_dead_after_s: float = Field(30.0, ge=2, le=600,
                                       description="A private stream that receives nothing (no message, no pong) "
                                                   "this long is dead: it is closed and reconnected")
    funding_poll_interval_s: float = Field(300.0, ge=5, le=DAY_S,
                                           description="Seconds between reads of the funding payments the venues "
                                                       "made (each booked once, by the venue's own id)")
    transfers_poll_interval_s: float = Field(60.0, ge=5, le=DAY_S,
                                             description="Seconds between reads of the venues' deposits and "
                                                         "withdrawals: a deposit from outside (an operator funding an "
                                                         "account) is booked as a capital flow, a transfer in flight "
                                                         "followed until it lands")
    startup_timeout_s: float = Field(60.0, ge=1, le=HOUR_S,
                                     description="Every venue must pass its start-up checks within this long, or "
                                                 "the daemon does not start")
    market_cache_dir: PathText | None = Field(
        None, description="Where the venues' market rules are cached per UTC day (None: runtime.state_dir/markets)")


class ChainSettings(Frozen):
    """The wallet's chain in live (`daemon/venues/web3_*.py`): the AAVE v3 market, the DEX and the flash-loan executor
    named by an address book, transactions under a fee cap. The RPC URL and the wallet key are credentials
    (`credentials.rpc_url`, `credentials.wallet_private_key`), never this file. Unset `address_book`: no chain
    (live then runs the CEX-only modes on the capital already on the venues)."""

    address_book: PathText | None = Field(
        None, description="JSON address book (Pool, AaveOracle, reserves, DEX router, executor) relative to the "
                          "config file; the local world writes one (README \"The local world\")")
    chain_id: int = Field(1, ge=1, le=2**32, description="The node must report this chain id, or nothing is sent")
    confirmations: int = Field(2, ge=1, le=64, description="Blocks (including its own) before a transaction is "
                                                           "booked")
    max_fee_gwei: float = Field(60.0, gt=0, le=10_000, description="The most per gas ever offered; when the next "
                                                                   "block needs more, nothing is sent and the "
                                                                   "operation waits")
    priority_fee_percentile: int = Field(50, ge=1, le=99, description="Of the tips paid in recent blocks")
    receipt_timeout_s: float = Field(180.0, ge=1, le=HOUR_S, description="A transaction not mined this long is "
                                                                         "replaced at its nonce with bumped fees")
    max_replacements: int = Field(3, ge=0, le=20, description="Fee bumps before a stuck transaction is reported")
    poll_interval_s: float = Field(12.0, ge=0.1, le=HOUR_S, description="Seconds between reads of the wallet, "
                                                                        "its AAVE position and the chain's "
                                                                        "market (one batch each)")
    rpc_timeout_s: float = Field(10.0, ge=0.5, le=120, description="A JSON-RPC request unanswered this long fails "
                                                                   "(a transaction then has an unknown outcome and "
                                                                   "is looked up by hash and nonce)")
    slippage_bps: float = Field(30.0, ge=0, le=500, description="A DEX swap's minimum out: the oracle's price less "
                                                                "this")
    ltv_tolerance: float = Field(0.001, gt=0, le=0.05, description="The atomic entry reverts unless it lands "
                                                                   "within this of the target LTV")
    min_health_factor: float = Field(1.02, ge=1, le=10, description="Every chain operation reverts if it would "
                                                                    "leave the health factor below this")
    deadline_s: float = Field(600.0, ge=30, le=DAY_S, description="The executor refuses a transaction mined later "
                                                                  "than this after it was signed")
    dex_fee_tier: int = Field(100, ge=1, le=1_000_000, description="The DEX pool's fee tier (Uniswap v3 units: "
                                                                   "100 = 0.01 %)")
    receipt_poll_interval_s: float = Field(0.5, ge=0.01, le=60, description="How often a transaction's receipt "
                                                                            "is asked for while it is being mined")
    transfer_poll_interval_s: float = Field(5.0, ge=0.05, le=HOUR_S, description="How often the venue is read "
                                                                                "while a transfer to or from it is "
                                                                                "awaited")
    transfer_wait_s: float = Field(1800.0, ge=10, le=DAY_S, description="How long a transfer to or from an "
                                                                        "exchange may take before the operation is "
                                                                        "reported late (it is still followed)")


# The settings' defaults for staleness are the replay's (hourly bars); a run on live data judges it in seconds
# (seed 001/004: 60 s). Applied by `daemon.config.load_settings` where the file and the environment set neither.
LIVE_STALENESS_S = {"data_stale_after_s": 60.0, "funding_stale_after_s": 300.0}


class VenueRedirectSettings(Frozen):
    """Tests and demos only: the venues' host names resolve to a local address (the exchange fake), every other
    name is refused, and TLS is verified against `ca_file` alone — never relaxed. Unset: the real venues."""

    address: str | None = Field(None, description="host:port on loopback, e.g. 127.0.0.1:8443")
    ca_file: PathText | None = Field(None, description="PEM certificate the redirected venues must present")

    @model_validator(mode="after")
    def _both_on_loopback(self) -> VenueRedirectSettings:
        if (self.address is None) != (self.ca_file is None):
            raise ValueError("address and ca_file go together (both set, or neither)")
        if self.address is not None:
            host, sep, port = self.address.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address must be host:port, was {self.address!r}")
            if not is_loopback(host):
                raise ValueError(f"address must be on loopback (a local fake), was {host!r}")
        return self


# --- risk: the thresholds SIGHUP may change while running -----------------------------------------------


class RiskSettings(Frozen):
    margin_warning_ratio: float = Field(0.20, gt=0, le=1)
    margin_urgent_ratio: float = Field(0.15, gt=0, le=1)
    margin_maintenance_ratio: float = Field(0.10, gt=0, le=1)
    delta_warn_fraction: float = Field(0.02, gt=0, le=1, description="Of hedge notional")
    delta_act_fraction: float = Field(0.05, gt=0, le=1, description="Of hedge notional")
    ltv_warn_above_target: float = Field(0.01, ge=0, le=0.2)
    ltv_act_above_target: float = Field(0.02, ge=0, le=0.2)
    mark_divergence_flag_fraction: float = Field(0.005, gt=0, le=0.5)
    mark_divergence_alert_fraction: float = Field(0.01, gt=0, le=0.5)
    data_stale_after_s: float = Field(7200.0, ge=1, le=30 * DAY_S,
                                      description="Prices, indexes, oracles (DOMAIN §8 #22); 30 days at most")
    funding_stale_after_s: float = Field(32400.0, ge=60, le=30 * DAY_S,
                                         description="Funding settles every 8 h: 9 h allows one miss")
    # The drawdown breaker (seed 003, `daemon.domain.risk.DrawdownBreaker`): peak-to-trough NAV drawdown, in the
    # share class's currency, at which each level trips; each acts once per trip and latches until `basisd resume`.
    drawdown_reduce_fraction: float = Field(0.03, gt=0, lt=1, description="Level 1 (reduce): no new exposure, and "
                                            "drawdown_reduce_unwind_fraction of the book is unwound")
    drawdown_close_fraction: float = Field(0.04, gt=0, lt=1, description="Level 2 (close part): "
                                           "drawdown_close_unwind_fraction of what is left is unwound")
    drawdown_halt_fraction: float = Field(0.05, gt=0, lt=1, description="Level 3: flatten everything and halt")
    drawdown_reduce_unwind_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of the book (every leg pro rata) level 1 unwinds: seed 003 closes the "
                                     "worst half; a hedged book has no worst leg, so half of each")
    drawdown_close_unwind_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of what is left level 2 unwinds (1 = seed 003's literal close-all)")
    daily_loss_limit_fraction: float = Field(
        0.02, gt=0, lt=1, description="Loss since the UTC day's first NAV (share class's currency), as a fraction "
                                      "of it, that trips level 1; below drawdown_reduce_fraction, or it adds "
                                      "nothing (a day's loss never exceeds the drawdown from the peak)")
    # Seed 004's execution limits (`daemon.domain.limits`); none stands in the way of an instruction that reduces
    # exposure (a deleverage, a margin top-up, an unwind, the breaker's own).
    max_position_usd: float = Field(
        1_000_000.0, ge=10, le=MAX_USD, description="Largest one leg on one venue may grow to (a perp, a spot "
                                                   "holding, the AAVE long net of debt, free LST), in USD; an "
                                                   "instruction that would take a leg past it is refused whole")
    max_gas_price_gwei: float = Field(
        100.0, ge=0.1, le=10_000, description="An instruction with an on-chain transaction waits (is refused and "
                                              "decided again next cycle) while the gas price is above this")
    max_slippage_bps: float = Field(
        50.0, ge=0.1, le=1000, description="Each order goes out with a limit this far from the venue's price "
                                           "(perp mark or spot) when it was sent; the venue refuses a worse fill")
    instruction_timeout_s: float = Field(
        300.0, ge=1, le=DAY_S, description="An instruction not finished in this many seconds is stopped, reported "
                                           "with the step in flight, and trading halts for a reconciliation")

    @model_validator(mode="after")
    def _ordered(self) -> RiskSettings:
        problems = []
        if not self.margin_maintenance_ratio < self.margin_urgent_ratio < self.margin_warning_ratio:
            problems.append("margin ratios must satisfy maintenance < urgent < warning")
        if not self.delta_warn_fraction < self.delta_act_fraction:
            problems.append("delta_warn_fraction must be below delta_act_fraction")
        if not self.ltv_warn_above_target < self.ltv_act_above_target:
            problems.append("ltv_warn_above_target must be below ltv_act_above_target")
        if not self.mark_divergence_flag_fraction < self.mark_divergence_alert_fraction:
            problems.append("mark_divergence_flag_fraction must be below mark_divergence_alert_fraction")
        if not self.drawdown_reduce_fraction < self.drawdown_close_fraction < self.drawdown_halt_fraction:
            problems.append("drawdown levels must satisfy reduce < close < halt")
        if not self.daily_loss_limit_fraction <= self.drawdown_halt_fraction:
            problems.append("daily_loss_limit_fraction must not be above drawdown_halt_fraction (it trips level 1)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# --- strategy: what to run -----------------------------------------------------------------------------


class StrategyParams(Frozen):
    """Mode parameters. A mode file sets its defaults; the root config's `strategy.params` overrides them."""

    asset: Literal["ETH", "BTC", "USDT"] = "ETH"
    stake_allocation: float = Field(1.0, gt=0, le=1, description="Share of equity on the long leg (a)")
    lst: Literal["weETH", "wstETH"] | None = None
    max_ltv: float = Field(0.93, ge=0, lt=1, description="AAVE e-mode max LTV (read on chain when live)")
    max_stake_spread_move: float = Field(0.0225, ge=0, lt=0.5)
    margin_ratio_target: float = Field(1.0, gt=0, le=10, description="CEX margin / notional at entry")
    position_deviation_threshold: float = Field(0.02, gt=0, lt=1)
    funding_threshold: float = Field(0.0001, ge=-1, le=1)
    min_order_usd: float = Field(10.0, ge=0.01, le=1e7, description="A cent to ten million dollars")
    min_loop_position_usd: float = Field(10_000.0, ge=0.01, le=MAX_USD)
    hedge_allocation: dict[str, float] = Field(
        default_factory=dict, description="Perp venue → share of the hedge (sum 1); from the environment, a JSON "
                                          "object: BASISD_STRATEGY__PARAMS__HEDGE_ALLOCATION='{\"binance\": 1}'")
    unwind: Literal["fast", "slow"] = "fast"
    leverage: Literal["atomic", "sequential"] = Field(
        "atomic", description="How AAVE leverage is built and taken down: atomic = one flash-loan transaction; "
                              "sequential = stake/supply/borrow (withdraw/swap/repay) round after round, each a "
                              "transaction, stopping when the next borrow is below min_loop_position_usd")
    max_leverage_iterations: int | None = Field(
        None, ge=0, le=1000, description="Sequential loops: at most this many borrows (None: until below the minimum)")
    rewards_mode: Literal["base_only", "base_eigen", "base_eigen_seasonal"] = Field(
        "base_only", description="EtherFi rewards (ADR-9): base_only = oracle growth only; base_eigen adds the "
                                 "weekly EIGEN distributions; base_eigen_seasonal adds the ETHFI top-ups too")
    gas_reserve_eth: float = Field(
        0.05, ge=0, le=10, description="ETH share class: wallet ETH kept back from the entry to pay gas (it cannot "
                                       "run gas debt as the USDT class does)")

    @field_validator("hedge_allocation", mode="before")
    @classmethod
    def _json_weights(cls, v: object) -> object:
        # strategy.params is a free mapping until the mode's params are merged in, so an environment override
        # arrives as the variable's text: a JSON object (never echoed: it is not what the key expects).
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                raise ValueError("must be a mapping of venue to weight (from the environment: a JSON object)") \
                    from None
        return v

    @field_validator("hedge_allocation")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            return v
        if any(w < 0 for w in v.values()):
            raise ValueError("hedge weights must not be negative")
        total = sum(v.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"hedge weights must sum to 1, sum to {total:g}")
        return v

    @property
    def target_ltv(self) -> float:
        """λ = max_ltv × (1 − max_stake_spread_move): one knob (DOMAIN §8 #2)."""
        return self.max_ltv * (1.0 - self.max_stake_spread_move)


# The least initial capital a run accepts, in the share class's currency. Below it the entry's legs fall under
# the venues' minimum order (10 USD) and nothing is placed, yet a report is written whose APR divides by almost
# nothing (1e-9 gave −1e14 %). 100 USDT puts 30 USD on the smallest hedge leg (0.3 of the hedge); 0.1 ETH is
# worth more than 100 USD at every price ETH has traded at since 2017, and twice the default gas reserve.
MIN_CAPITAL: dict[str, float] = {"USDT": 100.0, "ETH": 0.1}


class StrategySettings(Frozen):
    mode: str = Field(description="A file name under configs/modes/, without .yaml")
    share_class: str = Field(description="A file name under configs/share_classes/, without .yaml")
    venues: tuple[str, ...] = Field(description="File names under configs/venues/, without .yaml")
    initial_capital: float = Field(
        gt=0, le=1e12, description="In the share class's currency; at least MIN_CAPITAL of it (see there)")
    catalog_dir: PathText = Field(".", description="Directory holding modes/, venues/, share_classes/, "
                                              "relative to the config file")
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the mode's params")
    decision_interval_s: float | None = Field(
        None, ge=1, le=DAY_S, description="Seconds between the strategy's decisions (None: once per market hour in "
                                          "replay and backtest, every 60 s in paper)")


# --- secrets ------------------------------------------------------------------------------------------
#
# Three sources, the first that sets a secret wins: the environment (`BASISD_CREDENTIALS__BINANCE__API_KEY`),
# then one file per secret in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`; see
# `CREDENTIAL_FILES`), then the YAML file. The environment wins because it wins everywhere else too; the
# daemon warns when it shadows a credential file. A value never reaches a log line, a repr or an error.

CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"


# The log redacts every occurrence of a secret's value in every line (daemon.log): a short one would blank out
# common text (a secret `1` replaces every 1) and hide nothing. No real key, passphrase or URL is this short.
MIN_SECRET_CHARS = 8


def _long_enough(value: SecretStr) -> SecretStr:
    # Refused as value errors: the message never quotes what was given.
    text = value.get_secret_value()
    if not text:
        raise ValueError("is empty: set the secret, or leave it out altogether")
    if len(text) < MIN_SECRET_CHARS:
        raise ValueError(f"too short: a secret needs at least {MIN_SECRET_CHARS} characters (a shorter one cannot "
                         "be redacted from the logs safely); check that this is the real value")
    return value


Secret = Annotated[SecretStr, AfterValidator(_long_enough)]


class VenueCredentials(Frozen):
    api_key: Secret | None = None
    api_secret: Secret | None = None
    passphrase: Secret | None = None


class CredentialsSettings(Frozen):
    binance: VenueCredentials = VenueCredentials()
    bybit: VenueCredentials = VenueCredentials()
    okx: VenueCredentials = VenueCredentials()
    wallet_private_key: Secret | None = None
    rpc_url: Secret | None = None  # RPC URLs embed API keys

    def secret_values(self) -> list[str]:
        values = [s for s in (self.wallet_private_key, self.rpc_url) if s is not None]
        for venue in (self.binance, self.bybit, self.okx):
            values += [s for s in (venue.api_key, venue.api_secret, venue.passphrase) if s is not None]
        return [s.get_secret_value() for s in values]


def _credential_files() -> dict[str, tuple[str, ...]]:
    files: dict[str, tuple[str, ...]] = {}
    for name, field in CredentialsSettings.model_fields.items():
        if field.annotation is VenueCredentials:
            files.update({f"{name}_{key}": ("credentials", name, key) for key in VenueCredentials.model_fields})
        else:
            files[name] = ("credentials", name)
    files["api_token"] = ("api", "token")  # the positions API's bearer token is a secret too
    files["metrics_token"] = ("metrics", "token")  # and so is the metrics endpoint's
    return files


# File name in $CREDENTIALS_DIRECTORY → settings key: `binance_api_key` → credentials.binance.api_key,
# `okx_passphrase` → credentials.okx.passphrase, `wallet_private_key`, `rpc_url`, and `api_token` → api.token.
CREDENTIAL_FILES: dict[str, tuple[str, ...]] = _credential_files()
_CREDENTIAL_MAX_BYTES = 64 * 1024  # keys, URLs and private keys are short; more is a wrong file


class _NotAFile(Exception):
    """A credential path that is a directory, FIFO or device (its text says which)."""


def _read_credential_file(path: Path) -> bytes:
    """At most one byte past the limit. Opened without blocking and read only if it is a regular file: a FIFO
    would hang the start (or a SIGHUP reload), a device would never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotAFile("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                            "a device or socket")
        chunks, size = [], 0
        while size <= _CREDENTIAL_MAX_BYTES:
            chunk = os.read(fd, _CREDENTIAL_MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_credentials_directory(directory: Path) -> dict[str, Any]:
    """The secrets in `directory`, one file each, as a nested mapping of settings (`credentials`, `api`).

    A file holds the value alone; surrounding whitespace (the newline `echo` leaves) is dropped. Raises
    `ConfigError` naming every file that is unknown, unreadable, empty, not UTF-8 or more than one line,
    and never quoting what a file holds.
    """
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(directory), f"({CREDENTIALS_DIRECTORY_ENV})",
                                         f"credentials directory cannot be read: {exc.strerror}")]) from None
    values: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for path in entries:
        key = CREDENTIAL_FILES.get(path.name)
        if key is None:
            problems.append(ConfigProblem(str(path), "(file)", "not a credential basisd knows; expected one of "
                                          + ", ".join(CREDENTIAL_FILES)))
            continue
        dotted = ".".join(key)
        try:
            raw = _read_credential_file(path)
            text = raw.decode("utf-8").strip()
        except _NotAFile as exc:
            problems.append(ConfigProblem(str(path), dotted, f"credential file is {exc}, not a file"))
            continue
        except OSError as exc:
            problems.append(ConfigProblem(str(path), dotted, f"credential file cannot be read: {exc.strerror}"))
            continue
        except UnicodeDecodeError:
            problems.append(ConfigProblem(str(path), dotted, "credential file is not UTF-8 text"))
            continue
        if len(raw) > _CREDENTIAL_MAX_BYTES:
            problems.append(ConfigProblem(str(path), dotted, f"credential file is larger than "
                                                             f"{_CREDENTIAL_MAX_BYTES} bytes; it must hold one "
                                                             "value alone"))
        elif not text:
            problems.append(ConfigProblem(str(path), dotted, "credential file is empty"))
        elif "\n" in text or "\r" in text:
            problems.append(ConfigProblem(str(path), dotted, "credential file holds more than one line; "
                                                             "it must hold the one value alone"))
        else:
            node = values
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = text
    if problems:
        raise ConfigError(problems)
    return values


class CredentialFilesSource(PydanticBaseSettingsSource):
    """`credentials.*` and `api.token` from `$CREDENTIALS_DIRECTORY`, where systemd's `LoadCredential=` puts
    them."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole directory at once

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
        if not directory:
            return {}
        return read_credentials_directory(Path(directory))


# --- the root ---------------------------------------------------------------------------------------------


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BASISD_", env_nested_delimiter="__", extra="forbid", frozen=True,
        case_sensitive=False, nested_model_default_partial_update=True,
    )

    runtime: RuntimeSettings = RuntimeSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    channels: ChannelSettings = ChannelSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    control: ControlSettings = ControlSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    recovery: RecoverySettings = RecoverySettings()
    replay: ReplaySettings = ReplaySettings()
    market: MarketSettings = MarketSettings()
    venue_redirect: VenueRedirectSettings = VenueRedirectSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    chain: ChainSettings = ChainSettings()
    risk: RiskSettings = RiskSettings()
    strategy: StrategySettings
    credentials: CredentialsSettings = CredentialsSettings()
    chaos: ChaosSettings = ChaosSettings()
    backtest: BacktestSettings = BacktestSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must override it, so it comes first, and
        # credential files (systemd's LoadCredential=) sit between the two (see "secrets" above).
        return env_settings, CredentialFilesSource(settings_cls), init_settings


# --- catalog entries: one file each -------------------------------------------------------------------


class ModeDefinition(Frozen):
    name: str
    description: str
    share_classes: tuple[Literal["usdt", "eth"], ...] = Field(min_length=1)
    lending: bool = False
    borrowing: bool = False
    staking: bool = False
    basis_trade: bool = Field(False, description="Hedges with perp shorts")
    spot_venue: str | None = None
    required_venue_kinds: tuple[Literal["cex", "lending", "staking"], ...] = ()
    params: StrategyParams = StrategyParams()


class ShareClassDefinition(Frozen):
    name: str
    currency: Literal["USDT", "ETH"]
    hedge: Literal["always", "never"] = Field(description="USDT always hedges, ETH never (ADR-11)")


class FeeSchedule(Frozen):
    maker_bps: float = Field(ge=-10, le=100)
    taker_bps: float = Field(ge=0, le=100)


class VenueDefinition(Frozen):
    name: str
    kind: Literal["cex", "lending", "staking"]
    fees: FeeSchedule | None = Field(None, description="perpetual futures (USDT-margined), VIP 0")
    spot_fees: FeeSchedule | None = Field(None, description="spot trading, VIP 0; the perp fees when absent")
    withdrawal_fee: dict[Literal["ETH", "USDT", "BTC"], float] = Field(
        default_factory=dict, description="asset -> fee per withdrawal to the wallet (Ethereum mainnet), in the asset")
    min_order_usd: float = Field(10.0, ge=0.01, le=1e6, description="A cent to a million dollars")
    maintenance_margin_ratio: float | None = Field(None, gt=0, lt=1)
    liquidation_fee_bps: float = Field(125.0, ge=0, le=1000, description="taken from what is left at liquidation")
    funding_interval_h: int | None = Field(None, ge=1, le=24)
    perp_symbols: dict[str, str] = Field(default_factory=dict, description="asset -> venue symbol")
    spot_symbols: dict[str, str] = Field(default_factory=dict)
    lot_step: dict[str, Annotated[float, Field(gt=0, le=1000)]] = Field(
        default_factory=dict, description="asset -> the perp's lot step in the asset (the venue's own; live checks it "
                                          "at start-up); 0.001 where absent")
    spot_lot_step: dict[str, Annotated[float, Field(gt=0, le=1000)]] = Field(
        default_factory=dict, description="asset -> the spot pair's lot step in the asset; 0.001 where absent")
    emode_ltv: float | None = Field(None, ge=0, lt=1)
    emode_liquidation_threshold: float | None = Field(None, gt=0, lt=1)
    emode_liquidation_bonus: float | None = Field(None, ge=0, lt=0.5)
    lst: str | None = None
    unstaking_period_days: float | None = Field(None, ge=0, le=365)

    @model_validator(mode="after")
    def _kind_fields(self) -> VenueDefinition:
        if self.kind == "cex" and (self.fees is None or self.maintenance_margin_ratio is None):
            raise ValueError("a cex venue needs fees and maintenance_margin_ratio")
        for asset, fee in self.withdrawal_fee.items():
            if not 0 <= fee <= (0.1 if asset in ("ETH", "BTC") else 100):  # a fee beyond these is a typo
                raise ValueError(f"withdrawal_fee.{asset} must be between 0 and {0.1 if asset != 'USDT' else 100}")
        if self.kind == "lending" and self.emode_ltv is not None and self.emode_liquidation_threshold is not None \
                and self.emode_ltv >= self.emode_liquidation_threshold:
            raise ValueError("emode_ltv must be below emode_liquidation_threshold")
        if self.kind == "staking" and not self.lst:
            raise ValueError("a staking venue needs lst (the token it mints)")
        return self
