"""The positions API's JSON, shaped from the daemon's books and market. Pure: no I/O, no clock, no state.

Units, everywhere: money (P&L, notional, NAV, AAVE values) in the share class's currency (`currency`);
prices (entry, mark) in USD as the venues quote them (`price_currency`); quantities in native units of the
asset. Every Decimal is a string, exact (`dec`); a value that cannot be known (no mark yet, no debt for a
health factor) is null, never a guess.

A *holding* is one position as a client sees it, keyed by `symbol`: a perp (`binance:Perp:ETHUSDT`), a spot
or wallet token (`binance:ETH`, `wallet:weETH`), or one side of the AAVE book (`aave_v3:aWeETH` collateral,
`aave_v3:variableDebtWETH` debt). Stablecoins are cash, not positions. Only perps carry P&L: the books keep
tokens in native units without a cost basis, so their P&L is in the NAV, not per holding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from daemon.domain.aave import health_factor, loan_to_value
from daemon.domain.booking import split_instrument
from daemon.domain.exposure import perp_asset
from daemon.domain.ledger import WALLET, LedgerSnapshot, PerpHolding
from daemon.domain.market import ATOKEN_RESERVE, DEBT_RESERVE, STABLECOINS, MarketState, MissingMarketData
from daemon.domain.messages import (
    BalancesChanged,
    OrderFilled,
    PortfolioSnapshotted,
    PositionView,
    RiskAssessed,
    TradingState,
)
from daemon.domain.pnl import aave_position_usd
from daemon.lifecycle import ActorRecord, ActorState

ZERO = Decimal(0)
PERP, SPOT, WALLET_TOKEN, COLLATERAL, DEBT = "perp", "spot", "wallet", "collateral", "debt"

Json = dict[str, Any]


def dec(value: Decimal | None) -> str | None:
    """Exact, without an exponent (`1E+2` → `100`), trailing zeros dropped; null for None and ±Infinity."""
    if value is None or not value.is_finite():
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def iso(ts_ns: int | None) -> str | None:
    """Nanoseconds since the epoch as ISO 8601 UTC with milliseconds (`2024-06-01T00:00:00.000Z`)."""
    if ts_ns is None:
        return None
    moment = datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).replace(microsecond=ts_ns // 1000 % 1_000_000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(message: Json) -> bytes:
    """One compact JSON text (UTF-8), as sent on the wire: encoded once, shared by every client."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class ViewConfig:
    """What the views need from the configuration."""

    currency: str  # the share class's: USDT or ETH
    liquidation_threshold: Decimal  # of the lending venue's e-mode, for the health factor
    lending_venue: str = "aave_v3"
    initial_capital: Decimal = ZERO  # in `currency`: NAV less this is `nav_change`


class Money:
    """USD → the share class's currency at the snapshot's ETH price (USDT counts as one dollar)."""

    def __init__(self, currency: str, eth_usd: Decimal) -> None:
        self._divisor = None if currency in STABLECOINS else eth_usd

    def __call__(self, usd: Decimal | None) -> Decimal | None:
        if usd is None or self._divisor is None:
            return usd
        return usd / self._divisor if self._divisor else None


# --- holdings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holding:
    """One position, valued. `booked` is what the books hold for it: a change there is a position change,
    anything else (mark, index growth) is a price move."""

    symbol: str
    venue: str
    kind: str  # perp | spot | wallet | collateral | debt
    instrument: str  # the perp's symbol, or the token as the books hold it (aWeETH: scaled)
    asset: str  # what `quantity` counts
    quantity: Decimal | None  # signed, native units; None while an AAVE index is missing
    booked: tuple[Decimal, ...]
    entry_price: Decimal | None = None
    mark_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    realized_pnl: Decimal | None = None
    notional: Decimal | None = None
    leverage: Decimal | None = None

    @property
    def side(self) -> str:
        amount = self.booked[0] if self.booked else ZERO
        if amount == 0:
            return "flat"
        return "short" if self.kind == DEBT or amount < 0 else "long"


def token_symbol(account: str, token: str, lending_venue: str) -> str:
    """The symbol of a token holding: AAVE's tokens under the lending venue, the rest under their account."""
    if account == WALLET and (token in ATOKEN_RESERVE or token in DEBT_RESERVE):
        return f"{lending_venue}:{token}"
    return f"{account}:{token}"


def holdings(snapshot: PortfolioSnapshotted, market: MarketState, config: ViewConfig) -> dict[str, Holding]:
    """Every position in the snapshot's books: perps (flat ones too while they carry realized P&L), then
    tokens. Perp marks are the positions actor's own; token prices and AAVE indexes come from `market`."""
    ledger = snapshot.ledger
    if ledger is None:
        return {}
    money = Money(config.currency, snapshot.eth_usd)
    out = _perps(ledger, snapshot.positions, market, money)
    aave_leverage = _aave_totals(ledger, market)[2]
    for account, token, amount in ledger.balances:
        if token in STABLECOINS:
            continue
        holding = _token(account, token, amount, market, money, config.lending_venue, aave_leverage)
        out[holding.symbol] = holding
    return out


