"""The live exchange account: the `ExchangeVenue` port over ccxt's REST API (`ccxt.async_support`).

One `CcxtExchange` per venue of our ledger (`binance`, `bybit`, `okx`), holding one ccxt client per ccxt exchange
it trades through: Binance has two, USDⓈ-M (`binanceusdm`, perps) and spot (`binance`), each with its own wallet;
Bybit's unified account and OKX's trading account serve both kinds from one client and one wallet. The books keep
one account per venue, so the account report sums the wallets, and every order is routed by its instrument's kind.
Quantities are ours (the base asset) throughout; a venue that counts contracts (OKX) is converted at this edge.

Lifecycle: build it, `await start()` (or `async with`), use it, `await close()`. `start()` loads the markets of
the traded instruments only (cached on disk per venue, exchange and UTC day when a cache directory is given),
checks each host's clock against ours, verifies position mode (one-way) and margin mode (cross) against the config
— it refuses, it never changes them — sets the configured leverage per perp and makes one signed read of every
other wallet. A venue that cannot be traded raises a `VenueStartupError` (clock, modes, markets) or
`VenueCredentialsRejected` (exit 78, naming the venue and the key's setting, never the secret); no order can be
sent before `start()` has succeeded.

Orders are checked against the market's own precision and limits and refused with the reason when they do not
fit: nothing is rounded into a different order. The one exception is a limit (slippage cap) price off the tick,
which is moved to the tick on the safe side (a buy's cap down, a sell's up): the order can then only fill better.
A request that failed on the network has an **unknown** outcome: the order is looked up by its client id before
anything is re-sent, and a resend carries the same client id, so the venue's duplicate check guards it too.

Fills are read from REST (`fetch_my_trades` since the last trade seen, page by page) and published as
`FillReport`s on the report channel, de-duplicated by (venue, trade id): after every order that filled, and
whenever `poll_fills()` is called — the REST backstop; the private streams (`daemon.venues.ccxt_streams.FillStream`)
publish the same reports as they come, de-duplicated with these.

Every request passes its host's gate (`daemon.venues.request_gate`): nothing is sent into a rate limit or a ban, a
degraded host takes no new orders, lost credentials stop every later request, and an answer that cannot be read is
never booked. With Binance's split wallets the quote an order needs is first moved to the wallet it draws on
(`daemon.venues.wallet_funding`). `gates`, `degraded`, `internal_transfers` and `counters()` are for the metrics.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import ccxt.async_support as ccxt
import structlog

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.booking import split_instrument
from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.messages import AccountReport, FillReport, OrderStatusReport, Side, SubmitOrder, VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.errors import (
    DuplicateClientOrderId,
    ExitCode,
    FatalVenueError,
    NonRetryableVenueError,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueAccessLost,
    VenueDegraded,
    VenueError,
    VenueRejected,
)
from daemon.venues.ccxt_errors import Call, map_error
from daemon.venues.ccxt_parse import (
    PositionState,
    account_report,
    contract_size,
    parse_balances,
    parse_order,
    parse_position,
    parse_trade,
)
from daemon.venues.ccxt_quirks import corrected
from daemon.venues.client_ids import ClientIdError, from_venue, to_venue
from daemon.venues.request_gate import GatedClient, GatePolicy, RequestGate
from daemon.venues.wallet_funding import InternalTransfer, WalletFunding

ZERO = Decimal(0)
QUOTES = ("USDT", "USDC")  # the quote currencies our symbols end with ("ETHUSDT")


# --- start-up refusals (the venue answered, and what it said makes it untradeable) ---------------------------------


class VenueStartupError(FatalVenueError):
    """The venue cannot be traded: start-up found it unusable (credentials, clock, account modes, markets).
    Restarting will not help until a human fixes it, hence EX_CONFIG."""

    exit_code = ExitCode.CONFIG

    def __init__(self, venue: str, message: str) -> None:
        super().__init__(f"{venue}: {message}")
        self.venue = venue


class ClockSkewError(VenueStartupError):
    def __init__(self, venue: str, skew_ms: int, limit_ms: int) -> None:
        super().__init__(venue, f"the venue's clock is {skew_ms:+d} ms from ours, beyond the limit of {limit_ms} ms: "
                                "refusing to trade (signed requests would be refused or mistimed)")
        self.skew_ms = skew_ms
        self.limit_ms = limit_ms


class AccountModeMismatch(VenueStartupError):
    """The account's position or margin mode differs from the config; it is never changed on the operator's
    behalf, because that moves margin between positions."""


# --- configuration -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    secret: str = field(repr=False)
    password: str | None = field(default=None, repr=False)  # OKX's passphrase

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.key_hint!r})"

    @property
    def key_hint(self) -> str:
        """The key by its last four characters: enough to tell keys apart in a log line, never the secret."""
        return f"…{self.api_key[-4:]}" if len(self.api_key) > 4 else "…"


@dataclass(frozen=True, slots=True)
class CcxtVenueConfig:
    venue: str  # the account's name in our ledger, and the first part of its instrument ids: "binance"
    exchanges: Mapping[str, str]  # kind of market → ccxt exchange id: {"Perp": "binanceusdm", "Spot": "binance"}
    instruments: tuple[str, ...]  # instrument ids traded: "binance:Perp:ETHUSDT", "binance:Spot:ETHUSDT"
    credentials: Credentials
    key_setting: str = "credentials"  # the setting holding the key, named when the venue refuses it
    leverage: int = 3  # set on every traded perp at start-up
    max_clock_skew_ms: int = 1000
    hedged: bool = False  # the position mode required: one-way
    margin_mode: str = "cross"
    timeout_ms: int = 10_000
    resend_attempts: int = 1  # resends (same client id) after a lost request was found not to have been placed
    market_cache_dir: Path | None = None
    enable_rate_limit: bool = True  # ccxt's own limiter; off only against the local fake
    fills_since_ms: int | None = None  # where the first fill poll starts; None: the start-up time
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # extra ccxt options per exchange id
    gate: GatePolicy = field(default_factory=GatePolicy)  # rate limits, bans, degraded hosts: request_gate
    # Split wallets (Binance: spot and USDⓈ-M): the quote an order needs is moved from the other wallet first.
    funding_margin: Decimal = Decimal("0.05")  # initial margin moved to futures, plus this share on top
    funding_slippage: Decimal = Decimal("0.01")  # a market order without a cap is funded at the reference plus this
    sweep_spot_proceeds: bool = True  # a filled spot sell's proceeds go back to the futures wallet (its margin)


# --- orders against a market's rules (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketRules:
    """What a venue accepts for one market, from ccxt's unified market structure, in our units: quantities in the
    base asset (a venue that counts contracts, OKX, is converted by its contract size)."""

    symbol: str  # ccxt's unified symbol
    amount_step: Decimal
    price_tick: Decimal | None
    min_amount: Decimal | None
    max_amount: Decimal | None
    max_market_amount: Decimal | None
    min_cost: Decimal | None
    contract_size: Decimal = Decimal(1)  # base asset per unit of the venue's amount

    @classmethod
    def of(cls, market: Mapping[str, Any]) -> MarketRules:
        precision, limits = market["precision"], market["limits"]
        size = contract_size(market)

        def base(value: Any) -> Decimal | None:
            amount = _dec(value)
            return None if amount is None else _dec(amount * size)

        return cls(market["symbol"], _step(precision.get("amount")) * size, _opt_step(precision.get("price")),
                   base(limits.get("amount", {}).get("min")), base(limits.get("amount", {}).get("max")),
                   base((limits.get("market") or {}).get("max")), _dec(limits.get("cost", {}).get("min")), size)

    def venue_amount(self, quantity: Decimal) -> Decimal:
        """`quantity` (base asset) in the venue's unit: contracts where it counts them."""
        return _dec(quantity / self.contract_size) or quantity

    def refusal(self, quantity: Decimal, price: Decimal | None, market_order: bool) -> str | None:
        """Why `quantity` at `price` cannot be sent as it is, or None. Never rounds."""
        if quantity <= 0:
            return f"quantity {quantity} must be positive"
        if quantity % self.amount_step:
            return f"quantity {quantity} is not a multiple of the lot step {self.amount_step} on {self.symbol}"
        if self.min_amount is not None and quantity < self.min_amount:
            return f"quantity {quantity} is below the minimum {self.min_amount} on {self.symbol}"
        cap = self.max_market_amount if market_order and self.max_market_amount else self.max_amount
        if cap is not None and quantity > cap:
            return f"quantity {quantity} is above the maximum {cap} for a {'market' if market_order else 'limit'} " \
                   f"order on {self.symbol}"
        if price is not None and self.min_cost is not None and quantity * price < self.min_cost:
            return f"notional {quantity * price} is below the minimum {self.min_cost} on {self.symbol}"
        return None

    def cap_price(self, price: Decimal, side: Side) -> Decimal:
        """A limit price on the tick, moved only towards a better fill (a buy's cap down, a sell's up)."""
        if self.price_tick is None:
            return price
        rounding = ROUND_FLOOR if side is Side.BUY else ROUND_CEILING
        return (price / self.price_tick).to_integral_value(rounding) * self.price_tick