def _price(market: MarketState, asset: str) -> Decimal | None:
    try:
        return market.price_usd(asset)
    except MissingMarketData:
        return None


def _perps(ledger: LedgerSnapshot, views: Sequence[PositionView], market: MarketState,
           money: Money) -> dict[str, Holding]:
    marks: dict[str, Decimal] = {p.instrument_id: p.mark_price for p in views}
    valued: list[tuple[PerpHolding, str, Decimal | None, Decimal | None]] = []
    equity: dict[str, Decimal] = {}  # venue → USDT + uPnL of its perps: what its positions are levered on
    for perp in ledger.perps:
        symbol = f"{perp.venue}:Perp:{perp.instrument}"
        mark = marks.get(symbol)
        if mark is None:
            try:
                mark = market.mark(perp.venue, perp_asset(perp.instrument))
            except MissingMarketData:
                mark = None
        upnl = perp.quantity * mark - perp.cost if mark is not None else None
        valued.append((perp, symbol, mark, upnl))
        equity[perp.venue] = equity.get(perp.venue, ledger.balance(perp.venue, "USDT")) + (upnl or ZERO)
    out: dict[str, Holding] = {}
    for perp, symbol, mark, upnl in valued:
        notional = abs(perp.quantity) * mark if mark is not None else None
        venue_equity = equity[perp.venue]
        out[symbol] = Holding(
            symbol, perp.venue, PERP, perp.instrument, perp_asset(perp.instrument), perp.quantity,
            (perp.quantity, perp.cost, perp.realized_pnl),
            entry_price=perp.entry_price if perp.quantity else None, mark_price=mark,
            unrealized_pnl=money(upnl), realized_pnl=money(perp.realized_pnl), notional=money(notional),
            leverage=notional / venue_equity if notional is not None and venue_equity > 0 else None,
        )
    return out


def _token(account: str, token: str, amount: Decimal, market: MarketState, money: Money, lending_venue: str,
           aave_leverage: Decimal | None) -> Holding:
    symbol = token_symbol(account, token, lending_venue)
    if symbol.startswith(f"{lending_venue}:"):
        kind = COLLATERAL if token in ATOKEN_RESERVE else DEBT
        asset = (ATOKEN_RESERVE if kind == COLLATERAL else DEBT_RESERVE)[token][1]
        try:
            quantity: Decimal | None = market.native(token, amount)[1]
        except MissingMarketData:
            quantity = None
        venue, leverage = lending_venue, aave_leverage
    else:
        kind = WALLET_TOKEN if account == WALLET else SPOT
        asset, quantity, venue, leverage = token, amount, account, None
    price = _price(market, asset)
    notional = abs(quantity) * price if quantity is not None and price is not None else None
    return Holding(symbol, venue, kind, token, asset, quantity, (amount,), mark_price=price,
                   notional=money(notional), leverage=leverage)


def _aave_totals(ledger: LedgerSnapshot, market: MarketState) -> tuple[Decimal | None, Decimal | None,
                                                                       Decimal | None]:
    """(collateral USD, debt USD, leverage C / (C − D)); Nones while an index or price is missing."""
    try:
        collateral, debt = aave_position_usd(ledger, market)
    except MissingMarketData:
        return None, None, None
    leverage = collateral / (collateral - debt) if debt and collateral > debt else None
    return collateral, debt, leverage


def position_json(h: Holding, last_updated_ns: int | None) -> Json:
    quantity = abs(h.quantity) if h.quantity is not None else None
    total = None if h.unrealized_pnl is None and h.realized_pnl is None else \
        (h.unrealized_pnl or ZERO) + (h.realized_pnl or ZERO)
    return {
        "symbol": h.symbol, "venue": h.venue, "kind": h.kind, "instrument": h.instrument, "asset": h.asset,
        "side": h.side, "quantity": dec(quantity), "entry_price": dec(h.entry_price),
        "current_price": dec(h.mark_price), "unrealized_pnl": dec(h.unrealized_pnl),
        "realized_pnl": dec(h.realized_pnl), "total_pnl": dec(total), "notional_value": dec(h.notional),
        "leverage": dec(h.leverage), "last_updated": iso(last_updated_ns),
    }


# --- the on-chain book, the trading state, the summary -----------------------------------------------------