def _dec(value: Any) -> Decimal | None:
    """ccxt's number (a float, often) as the exact decimal it was parsed from: "20.0" → 20, "0.0010" → 0.001."""
    if value is None:
        return None
    number = Decimal(str(value))
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number.normalize()


def _step(value: Any) -> Decimal:
    step = _opt_step(value)
    if step is None:
        raise ValueError("the market has no amount precision")
    return step


def _opt_step(value: Any) -> Decimal | None:
    # ccxt ≥ 4 reports precision as the step itself (TICK_SIZE mode) for the venues we trade.
    return _dec(value)


def ccxt_symbol(instrument: str) -> tuple[str, str, str]:
    """`"binance:Perp:ETHUSDT"` → `("Perp", "ETH/USDT:USDT", "ETHUSDT")` (kind, ccxt's symbol, our symbol)."""
    _, kind, symbol = split_instrument(instrument)
    quote = next((q for q in QUOTES if symbol.endswith(q)), None)
    if quote is None or kind not in ("Perp", "Spot"):
        raise ValueError(f"cannot map {instrument!r} to a ccxt market")
    base = symbol[: -len(quote)]
    return kind, (f"{base}/{quote}:{quote}" if kind == "Perp" else f"{base}/{quote}"), symbol


# --- the adapter ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order resting on the venue in a traded market."""

    instrument_id: InstrumentId
    client_order_id: ClientOrderId | None  # None: not one of ours (placed by hand, or by other software)
    venue_order_id: VenueOrderId
    side: Side
    quantity: Decimal
    filled: Decimal
    price: Decimal | None


@dataclass(frozen=True, slots=True)
class AccountDetail:
    report: AccountReport
    wallets: tuple[tuple[str, str, Decimal], ...]  # (ccxt exchange, asset, amount): ("binanceusdm", "USDT", 1000)
    positions: tuple[PositionState, ...]  # the venue's own entry, mark, liquidation price, maintenance margin


ExchangeFactory = Callable[[str, dict[str, Any]], Any]
log = structlog.get_logger()


def _default_factory(exchange_id: str, settings: dict[str, Any]) -> Any:
    return getattr(ccxt, exchange_id)(settings)