def onchain_book(ledger: LedgerSnapshot, market: MarketState, config: ViewConfig, eth_usd: Decimal) -> Json:
    """AAVE collateral and debt, native and in the share class's currency, with HF, LTV and leverage."""
    money = Money(config.currency, eth_usd)
    collateral: list[Json] = []
    debt: list[Json] = []
    for account, token, amount in ledger.balances:
        if account != WALLET or (token not in ATOKEN_RESERVE and token not in DEBT_RESERVE):
            continue
        underlying = (ATOKEN_RESERVE.get(token) or DEBT_RESERVE[token])[1]
        try:
            native = abs(market.native(token, amount)[1])
            value: Decimal | None = native * market.price_usd(underlying)
        except MissingMarketData:
            native, value = None, None
        row = {"token": token, "asset": underlying, "scaled_balance": dec(amount), "amount": dec(native),
               "value": dec(money(value))}
        (collateral if token in ATOKEN_RESERVE else debt).append(row)
    c_usd, d_usd, leverage = _aave_totals(ledger, market)
    valued = c_usd is not None and d_usd is not None
    hf = health_factor(c_usd, d_usd, config.liquidation_threshold) if c_usd is not None and d_usd is not None \
        else None
    ltv = loan_to_value(c_usd, d_usd) if c_usd is not None and d_usd is not None else None
    return {
        "venue": config.lending_venue, "valued": valued, "collateral": collateral, "debt": debt,
        "collateral_value": dec(money(c_usd)), "debt_value": dec(money(d_usd)),
        "net_value": dec(money(c_usd - d_usd)) if c_usd is not None and d_usd is not None else None,
        "collateral_eth": dec(c_usd / eth_usd) if c_usd is not None and eth_usd else None,
        "debt_eth": dec(d_usd / eth_usd) if d_usd is not None and eth_usd else None,
        "health_factor": dec(hf), "ltv": dec(ltv), "liquidation_threshold": dec(config.liquidation_threshold),
        "leverage": dec(leverage),
    }


def trading_json(state: TradingState, risk: RiskAssessed | None) -> Json:
    out: Json = {"state": state.value}
    if risk is not None:
        out.update(solvency=risk.solvency, drawdown=dec(risk.drawdown), breaker=risk.breaker,
                   mark_divergence=dec(risk.mark_divergence),
                   margin_ratios={venue: dec(ratio) for venue, ratio in risk.margin_ratios})
    return out


def summary(snapshot: PortfolioSnapshotted | None, market: MarketState, config: ViewConfig,
            trading: TradingState, risk: RiskAssessed | None, last_updated: Mapping[str, int]) -> Json:
    """The whole picture (`GET /summary`, `initial_state`, `summary`). Before the first snapshot: no positions
    and null figures, so a client can connect at start-up."""
    base: Json = {"timestamp": None, "currency": config.currency, "price_currency": "USD"}
    if snapshot is None or snapshot.ledger is None:
        return {**base, "active_positions": 0, "total_exposure": None, "total_pnl": None, "realized_pnl": None,
                "unrealized_pnl": None, "nav": None, "nav_change": None, "positions": {}, "onchain": None,
                "cash": {}, "trading": trading_json(trading, risk), "reports_booked": 0}
    rows = holdings(snapshot, market, config)
    money = Money(config.currency, snapshot.eth_usd)
    realized = sum((h.realized_pnl or ZERO for h in rows.values()), ZERO)
    unrealized = sum((h.unrealized_pnl or ZERO for h in rows.values()), ZERO)
    nav = money(snapshot.nav_usd)
    cash: dict[str, dict[str, str | None]] = {}
    for account, token, amount in snapshot.ledger.balances:
        if token in STABLECOINS:
            cash.setdefault(account, {})[token] = dec(amount)
    return {
        **base, "timestamp": iso(snapshot.ts_event),
        "active_positions": sum(1 for h in rows.values() if h.side != "flat"),
        "total_exposure": dec(sum((h.notional or ZERO for h in rows.values()), ZERO)),
        "total_pnl": dec(realized + unrealized), "realized_pnl": dec(realized), "unrealized_pnl": dec(unrealized),
        "nav": dec(nav), "nav_change": dec(nav - config.initial_capital) if nav is not None else None,
        "net_delta_eth": dec(snapshot.net_delta_eth), "eth_usd": dec(snapshot.eth_usd),
        "positions": {s: position_json(h, last_updated.get(s)) for s, h in rows.items()},
        "onchain": onchain_book(snapshot.ledger, market, config, snapshot.eth_usd),
        "cash": cash, "trading": trading_json(trading, risk), "reports_booked": snapshot.reports_booked,
    }


# --- what a stream carries --------------------------------------------------------------------------------