class CcxtExchange:
    def __init__(self, config: CcxtVenueConfig, clock: Clock, reports: LosslessChannel[VenueReport],
                 session: Any = None, factory: ExchangeFactory = _default_factory,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None,
                 count: ReportCount | None = None) -> None:
        """`session`: an aiohttp session every client uses (a test's resolver to the fake); ccxt does not close
        a session it did not make, so its owner does. `wall_ms`, `sleep` and `rng` drive the request gates (the
        venue's waits, backoff and jitter): a test injects its own. `count`: the run's count of published reports
        per account (shared by the run's adapters, `daemon.domain.reconcile.ReportCount`): each fill is counted
        before it is sent, and the account report says how many touch this account (None without one)."""
        self.venue = VenueId(config.venue)
        self._config = config
        self._clock = clock
        self._reports = reports
        self._wall_ms = wall_ms
        # One client per ccxt exchange (a unified account, Bybit's or OKX's, serves spot and perps with one).
        self._by_id: dict[str, Any] = {}
        self._client_settings: dict[str, dict[str, Any]] = {}  # per exchange id: what its client was made with
        for exchange_id in dict.fromkeys(config.exchanges.values()):
            settings: dict[str, Any] = {
                "apiKey": config.credentials.api_key, "secret": config.credentials.secret,
                "enableRateLimit": config.enable_rate_limit, **RATE_LIMITER, "timeout": config.timeout_ms,
                "options": {**_lean_options(exchange_id, [k for k, i in config.exchanges.items() if i == exchange_id]),
                            **config.options.get(exchange_id, {})},
            }
            if config.credentials.password is not None:
                settings["password"] = config.credentials.password
            if session is not None:
                settings["session"] = session
            client = factory(exchange_id, settings)
            if session is not None:
                # ccxt's close() waits `timeout_on_exit` for the SSL transports of the session it made to shut; it
                # closes nothing of a session it was given, so the wait would only delay every shutdown.
                client.timeout_on_exit = 0
            if exchange_id in ("bybit", "okx"):
                client.has["fetchCurrencies"] = False  # these ignore options.fetchCurrencies (a private call at load)
            # Every request passes its host's gate (rate limits, bans, degraded venue, lost access, unreadable
            # answers): daemon.venues.request_gate.
            gate = RequestGate(config.venue, exchange_id, now_ms=wall_ms, rng=rng or random.Random(),
                               policy=config.gate)
            self._by_id[exchange_id] = GatedClient(client, gate, self._classifier(client), sleep)
            self._by_id[exchange_id].resync = functools.partial(self._resync_clock, exchange_id)
            self._client_settings[exchange_id] = settings
        self._clients = {kind: self._by_id[exchange_id] for kind, exchange_id in config.exchanges.items()}
        # Separate spot and futures wallets under one account of ours (Binance): orders are funded across them.
        self.funding: WalletFunding | None = None
        if "Spot" in self._clients and "Perp" in self._clients and self._clients["Spot"] is not self._clients["Perp"]:
            self.funding = WalletFunding(config.venue, self._clients, leverage=config.leverage,
                                         margin=config.funding_margin, slippage=config.funding_slippage,
                                         sweep=config.sweep_spot_proceeds, clock=clock,
                                         error=lambda exc, call, client, what: self._error(exc, call, client=client,
                                                                                           what=what))
        self._markets: dict[InstrumentId, MarketRules] = {}  # instrument id → rules
        self._orders: dict[ClientOrderId, OrderStatusReport] = {}
        self._unknown: set[ClientOrderId] = set()  # sent, outcome not known yet
        self._order_clients: dict[VenueOrderId, ClientOrderId] = {}
        self._seen_trades: set[tuple[str, str]] = set()
        # One trade at a time: a stream and a REST poll may hold the same trade at once (daemon.venues.ccxt_streams).
        self._publish_lock = asyncio.Lock()
        self._since_ms: dict[InstrumentId, int] = {}
        self.reports_sent = 0
        self._count = count
        self._submitting = 0  # orders being placed: each may have traded on the venue before its fills are published
        self.fills_overdue = False  # a fill poll after an order failed: poll_fills() soon
        self.started = False

    def __repr__(self) -> str:
        key = self._config.credentials.key_hint
        return f"CcxtExchange({self.venue!r}, {dict(self._config.exchanges)!r}, key {key})"

    # guest (money): the clients, for the funding poller and the funds desk (ccxt_funding, ccxt_transfers)
    @property
    def ccxt_clients(self) -> Mapping[str, Any]:
        """The ccxt client per exchange id (`binanceusdm`, `binance`; `bybit`; `okx`); this adapter closes them."""
        return dict(self._by_id)

    # --- for the metrics -----------------------------------------------------------------------------------------

    @property
    def gates(self) -> dict[str, RequestGate]:
        """The request gate of each ccxt exchange (host): state and counters."""
        return {exchange_id: client.gate for exchange_id, client in self._by_id.items()}

    @property
    def degraded(self) -> bool:
        return any(gate.degraded for gate in self.gates.values())

    @property
    def internal_transfers(self) -> tuple[InternalTransfer, ...]:
        return () if self.funding is None else tuple(self.funding.transfers)

    def counters(self) -> dict[str, Any]:
        """Per host: gate state and counters; and the internal transfers made (done / failed)."""
        transfers = self.internal_transfers
        return {"gates": {exchange_id: gate.counters() for exchange_id, gate in self.gates.items()},
                "internal_transfers": sum(1 for t in transfers if t.ok),
                "internal_transfers_failed": sum(1 for t in transfers if not t.ok)}

    def _classifier(self, client: Any) -> Callable[[BaseException, Call], VenueError]:
        def classify(exc: BaseException, call: Call) -> VenueError:
            return self._error(exc, call, starting=not self.started, client=client)
        return classify

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> CcxtExchange:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        for client in self._by_id.values():
            await client.close()

    async def start(self) -> None:
        """Markets, clock, account modes, leverage; raises `VenueStartupError` if the venue cannot be traded."""
        await self._startup_call("loading markets", self._load_markets())
        await self._startup_call("reading the server time", self._check_clock())
        perps = self._clients.get("Perp")
        if perps is not None:
            await self._startup_call("verifying the account modes", self._check_modes(perps))
            for instrument, rules in self._markets.items():
                if ccxt_symbol(instrument)[0] == "Perp":
                    await self._startup_call(f"setting leverage on {rules.symbol}", self._set_leverage(perps, rules))
        for exchange_id, client in self._by_id.items():
            if client is not perps:  # one signed read: the key must work on every wallet before anything trades
                await self._startup_call(f"reading the {exchange_id} wallet", client.fetch_balance())
        since = self._config.fills_since_ms if self._config.fills_since_ms is not None else self._wall_ms()
        self._since_ms = dict.fromkeys(self._markets, since)
        self.started = True

    async def _startup_call(self, what: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except ccxt.BaseError as exc:
            # Credentials refused here → VenueCredentialsRejected (exit 78), naming the venue and the key's setting.
            raise self._error(exc, Call.READ, starting=True, what=what) from None

    async def _load_markets(self) -> None:
        wanted: dict[str, list[tuple[str, str]]] = {}
        for instrument in self._config.instruments:
            kind, symbol, _ = ccxt_symbol(instrument)
            if kind not in self._clients:
                raise VenueStartupError(self._config.venue, f"{instrument} is traded but no ccxt exchange is "
                                                            f"configured for {kind}")
            wanted.setdefault(self._config.exchanges[kind], []).append((instrument, symbol))
        for exchange_id, pairs in wanted.items():
            client = self._by_id[exchange_id]
            markets = self._cached_markets(exchange_id, {s for _, s in pairs})
            if markets is None:
                loaded = await client.load_markets(False, _market_filter(exchange_id, [s for _, s in pairs]))
                missing = [s for _, s in pairs if s not in loaded]
                if missing:
                    raise VenueStartupError(self._config.venue, f"{client.id} lists no market {', '.join(missing)}")
                markets = [loaded[s] for _, s in pairs]
                self._store_markets(exchange_id, markets)
            else:
                client.set_markets(markets)
            by_symbol = {m["symbol"]: m for m in markets}
            for instrument, symbol in pairs:
                self._markets[InstrumentId(instrument)] = MarketRules.of(by_symbol[symbol])

    def _cache_path(self, exchange_id: str) -> Path | None:
        if self._config.market_cache_dir is None:
            return None
        day = datetime.fromtimestamp(self._wall_ms() / 1000, UTC).strftime("%Y-%m-%d")
        return self._config.market_cache_dir / f"{self._config.venue}-{exchange_id}-{day}.json"

    def _cached_markets(self, exchange_id: str, symbols: set[str]) -> list[dict[str, Any]] | None:
        path = self._cache_path(exchange_id)
        if path is None or not path.exists():
            return None
        try:
            markets: list[dict[str, Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a torn or unreadable cache is a cold start, not a failure
        return markets if symbols <= {m.get("symbol") for m in markets} else None

    def _store_markets(self, exchange_id: str, markets: list[dict[str, Any]]) -> None:
        path = self._cache_path(exchange_id)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(markets))
        tmp.replace(path)

    async def _check_clock(self) -> None:
        for client in self._by_id.values():  # each host keeps its own time
            before = self._wall_ms()
            server = await client.fetch_time()
            after = self._wall_ms()
            skew = int(server) - (before + after) // 2  # against the middle of the round trip
            if abs(skew) > self._config.max_clock_skew_ms:
                raise ClockSkewError(self._config.venue, skew, self._config.max_clock_skew_ms)

    async def _resync_clock(self, exchange_id: str) -> None:
        """The venue refused a signed request's timestamp mid-session: measure the clocks again, as at start-up.
        Apart beyond `max_clock_skew_ms`, the venue is degraded — no new orders there (risk-reducing ones still go)
        until a request succeeds again — and the request fails naming the skew; within it (the request was late,
        not the clock), it is sent once more."""
        client = self._by_id[exchange_id]
        before = self._wall_ms()
        server = await client.fetch_time()  # public, unsigned: no timestamp to refuse
        after = self._wall_ms()
        skew, limit = int(server) - (before + after) // 2, self._config.max_clock_skew_ms
        log.warning("venue_clock_measured_again", venue=self.venue, host=exchange_id, skew_ms=skew, limit_ms=limit,
                    detail="the venue refused a request's timestamp")
        if abs(skew) > limit:
            error = VenueDegraded(f"{self.venue}: the venue's clock is {skew:+d} ms from ours, beyond the limit of "
                                  f"{limit} ms: no new orders there until the clocks agree (check this host's time "
                                  "sync)")
            client.gate.record(error)
            raise error

    async def _set_leverage(self, client: Any, rules: MarketRules) -> None:
        # OKX sets leverage per margin mode: the cross one, which every perp order of ours carries.
        params = {"mgnMode": self._config.margin_mode} if client.id == "okx" else {}
        try:
            await client.set_leverage(self._config.leverage, rules.symbol, params)
        except ccxt.BadRequest as exc:
            if "110043" not in str(exc):  # Bybit's "leverage not modified": it already is what we ask
                raise

    async def _position_mode_hedged(self, client: Any) -> bool | None:
        if client.has.get("fetchPositionMode"):
            mode = await client.fetch_position_mode()
            return None if mode.get("hedged") is None else bool(mode["hedged"])
        # Bybit has no query for it: each position record says (positionIdx 0 one-way, 1 and 2 hedge). With no
        # record there is nothing to contradict the config, and the venue's default is one-way.
        symbols = [r.symbol for i, r in self._markets.items() if ccxt_symbol(i)[0] == "Perp"]
        records = await client.fetch_positions(symbols)
        indexes = {str((p.get("info") or {}).get("positionIdx", "0")) for p in records}
        return bool(indexes - {"0"}) if records else self._config.hedged

    async def _check_modes(self, client: Any) -> None:
        venue = self._config.venue
        hedged = await self._position_mode_hedged(client)
        if hedged is None or bool(hedged) != self._config.hedged:
            want = "hedge" if self._config.hedged else "one-way"
            have = "unknown" if hedged is None else ("hedge" if hedged else "one-way")
            raise AccountModeMismatch(venue, f"position mode is {have}, the config requires {want}: change it on "
                                             "the venue (it is never changed for you)")
        if not client.has.get("fetchMarginMode"):
            return  # OKX: the margin mode is each order's (`tdMode`), and ours say cross; nothing to verify
        for instrument, rules in self._markets.items():
            if ccxt_symbol(instrument)[0] != "Perp":
                continue
            margin = (await client.fetch_margin_mode(rules.symbol)).get("marginMode")
            if margin != self._config.margin_mode:
                raise AccountModeMismatch(venue, f"margin mode on {rules.symbol} is {margin}, the config requires "
                                                 f"{self._config.margin_mode}: change it on the venue (it is never "
                                                 "changed for you)")

    # --- orders ------------------------------------------------------------------------------------------------

    def rules(self, instrument: str) -> MarketRules:
        rules = self._markets.get(InstrumentId(instrument))
        if rules is None:
            raise NonRetryableVenueError(f"{instrument} is not among the instruments {self.venue} was started for")
        return rules

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        # While an order is being placed the venue may hold its trade before we have published it (its fills are
        # published before this returns): the account report counts it as one report to come.
        self._submitting += 1
        try:
            return await self._submit_order(order)
        finally:
            self._submitting -= 1

    async def _submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        if not self.started:
            raise FatalVenueError(f"{self.venue}: submit_order before start()")
        cid = order.client_order_id
        seen = self._orders.get(cid)
        if seen is not None:
            return seen
        kind, symbol, _ = ccxt_symbol(order.instrument_id)
        client = self._clients.get(kind)
        if client is None:
            raise NonRetryableVenueError(f"{self.venue}: order {cid} on {order.instrument_id}: no {kind} market is "
                                         f"configured on this venue")
        refusal, price, venue_cid = self._check(order, self._config.exchanges[kind])
        if refusal is not None:
            return self._record(self._report(cid, None, "rejected", refusal))
        what = f"order {cid} on {order.instrument_id}"
        early = await self._before_send(client, order, kind, symbol, price, venue_cid, what)
        if early is not None:
            return early
        for _ in range(self._config.resend_attempts + 1):
            client.gate.admit_order(what, risk_reducing=order.reduce_only)
            self._unknown.add(cid)  # from here until an answer, the order may exist on the venue
            try:
                raw = await self._create(client, kind, symbol, order, price, venue_cid)
            except ccxt.BaseError as exc:
                error = self._error(exc, Call.WRITE, client=client, client_order_id=cid)
                if not isinstance(error, UnknownOrderOutcome):
                    self._unknown.discard(cid)  # an answer: the venue did nothing
                    if isinstance(error, VenueRejected):
                        return self._record(self._report(cid, None, "rejected", error.reason))
                    raise error from None
                # A timeout, a dropped connection, a 5xx, an unreadable answer, or "duplicate client id": find out
                # what the venue has.
                found = await self._look_up(client, symbol, venue_cid, order)
                if found is not None:
                    return await self._done(order, kind, symbol, found)
                if _stays_unknown(error, exc):
                    raise error from None
                continue  # not on the venue: resend, with the same client id
            return await self._done(order, kind, symbol, raw)
        self._unknown.discard(cid)
        raise RetryableVenueError(f"{self.venue}: order {cid} was not placed: the venue did not answer, and did not "
                                  f"have it when asked ({self._config.resend_attempts + 1} attempts)")

    async def _before_send(self, client: Any, order: SubmitOrder, kind: str, symbol: str, price: Decimal | None,
                           venue_cid: str, what: str) -> OrderStatusReport | None:
        """The order's outcome if it is settled before anything is sent (found on the venue, or refused for lack
        of funds); None: send it. Raises if it may not go now: a banned or throttled host, or a degraded one for new
        exposure, refuses it here, raising so that the same client id can go later — never queued, never sent into
        a ban. With split wallets (Binance) the quote it needs is first moved to the wallet it draws on."""
        if order.client_order_id in self._unknown:  # sent before, fate unknown: ask the venue before any re-send
            found = await self._look_up(client, symbol, venue_cid, order)
            if found is not None:
                return await self._done(order, kind, symbol, found)
        client.gate.admit_order(what, risk_reducing=order.reduce_only)
        unfunded = None if self.funding is None else \
            await self.funding.fund(order, kind, symbol, order.quantity, price)
        return None if unfunded is None else self._record(self._report(order.client_order_id, None, "rejected",
                                                                       unfunded))

    async def _done(self, order: SubmitOrder, kind: str, symbol: str, raw: Mapping[str, Any]) -> OrderStatusReport:
        report = await self._settled(order, raw)
        if self.funding is not None and kind == "Spot" and raw.get("filled"):
            await self.funding.sweep(order, symbol, raw)  # a spot sell's proceeds back to futures margin
        return report

    def _check(self, order: SubmitOrder, exchange_id: str) -> tuple[str | None, Decimal | None, str]:
        """(why the order cannot be sent as it is, or None; its limit price on the tick; its client id in the
        venue's form)."""
        try:
            venue_cid = to_venue(order.client_order_id, client_id_venue(exchange_id))
        except ClientIdError as exc:  # refused before it is sent, rather than sent under an id not its own
            return str(exc), None, ""
        rules = self.rules(order.instrument_id)
        price = None if order.limit_price is None else rules.cap_price(order.limit_price, order.side)
        if price is not None and price <= 0:
            return f"limit price {order.limit_price} is not positive on the tick {rules.price_tick}", None, venue_cid
        return rules.refusal(order.quantity, price, market_order=price is None), price, venue_cid

    async def _create(self, client: Any, kind: str, symbol: str, order: SubmitOrder, price: Decimal | None,
                      venue_cid: str) -> dict[str, Any]:
        params: dict[str, Any] = {"newClientOrderId": venue_cid} if client.id.startswith("binance") \
            else {"clientOrderId": venue_cid}
        amount = str(self.rules(order.instrument_id).venue_amount(order.quantity))
        if kind == "Perp" and client.id == "okx":
            params["marginMode"] = self._config.margin_mode  # OKX's tdMode, on every derivatives order
        if kind == "Spot" and client.id == "okx" and price is None:
            params["tgtCcy"] = "base_ccy"  # a spot market order sized in the base asset, as ours are
        if order.reduce_only and kind == "Perp":
            # (Spot has no reduce-only flag: a spot sell cannot open a short, it fails on the balance instead.)
            params["reduceOnly"] = True
        side = "buy" if order.side is Side.BUY else "sell"
        if price is None:
            result: dict[str, Any] = await client.create_order(symbol, "market", side, amount, None, params)
        else:
            params["timeInForce"] = "FOK"  # the slippage cap: all of it within the price, or nothing
            result = await client.create_order(symbol, "limit", side, amount, str(price), params)
        if result.get("status") is None:  # Bybit answers a create with the ids only: ask what became of it
            return await self._look_up(client, symbol, venue_cid, order) or result
        return result

    async def _look_up(self, client: Any, symbol: str, venue_cid: str, order: SubmitOrder) -> dict[str, Any] | None:
        """The order with this client id on the venue; None if the venue has none. Raises `UnknownOrderOutcome`
        if the venue cannot be asked: the order stays unknown and the next submit asks again."""
        cid = order.client_order_id
        try:
            if client.id.startswith("binance") or client.id == "okx":  # both look an order up by its client id
                try:
                    found: dict[str, Any] = await client.fetch_order(None, symbol,
                                                                     _client_id_params(client, venue_cid))
                except ccxt.OrderNotFound:
                    return None
                return found
            # Elsewhere: the open orders, then the finished ones, filtered by client id on the venue.
            params = _client_id_params(client, venue_cid)
            closed = client.fetch_canceled_and_closed_orders if client.has.get("fetchCanceledAndClosedOrders") \
                else client.fetch_closed_orders
            for fetch in (client.fetch_open_orders, closed):
                for candidate in await fetch(symbol, None, None, params):
                    if candidate.get("clientOrderId") == venue_cid:
                        return dict(candidate)
            return None
        except (ccxt.BaseError, RetryableVenueError) as exc:  # RetryableVenueError: the gate refused to ask now
            raise UnknownOrderOutcome(f"{self.venue}: order {cid} on {order.instrument_id} was sent and its outcome "
                                      f"is unknown (the look-up failed: {type(exc).__name__}); it is looked up "
                                      "again before anything is re-sent", cid) from None

    async def _settled(self, order: SubmitOrder, raw: Mapping[str, Any]) -> OrderStatusReport:
        cid = order.client_order_id
        self._unknown.discard(cid)
        venue_order_id = VenueOrderId(str(raw["id"])) if raw.get("id") is not None else None
        if venue_order_id is not None:
            self._order_clients[venue_order_id] = cid
        if raw.get("status") is None:  # an acknowledgement only (Bybit, OKX), and the look-up did not find it yet
            status, filled = "accepted", ZERO
        else:
            rules = self.rules(order.instrument_id)
            state = parse_order(raw, self._config.exchanges[ccxt_symbol(order.instrument_id)[0]], rules.contract_size)
            status, filled = state.status, state.filled
        reason = "" if status != "canceled" or filled else "not filled within the limit price (fill-or-kill)"
        if status == "canceled" and not filled and order.limit_price is not None:
            status = "rejected"  # a fill-or-kill that did not fill: the venue refused the whole order
        report = self._record(self._report(cid, venue_order_id, status, reason))
        if filled:
            try:
                await self._poll_instrument(order.instrument_id)  # the fills, before the caller counts its reports
            except VenueError:
                # The order stands whatever this read says: its fills come with the next `poll_fills()` (the
                # backstop), rather than an error about an order that filled.
                self.fills_overdue = True
        return report

    async def resolve_order(self, order: SubmitOrder) -> tuple[OrderStatusReport, tuple[FillReport, ...]] | None:
        """Recovery at a restart (`daemon.recovery`): what became of an order an earlier run sent, asked by its
        client id, as an unknown outcome is (`_look_up`). None: the venue never had it (recorded here as never
        sent, so this account never sends that id). An order still resting is cancelled first: the restarted
        strategy plans afresh from the venues' truth and no longer intends it. The fills are the order's trades,
        read exactly and marked seen — they are in the balances and positions the books open on, read after this,
        so no later poll or stream publishes them again — returned for the journal, never published. Raises
        `UnknownOrderOutcome` if the venue cannot be asked."""
        cid = order.client_order_id
        kind, symbol, _ = ccxt_symbol(order.instrument_id)
        client, exchange_id = self._clients[kind], self._config.exchanges[kind]
        _, _, venue_cid = self._check(order, exchange_id)
        found = await self._look_up(client, symbol, venue_cid, order) if venue_cid else None
        if found is None:
            self._record(self._report(cid, None, "rejected", "never sent: the venue has no order with this client id "
                                                            "(found at a restart)"))
            return None
        size = self.rules(order.instrument_id).contract_size
        state = parse_order(found, exchange_id, size)
        cancelled = False
        if state.status == "accepted":  # resting (maybe partly filled)
            try:
                await client.cancel_order(str(state.venue_order_id), symbol)
                cancelled = True
            except ccxt.OrderNotFound:
                pass  # filled or cancelled since it was read
            except ccxt.BaseError as exc:
                raise self._error(exc, Call.WRITE, what=f"cancelling order {cid} at a restart", client=client) \
                    from None
            found = await self._look_up(client, symbol, venue_cid, order) or found
            state = parse_order(found, exchange_id, size)
        self._order_clients[state.venue_order_id] = cid
        fills: list[FillReport] = []
        if state.filled:
            since = found.get("timestamp")
            try:
                trades = await self._trades_since(client, symbol, int(since) if since else None)
            except ccxt.BaseError as exc:
                raise self._error(exc, Call.READ, what=f"reading the trades of order {cid} at a restart") from None
            for trade in trades:
                if str(trade.get("order")) != state.venue_order_id:
                    continue
                async with self._publish_lock:
                    fill = await self._fill(client, order.instrument_id, symbol, trade)
                    self._seen_trades.add((client.id, str(trade["id"])))
                if fill is not None:
                    fills.append(fill)
        reason = "cancelled at a restart: the strategy no longer intends it" if cancelled else state.reason
        report = self._record(self._report(cid, state.venue_order_id, state.status, reason))
        return report, tuple(fills)

    def _report(self, cid: ClientOrderId, venue_order_id: VenueOrderId | None, status: str,
                reason: str) -> OrderStatusReport:
        now = self._clock.now_ns()
        return OrderStatusReport(self.venue, cid, venue_order_id, status, reason, now, now)

    def _record(self, report: OrderStatusReport) -> OrderStatusReport:
        self._orders[report.client_order_id] = report
        return report

    async def cancel_all_orders(self) -> int:
        """Cancel every open order in the traded markets, one by one; how many the venue cancelled. (One by one so
        the count is the venue's own answer, and an order that filled meanwhile is not counted.)"""
        cancelled = 0
        for instrument, rules in self._markets.items():
            client = self._clients[ccxt_symbol(instrument)[0]]
            try:
                open_orders = await client.fetch_open_orders(rules.symbol)
            except ccxt.BaseError as exc:
                raise self._error(exc, Call.READ, what=f"reading the open orders on {rules.symbol}") from None
            for o in open_orders:
                venue_order_id = VenueOrderId(str(o["id"]))
                try:
                    await client.cancel_order(str(venue_order_id), rules.symbol)
                except ccxt.OrderNotFound:
                    continue  # filled or cancelled since it was listed
                except ccxt.BaseError as exc:
                    raise self._error(exc, Call.WRITE, what=f"cancelling order {venue_order_id} on {rules.symbol}",
                                      client=client) from None
                cancelled += 1
                cid = self._order_clients.get(venue_order_id) or from_venue(o.get("clientOrderId"))
                if cid is not None:
                    self._record(self._report(cid, venue_order_id, "canceled", "cancelled by request"))
        return cancelled

    # --- account -----------------------------------------------------------------------------------------------

    async def fetch_account(self) -> AccountReport:
        return (await self.fetch_account_detail()).report

    async def fetch_account_detail(self) -> AccountDetail:
        """Every wallet the strategy uses and every open perp, as the venue has them. The report sums the
        wallets per asset, as our books keep one account per venue."""
        ids = list(self._by_id)
        try:
            # Concurrently: the reconciler's wall time is the slowest call's, not their sum.
            *balances, raw_positions = await asyncio.gather(
                *(self._by_id[i].fetch_balance() for i in ids),
                self._clients["Perp"].fetch_positions() if "Perp" in self._clients else _nothing())
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, what="reading the account") from None
        # Each read exactly from the venue's payload (daemon.venues.ccxt_parse), checked against ccxt's own reading.
        wallets = {exchange_id: parse_balances(balance, exchange_id)
                   for exchange_id, balance in zip(ids, balances, strict=True)}
        perps: Any = self._clients.get("Perp")
        positions = [state for p in raw_positions
                     if (state := parse_position(p, perps.id, self._contract_size(perps, p["symbol"]))) is not None]
        now = self._clock.now_ns()
        # Counted within the run (a restart's books open on the venue's truth), and read after the venue answered:
        # a fill published while the venue was read is waited for rather than called a drift; so is an order being
        # placed (one report to come: its fills are published before `submit_order` returns, and the next read
        # counts them exactly).
        sent = self._count.of(self._config.venue) + self._submitting if self._count is not None else None
        report = account_report(self._config.venue, wallets.values(), positions, now, now, sent)
        return AccountDetail(report, tuple((e, a, v) for e, w in wallets.items() for a, v in sorted(w.items()) if v),
                             tuple(positions))

    def _contract_size(self, client: Any, symbol: str) -> Decimal:
        """Base units per unit of `symbol`'s amounts: from the rules of a traded market, else ccxt's market."""
        for instrument, rules in self._markets.items():
            if rules.symbol == symbol and self._clients[ccxt_symbol(instrument)[0]] is client:
                return rules.contract_size
        market = (client.markets or {}).get(symbol)
        return contract_size(market) if market is not None else Decimal(1)

    async def fetch_open_orders(self) -> tuple[OpenOrder, ...]:
        """Every order resting in the traded markets, read concurrently."""
        instruments = list(self._markets)
        try:
            answers = await asyncio.gather(*(self._clients[ccxt_symbol(i)[0]].fetch_open_orders(self._markets[i].symbol)
                                             for i in instruments))
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, what="reading the open orders") from None
        return tuple(self._open_order(instrument, o)
                     for instrument, orders in zip(instruments, answers, strict=True) for o in orders)

    def _open_order(self, instrument: InstrumentId, o: Mapping[str, Any]) -> OpenOrder:
        kind = ccxt_symbol(instrument)[0]
        state = parse_order(o, self._config.exchanges[kind], self.rules(instrument).contract_size)
        return OpenOrder(instrument, self._order_clients.get(state.venue_order_id) or state.client_order_id,
                         state.venue_order_id, Side.BUY if o["side"] == "buy" else Side.SELL, state.amount,
                         state.filled, _dec(o.get("price")))

    # --- fills -------------------------------------------------------------------------------------------------

    async def poll_fills(self) -> int:
        """Publish every trade since the last one seen in the traded markets; how many were new."""
        new = sum([await self._poll_instrument(i) for i in self._markets])
        self.fills_overdue = False
        return new

    async def _poll_instrument(self, instrument: InstrumentId | str) -> int:
        """Publish the new trades of one market, page by page from the last one seen."""
        instrument = InstrumentId(instrument)
        kind, symbol, _ = ccxt_symbol(instrument)
        client = self._clients[kind]
        window = _TRADE_WINDOW_MS.get(client.id)
        new = 0
        while True:
            since = self._since_ms.get(instrument)
            try:
                trades = await self._trades_since(client, symbol, since)
                for trade in sorted(trades, key=lambda t: (t["timestamp"] or 0, str(t["id"]))):
                    new += await self._publish(client, instrument, symbol, trade)
            except ccxt.BaseError as exc:
                raise self._error(exc, Call.READ, what=f"reading the trades on {symbol}") from None
            if len(trades) >= _trades_page(client.id) and self._since_ms.get(instrument) != since:
                continue  # a full page: the rest follows from its last trade
            if window is not None and since is not None and since + window < self._wall_ms():
                # The venue answers one window from `since` (ccxt bounds Binance USDⓈ-M's to 7 days): step on.
                self._since_ms[instrument] = max(self._since_ms.get(instrument, since), since + window)
                continue
            return new

    async def _trades_since(self, client: Any, symbol: str, since: int | None) -> list[Any]:
        """The trades of `symbol` from `since` on. Binance answers oldest first (the caller pages on from the last);
        OKX newest first and 100 at most, so a full page is followed by the pages older than it (its `after`
        cursor, the oldest bill id) back to `since`: else the trades beyond the newest 100 were skipped for good."""
        page_size = _trades_page(client.id)
        trades = list(await client.fetch_my_trades(symbol, since, page_size))
        if client.id != "okx":
            return trades
        page = trades
        while len(page) >= page_size:
            oldest = min(int(t["info"]["billId"]) for t in page)
            page = list(await client.fetch_my_trades(symbol, since, page_size, {"after": str(oldest)}))
            trades += page
        return trades

    async def _publish(self, client: Any, instrument: InstrumentId, symbol: str, trade: Mapping[str, Any],
                       advance: bool = True) -> int:
        key = (client.id, str(trade["id"]))  # Binance numbers spot and USDⓈ-M trades separately: one key space each
        if advance:  # REST only: a stream's trade must not move the poll past an earlier trade the stream lost
            stamp = int(trade["timestamp"] or 0)
            self._since_ms[instrument] = max(self._since_ms.get(instrument, 0), stamp)
        async with self._publish_lock:  # else both could pass the check while one awaits the order look-up
            if key in self._seen_trades:
                return 0
            fill = await self._fill(client, instrument, symbol, trade)
            self._seen_trades.add(key)
            if fill is None:
                return 0
            self.reports_sent += 1
            if self._count is not None:
                self._count.count(fill)  # before the send: from here the reconciler waits for it to be booked
            await self._reports.send(fill)
            return 1

    # --- for the private streams (daemon.venues.ccxt_streams; guest edit by the streams helper) -----------------

    @property
    def exchange_ids(self) -> tuple[str, ...]:
        """The ccxt exchanges this account trades through: one stream client each."""
        return tuple(self._by_id)

    def client_settings(self, exchange_id: str) -> dict[str, Any]:
        """A copy of what the REST client of `exchange_id` was made with (credentials, session, timeout, options),
        for a ccxt.pro client of the same account. Holds the secret: never log it."""
        settings = dict(self._client_settings[exchange_id])
        settings["options"] = json.loads(json.dumps(settings["options"]))  # ccxt extends it in place
        return settings

    def loaded_markets(self, exchange_id: str) -> dict[str, Any]:
        """The markets `start()` loaded for `exchange_id` (a stream client reuses them: no second load)."""
        return dict(self._by_id[exchange_id].markets or {})

    async def publish_trade(self, exchange_id: str, trade: Mapping[str, Any]) -> int:
        """Publish a trade a private stream delivered (a ccxt unified trade of `exchange_id`), de-duplicated with
        the REST poll by (venue, trade id); 1 if it was new. A trade in a market not traded here is ignored."""
        client = self._by_id[exchange_id]
        symbol = str(trade.get("symbol"))
        for instrument, rules in self._markets.items():
            if rules.symbol == symbol and self._clients[ccxt_symbol(instrument)[0]] is client:
                try:
                    return await self._publish(client, instrument, symbol, trade, advance=False)
                except ccxt.BaseError as exc:
                    raise self._error(exc, Call.READ, what=f"reading the order of a streamed trade on {symbol}") \
                        from None
        return 0

    async def _fill(self, client: Any, instrument: InstrumentId, symbol: str,
                    trade: Mapping[str, Any]) -> FillReport | None:
        """The fill report of `trade`, read exactly; None if it is not a fill (a Bybit funding execution) or not an
        order of ours (placed by hand or by other software: the reconciler shows what it changed)."""
        parsed = parse_trade(trade, client.id, self.rules(instrument).contract_size, venue=self._config.venue)
        if parsed is None:
            return None
        cid = self._order_clients.get(parsed.venue_order_id) or from_venue(parsed.venue_client_id)
        if cid is None and parsed.venue_client_id is None:  # Binance's trades do not say: ask the order
            order = await client.fetch_order(str(parsed.venue_order_id), symbol)
            cid = from_venue(order.get("clientOrderId"))
        if cid is None:
            return None
        self._order_clients[parsed.venue_order_id] = cid
        return FillReport(self.venue, self.trade_id(client, parsed.trade_id), cid, parsed.venue_order_id, instrument,
                          parsed.side, parsed.quantity, parsed.price, parsed.fee, parsed.fee_currency, parsed.ts_event,
                          self._clock.now_ns())

    def trade_id(self, client: Any, venue_trade_id: str) -> TradeId:
        """The fill's id in our books, unique in this account: the venue's own, except on a second ccxt exchange
        of the same account (Binance spot beside USDⓈ-M, which number their trades separately), prefixed by it, so
        a spot trade and a perp trade with the same number are two fills (the fills actor de-duplicates by
        venue and trade id)."""
        perps = self._clients.get("Perp")
        if perps is None or client is perps or len(self._by_id) == 1:
            return TradeId(venue_trade_id)
        return TradeId(f"{client.id}-{venue_trade_id}")

    # --- errors ------------------------------------------------------------------------------------------------

    def _error(self, exc: BaseException, call: Call, *, starting: bool = False, what: str = "",
               client: Any = None, client_order_id: str | None = None) -> VenueError:
        creds = self._config.credentials
        error = map_error(corrected(exc), venue=self._config.venue, call=call, starting=starting,
                          key_setting=self._config.key_setting, client_order_id=client_order_id,
                          headers=getattr(client, "last_response_headers", None) or None,
                          now_ms=self._wall_ms(), secrets=(creds.secret, creds.password or ""))
        if what and not starting:
            error.args = (f"{error} (while {what})",)
        elif what:
            error.args = (f"{error} (at start-up, while {what})",)
        if isinstance(error, VenueAccessLost) and not any(g.access_lost for g in self.gates.values()):
            # The key worked at start-up and no longer does: no request with it again, on any host of this account.
            log.error("venue_access_lost", venue=self._config.venue, key=self._config.credentials.key_hint,
                      error=str(error))
            for gate in self.gates.values():
                gate.access_lost = error
        return error


# ccxt's own limiter, counting as the venues count: the weight spent in the last minute against the venue's budget
# (ccxt's costs per endpoint). Its default leaky bucket holds one request and forgets idle time (ccxt 4.5.90 restarts
# its clock at each burst), so every request paid the previous one's weight however long ago it was — 250 ms before
# a Binance order after a fills read (tests/bench/bench_live_venues.py). The venues' own limits are per minute.
RATE_LIMITER: dict[str, Any] = {"rateLimiterAlgorithm": "rollingWindow", "rollingWindowSize": 60_000}

TRADES_PAGE = 500
_TRADES_PAGE_OF = {"okx": 100}  # OKX's fills: 100 at most a request (a larger limit is refused)


def _trades_page(exchange_id: str) -> int:
    return _TRADES_PAGE_OF.get(exchange_id, TRADES_PAGE)
# How far from `since` one trade-history request reaches, where the venue (or ccxt) bounds it.
_TRADE_WINDOW_MS = {"binanceusdm": 7 * 24 * 3600 * 1000}

def _lean_options(exchange_id: str, kinds: list[str]) -> dict[str, Any]:
    """Only what the adapter uses: no currencies or margin pairs, and only the kinds of market it trades."""
    if exchange_id == "binanceusdm":
        return {"fetchCurrencies": False}
    if exchange_id == "binance":
        return {"fetchCurrencies": False, "fetchMargins": False, "fetchMarkets": {"types": ["spot"]},
                "defaultType": "spot"}
    types = {"bybit": {"Perp": "linear", "Spot": "spot"}, "okx": {"Perp": "swap", "Spot": "spot"}}.get(exchange_id)
    return {} if types is None else {"fetchMarkets": {"types": [types[k] for k in kinds if k in types]}}