def fill_json(fill: OrderFilled) -> Json:
    return {
        "venue": fill.venue, "trade_id": fill.trade_id, "client_order_id": fill.client_order_id,
        "symbol": fill.instrument_id, "side": fill.side.value.lower(), "quantity": dec(fill.quantity),
        "price": dec(fill.price), "fee": dec(fill.fee), "fee_currency": fill.fee_currency,
        "timestamp": iso(fill.ts_event),
    }


def change_json(change: BalancesChanged) -> Json:
    return {"venue": change.venue, "report_id": change.report_id, "reason": change.change.reason.value,
            "ref": change.change.ref, "timestamp": iso(change.ts_event)}


def report_symbols(report: OrderFilled | BalancesChanged, lending_venue: str) -> tuple[str, ...]:
    """The holdings a venue report moves (stablecoin legs are cash, not positions)."""
    if isinstance(report, OrderFilled):
        venue, kind, symbol = split_instrument(report.instrument_id)
        return (report.instrument_id,) if kind == "Perp" else (f"{venue}:{perp_asset(symbol)}",)
    out = [token_symbol(t.account, t.token, lending_venue) for t in report.change.tokens if t.token not in STABLECOINS]
    out += [f"{p.venue}:Perp:{p.instrument}" for p in report.change.perps]
    return tuple(dict.fromkeys(out))


# --- health -----------------------------------------------------------------------------------------------


class ReconciliationLike(Protocol):
    """What the reconciler records (daemon.telemetry): only completed runs count as a reconciliation."""

    runs: int
    failures: int
    last_ns: int | None
    drift_usd: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class HealthInputs:
    records: Iterable[ActorRecord]
    now_mono: float
    heartbeat_timeout_s: float
    trading: TradingState
    snapshot: PortfolioSnapshotted | None
    snapshot_age_s: float | None  # real seconds since the API last received a snapshot
    stale_series: Sequence[str]  # past their staleness limit (domain.risk.stale_series)
    reconciliation: ReconciliationLike | None
    clients: int
    waiting_for: str = ""  # why trading has not started yet (daemon.gate), '' once it may trade


def _actor_json(r: ActorRecord, now_mono: float) -> Json:
    age = r.heartbeat_age_s(now_mono)
    return {"state": r.state.value, "restarts": r.restarts, "failures": r.failures,
            "dead_letters": r.dead_letters, "handled": r.handled,
            "heartbeat_age_s": round(age, 3) if age != float("inf") else None, "last_error": r.last_error or None}


def health(h: HealthInputs) -> tuple[int, Json]:
    """(HTTP status, body): unhealthy (503) when an actor failed, stopped or went silent; degraded (200) while
    an actor restarts, trading is not ACTIVE, market data is stale or no snapshot has arrived; else healthy."""
    unhealthy: list[str] = []
    degraded: list[str] = []
    actors: Json = {}
    for r in h.records:
        actors[r.name] = _actor_json(r, h.now_mono)
        if r.state in (ActorState.FAILED, ActorState.STOPPED):
            unhealthy.append(f"actor {r.name} {r.state.value}")
        elif r.heartbeat_age_s(h.now_mono) > h.heartbeat_timeout_s:
            unhealthy.append(f"actor {r.name} has not beaten for over {h.heartbeat_timeout_s:g} s")
        elif r.state is not ActorState.RUNNING:
            degraded.append(f"actor {r.name} {r.state.value}")
    if h.waiting_for:
        degraded.append(h.waiting_for)
    if h.trading is not TradingState.ACTIVE:
        degraded.append(f"trading {h.trading.value}")
    if h.snapshot is None:
        degraded.append("no portfolio snapshot yet")
    if h.stale_series:
        degraded.append(f"stale market data: {', '.join(h.stale_series)}")
    status = "unhealthy" if unhealthy else "degraded" if degraded else "healthy"
    ages = dict(h.snapshot.series_ages_s) if h.snapshot is not None else {}
    rec = h.reconciliation
    body = {
        "status": status, "running": all(r["state"] == ActorState.RUNNING.value for r in actors.values()),
        "reasons": unhealthy + degraded, "trading_state": h.trading.value,
        "trading_waits_for": h.waiting_for or None, "actors": actors,
        "last_reconciliation": None if rec is None or rec.last_ns is None else {
            "timestamp": iso(rec.last_ns), "runs": rec.runs, "failures": rec.failures,
            "drift_usd": {venue: dec(v) for venue, v in rec.drift_usd.items()}},
        "data": {
            "market_time": iso(h.snapshot.ts_event) if h.snapshot is not None else None,
            "snapshot_age_s": round(h.snapshot_age_s, 3) if h.snapshot_age_s is not None else None,
            "max_series_age_s": dec(max(ages.values())) if ages else None,
            "series_ages_s": {k: dec(v) for k, v in ages.items()},
            "stale_series": list(h.stale_series),
        },
        "clients": h.clients,
    }
    return (503 if unhealthy else 200), body