def _stays_unknown(error: VenueError, exc: BaseException) -> bool:
    """After a look-up that did not find the order: whether it must stay unknown rather than be re-sent. The venue
    says it has the id, or it answered 200 with a body we cannot read (the order most likely stands, and may not be
    listed yet): ask again before anything is re-sent."""
    return isinstance(error, DuplicateClientOrderId) or isinstance(exc, ccxt.BadResponse)


def _client_id_params(client: Any, venue_cid: str) -> dict[str, Any]:
    """The venue's own filter by client order id, for an order look-up."""
    if client.id.startswith("binance"):
        return {"origClientOrderId": venue_cid}
    if client.id == "bybit":
        return {"orderLinkId": venue_cid}
    return {"clOrdId": venue_cid}


def _market_filter(exchange_id: str, symbols: list[str]) -> dict[str, Any]:
    """Parameters that ask the venue for only these markets, where it can (Binance spot's `symbols`)."""
    if exchange_id == "binance":
        ids = [symbol.replace("/", "") for symbol in symbols if ":" not in symbol]
        return {"symbols": json.dumps(ids, separators=(",", ":"))} if len(ids) == len(symbols) else {}
    return {}


async def _nothing() -> list[Any]:
    return []


def client_id_venue(exchange_id: str) -> str:
    """The name `daemon.venues.client_ids` knows the exchange's client-id rule by."""
    return "okx" if exchange_id.startswith("okx") else "bybit" if exchange_id.startswith("bybit") else exchange_id
