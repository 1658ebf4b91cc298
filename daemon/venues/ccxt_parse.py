"""ccxt's unified structures (trade, order, position, balance, funding income) → the project's messages, exactly.

ccxt's Python unified numbers are floats (`Exchange.number = float`), so every amount here is read as a decimal
string from the venue's own payload (`info`), by venue; the unified value is still used, as a check: the exact
value must be the float ccxt read (else `VenueBadPayload`, nothing is booked), which catches a field read from the
wrong place. What ccxt works out and the payload does not say plainly (the symbol, the side, the fee's currency, a
timestamp) comes from the unified structure.

Conventions, the simulated venue's: a fee is positive when paid (OKX writes a paid fee as negative), a funding
payment is positive when received, a perp size is signed (short < 0) and in the base asset (an OKX swap's size is
in contracts of `ctVal`), a perp instrument is named `ETHUSDT` in the books and `<venue>:Perp:ETHUSDT` in orders.
Timestamps are nanoseconds. Every parser takes the ccxt exchange id (`binance`, `binanceusdm`, `bybit`, `okx`),
which decides the payload's fields, and optionally `venue`, the account's name in our ledger and the first part of
its instrument ids (default: the exchange's family, `binanceusdm` → `binance`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import ChangeSet, Reason, TokenChange
from daemon.domain.messages import AccountReport, BalancesChanged, FillReport, OrderStatusReport, Side
from daemon.errors import VenueBadPayload
from daemon.venues.client_ids import from_venue

NS_PER_MS = 1_000_000
ZERO = Decimal(0)
ONE = Decimal(1)
FAMILIES = {"binance": "binance", "binanceusdm": "binance", "bybit": "bybit", "okx": "okx"}

# Per venue, the payload fields of a trade: (trade id, order id, client id, price, quantity, fee, fee sign, ccxt's
# fee sign): our fee = fee sign × the payload's, = ccxt's sign × ccxt's unified fee. Binance's REST trades carry no
# client id (look the order up); its ccxt.pro events are the order update's `o`. OKX writes a fee taken as negative;
# ccxt negates it for REST fills but not for the orders channel's `fillFee` (ccxt.pro okx `order_to_trade`).
_TRADE_FIELDS = {
    "binance": ("id", "orderId", None, "price", "qty", "commission", 1, 1),
    "binance-ws": ("t", "i", "c", "L", "l", "n", 1, 1),
    "bybit": ("execId", "orderId", "orderLinkId", "execPrice", "execQty", "execFee", 1, 1),
    "okx": ("tradeId", "ordId", "clOrdId", "fillPx", "fillSz", "fee", -1, 1),
    "okx-ws": ("tradeId", "ordId", "clOrdId", "fillPx", "fillSz", "fillFee", -1, -1),
}
# A Bybit execution is a fill only if it traded (a funding settlement is an execution too, `Funding`).
_BYBIT_FILLS = frozenset({"Trade", "AdlTrade", "BustTrade"})
# Unified order status → ours. An open order may be partly filled: its fills are reported as fills.
_STATUS = {"open": "accepted", "closed": "filled", "canceled": "canceled", "expired": "canceled",
           "rejected": "rejected"}
# Per venue, an order's payload: (amount, filled, reason).
_ORDER_FIELDS = {
    "binance": ("origQty", "executedQty", None),
    "bybit": ("qty", "cumExecQty", "rejectReason"),
    "okx": ("sz", "accFillSz", "cancelSourceReason"),
}


def family(venue: str) -> str:
    """The venue's family (`binanceusdm` → `binance`)."""
    try:
        return FAMILIES[venue]
    except KeyError:
        raise VenueBadPayload(f"no parser for venue {venue!r} (known: {', '.join(FAMILIES)})") from None


def exact(value: object, what: str, unified: object = None) -> Decimal:
    """`value` (a decimal string or an int, never a float) as a Decimal; checked against ccxt's float if given."""
    if isinstance(value, bool) or not isinstance(value, str | int):  # a float is refused: never through float
        raise VenueBadPayload(f"{what}: {value!r} is not a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise VenueBadPayload(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise VenueBadPayload(f"{what}: {value!r} is not a finite number")
    if isinstance(unified, int | float) and float(number) != float(unified):
        raise VenueBadPayload(f"{what}: the payload says {value!r}, ccxt read {unified!r}")
    return number


def optional(value: object, what: str) -> Decimal | None:
    """An optional number: absent, empty or zero (how venues write "no liquidation price") → None."""
    if value in (None, "", "0"):
        return None
    number = exact(value, what)
    return None if number == 0 else number


def instrument(symbol: str) -> tuple[str, str]:
    """A ccxt unified symbol → (kind, name): `ETH/USDT:USDT` → ("Perp", "ETHUSDT"), `ETH/USDT` → ("Spot", ...)."""
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    if not base or not quote or "-" in settle:  # `-` in the settle part: a dated future or an option
        raise VenueBadPayload(f"symbol {symbol!r} is neither a spot pair nor a perpetual")
    return ("Perp" if settle else "Spot"), base + quote


def instrument_id(venue: str, symbol: str) -> InstrumentId:
    """Our instrument id on `venue` (the ledger's name) for a ccxt symbol: `binance:Perp:ETHUSDT`."""
    kind, name = instrument(symbol)
    return InstrumentId(f"{venue}:{kind}:{name}")


def contract_size(market: Mapping[str, Any]) -> Decimal:
    """Base units per contract of a ccxt market, exactly: OKX's `ctVal` string; 1 for linear perps quoted in the
    base asset (Binance USDⓈ-M, Bybit linear) and for spot."""
    info = market.get("info") or {}
    if market.get("contract") and "ctVal" in info:
        return exact(info["ctVal"], f"{market.get('symbol')} ctVal", market.get("contractSize"))
    size = market.get("contractSize")
    if size in (None, 1):
        return ONE
    raise VenueBadPayload(f"{market.get('symbol')}: contract size {size!r} has no exact source")


def _ns(ms: object, what: str) -> int:
    if not isinstance(ms, int) or isinstance(ms, bool):
        raise VenueBadPayload(f"{what}: timestamp {ms!r} is not an integer of milliseconds")
    return ms * NS_PER_MS


# --- trades → fills ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    """A venue's trade, exactly, before we know whose order it was."""

    trade_id: TradeId
    venue_order_id: VenueOrderId
    venue_client_id: str | None  # None where the venue's trade does not carry it (Binance REST)
    instrument_id: InstrumentId
    side: Side
    quantity: Decimal  # base units
    price: Decimal
    fee: Decimal  # positive = paid
    fee_currency: str
    ts_event: int

    def report(self, venue: str, ts_recv: int, venue_client_id: str | None = None) -> FillReport | None:
        """The fill report for `venue` (the ledger's name), if the order is ours (`venue_client_id`: the order's,
        when the trade lacks it)."""
        ours = from_venue(self.venue_client_id or venue_client_id)
        if ours is None:
            return None
        return FillReport(VenueId(venue), self.trade_id, ours, self.venue_order_id, self.instrument_id,
                          self.side, self.quantity, self.price, self.fee, self.fee_currency, self.ts_event, ts_recv)


def parse_trade(trade: Mapping[str, Any], exchange_id: str, size: Decimal = ONE, *,
                venue: str | None = None) -> Trade | None:
    """A ccxt unified trade (`fetch_my_trades`, `watch_my_trades`) as a `Trade`; None if it is not a fill (a Bybit
    funding execution). `size`: the market's `contract_size`."""
    fam = family(exchange_id)
    venue = venue or fam
    info = trade.get("info") or {}
    if fam == "bybit" and info.get("execType", "Trade") not in _BYBIT_FILLS:
        return None
    key = fam
    if fam == "binance" and "L" in info and "l" in info:
        key = "binance-ws"
    elif fam == "okx" and "fillFee" in info:
        key = "okx-ws"
    id_field, order_field, client_field, price_field, qty_field, fee_field, fee_sign, ccxt_sign = _TRADE_FIELDS[key]
    where = f"{exchange_id} trade {trade.get('id')}"
    if fee_field not in info:  # Bybit's `execution.fast` has no fee: a fill must not be booked as free
        raise VenueBadPayload(f"{where}: no {fee_field} (the fee) in the payload")
    fee = trade.get("fee") or {}
    fee_cost = fee_sign * exact(info[fee_field], f"{where} {fee_field}")
    if isinstance(fee.get("cost"), int | float) and float(fee_cost) != ccxt_sign * float(fee["cost"]):
        raise VenueBadPayload(f"{where}: fee {fee_cost} in the payload, ccxt read {fee['cost']!r}")
    client = trade.get("clientOrderId") or (info.get(client_field) if client_field else None) or None
    side = trade.get("side")
    if side not in ("buy", "sell"):
        raise VenueBadPayload(f"{where}: side {side!r}")
    return Trade(
        trade_id=TradeId(str(info[id_field])), venue_order_id=VenueOrderId(str(info[order_field])),
        venue_client_id=client, instrument_id=instrument_id(venue, str(trade["symbol"])),
        side=Side.BUY if side == "buy" else Side.SELL,
        quantity=exact(info[qty_field], f"{where} {qty_field}", trade.get("amount")) * size,
        price=exact(info[price_field], f"{where} {price_field}", trade.get("price")),
        fee=fee_cost, fee_currency=str(fee.get("currency") or ""), ts_event=_ns(trade.get("timestamp"), where))


# --- orders ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderState:
    """A venue's order, exactly: what an unknown outcome is resolved against."""

    client_order_id: ClientOrderId | None  # ours, or None
    venue_client_id: str | None
    venue_order_id: VenueOrderId
    status: str  # ours: "accepted" (open, maybe partly filled) | "filled" | "canceled" | "rejected"
    amount: Decimal  # base units
    filled: Decimal
    reason: str
    ts_event: int

    def report(self, venue: str, ts_recv: int) -> OrderStatusReport | None:
        if self.client_order_id is None:
            return None
        return OrderStatusReport(VenueId(venue), self.client_order_id, self.venue_order_id, self.status,
                                 self.reason, self.ts_event, ts_recv)


def parse_ack(order: Mapping[str, Any], exchange_id: str, ts_recv: int, *,
              venue: str | None = None) -> OrderStatusReport | None:
    """`create_order`'s answer where the venue only acknowledges (Bybit, OKX: ids, no status): accepted, with the
    venue's order id; its fills and final status come from the streams and the REST backstop. None if not ours."""
    venue = venue or family(exchange_id)
    if order.get("status") is not None:
        return parse_order(order, exchange_id).report(venue, ts_recv)
    ours = from_venue(order.get("clientOrderId"))
    if ours is None or not order.get("id"):
        return None
    ts = order.get("timestamp")
    return OrderStatusReport(VenueId(venue), ours, VenueOrderId(str(order["id"])), "accepted", "",
                             _ns(ts, f"{venue} order {order['id']}") if ts is not None else ts_recv, ts_recv)


def parse_order(order: Mapping[str, Any], exchange_id: str, size: Decimal = ONE) -> OrderState:
    """A ccxt unified order (`fetch_order`, `fetch_open_orders`, `watch_orders`; `create_order` where the venue
    answers with the order, as Binance does)."""
    fam = family(exchange_id)
    info = order.get("info") or {}
    where = f"{exchange_id} order {order.get('id')}"
    status = _STATUS.get(str(order.get("status")))
    if status is None:
        raise VenueBadPayload(f"{where}: status {order.get('status')!r}")
    amount_field, filled_field, reason_field = _ORDER_FIELDS[fam]
    if fam == "binance" and "X" in info:  # a ccxt.pro order update (`o` of ORDER_TRADE_UPDATE, executionReport)
        amount_field, filled_field = "q", "z"
    client = order.get("clientOrderId") or None
    ts = order.get("lastUpdateTimestamp") or order.get("timestamp")
    return OrderState(
        client_order_id=from_venue(client), venue_client_id=client, venue_order_id=VenueOrderId(str(order["id"])),
        status=status,
        amount=exact(info.get(amount_field, "0"), f"{where} {amount_field}", order.get("amount")) * size,
        filled=exact(info.get(filled_field) or "0", f"{where} {filled_field}", order.get("filled")) * size,
        reason=str(info.get(reason_field) or "") if reason_field and status in ("rejected", "canceled") else "",
        ts_event=_ns(ts, where))


# --- positions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionState:
    """An open perp, exactly, as the venue holds it (the venue's own maintenance margin, from its tiers)."""

    instrument: str  # the books' name: ETHUSDT
    quantity: Decimal  # signed, base units
    entry_price: Decimal | None
    mark_price: Decimal | None
    liquidation_price: Decimal | None  # None: the venue gives none (no position, or margin enough)
    maintenance_margin: Decimal | None
    unrealized_pnl: Decimal | None


# (size, entry, mark, liquidation, maintenance margin, unrealized PnL)
_POSITION_FIELDS = {
    "binance": ("positionAmt", "entryPrice", "markPrice", "liquidationPrice", "maintMargin", "unRealizedProfit"),
    "bybit": ("size", "avgPrice", "markPrice", "liqPrice", "positionMM", "unrealisedPnl"),
    "okx": ("pos", "avgPx", "markPx", "liqPx", "mmr", "upl"),
}


def parse_position(position: Mapping[str, Any], exchange_id: str, size: Decimal = ONE) -> PositionState | None:
    """A ccxt unified position (`fetch_positions`); None if it is flat."""
    fam = family(exchange_id)
    info = position.get("info") or {}
    where = f"{exchange_id} position {position.get('symbol')}"
    size_f, entry_f, mark_f, liq_f, mm_f, upl_f = _POSITION_FIELDS[fam]
    raw = exact(info.get(size_f) or "0", f"{where} {size_f}")
    contracts = position.get("contracts")
    if isinstance(contracts, int | float) and float(abs(raw)) != float(contracts):
        raise VenueBadPayload(f"{where}: size {raw} in the payload, ccxt read {contracts!r} contracts")
    if raw == 0:
        return None
    quantity = abs(raw) * size * _position_sign(fam, info, raw, where)
    kind, name = instrument(str(position["symbol"]))
    if kind != "Perp":
        raise VenueBadPayload(f"{where}: not a perpetual")
    return PositionState(name, quantity, optional(info.get(entry_f), f"{where} {entry_f}"),
                         optional(info.get(mark_f), f"{where} {mark_f}"), optional(info.get(liq_f), f"{where} {liq_f}"),
                         optional(info.get(mm_f), f"{where} {mm_f}"), _signed_optional(info.get(upl_f), where))


def _position_sign(fam: str, info: Mapping[str, Any], raw: Decimal, where: str) -> int:
    """Long +1, short -1: Binance's `positionAmt` and OKX's net `pos` carry the sign; Bybit has `side`; OKX in
    long/short mode has `posSide`."""
    if fam == "bybit":
        side = info.get("side")
        if side not in ("Buy", "Sell"):
            raise VenueBadPayload(f"{where}: side {side!r} on an open position")
        return 1 if side == "Buy" else -1
    if fam == "okx" and info.get("posSide") in ("long", "short"):
        return 1 if info["posSide"] == "long" else -1
    return 1 if raw > 0 else -1


def _signed_optional(value: object, where: str) -> Decimal | None:
    return None if value in (None, "") else exact(value, f"{where} unrealized PnL")


# --- balances --------------------------------------------------------------------------------------------------


def parse_balances(balance: Mapping[str, Any], exchange_id: str) -> dict[str, Decimal]:
    """Each token's total in one wallet, from a ccxt `fetch_balance` (its `info`): Binance spot free + locked,
    Binance USDⓈ-M `walletBalance` (without unrealized PnL, as the books keep it), Bybit unified `walletBalance`,
    OKX trading `cashBal` or funding `bal`."""
    fam = family(exchange_id)
    venue = exchange_id
    info = balance.get("info") or {}
    totals: dict[str, Decimal] = {}
    for token, amount in _wallet_rows(fam, info, venue):
        totals[token] = totals.get(token, ZERO) + amount
    unified = balance.get("total") or {}
    if fam == "binance" and "balances" in info:  # ccxt's total is the same sum there: check it
        for token, amount in totals.items():
            if isinstance(unified.get(token), int | float) and float(amount) != float(unified[token]):
                raise VenueBadPayload(f"{venue} balance {token}: {amount} in the payload, ccxt read {unified[token]}")
    return totals


def _wallet_rows(fam: str, info: Mapping[str, Any], venue: str) -> Iterable[tuple[str, Decimal]]:
    if fam == "binance":
        if "balances" in info:
            return [(r["asset"], exact(r["free"], f"{venue} {r['asset']} free") + exact(r["locked"], "locked"))
                    for r in info["balances"]]
        if "assets" in info:
            return [(r["asset"], exact(r["walletBalance"], f"{venue} {r['asset']} walletBalance"))
                    for r in info["assets"]]
    if fam == "bybit":
        return [(c["coin"], exact(c["walletBalance"], f"{venue} {c['coin']} walletBalance"))
                for account in info.get("result", {}).get("list", []) for c in account.get("coin", [])]
    if fam == "okx":
        data = info.get("data", [])
        if all("details" in d for d in data):
            return [(r["ccy"], exact(r["cashBal"], f"{venue} {r['ccy']} cashBal")) for d in data for r in d["details"]]
        return [(r["ccy"], exact(r["bal"], f"{venue} {r['ccy']} bal")) for r in data]
    raise VenueBadPayload(f"{venue}: a balance payload of no known shape (keys {sorted(info)[:8]})")


def account_report(venue: str, wallets: Iterable[Mapping[str, Decimal]], positions: Iterable[PositionState],
                   ts_event: int, ts_recv: int, reports_sent: int | None = None) -> AccountReport:
    """The venue's whole view of our account `venue` (the ledger's name): every wallet's balances summed per token
    (Binance's spot and USDⓈ-M wallets are one account in the books), non-zero only, and the open perps."""
    totals: dict[str, Decimal] = {}
    for wallet in wallets:
        for token, amount in wallet.items():
            totals[token] = totals.get(token, ZERO) + amount
    perps: dict[str, Decimal] = {}
    for p in positions:
        perps[p.instrument] = perps.get(p.instrument, ZERO) + p.quantity
    return AccountReport(venue, tuple(sorted((t, v) for t, v in totals.items() if v)),
                         tuple(sorted((i, q) for i, q in perps.items() if q)), reports_sent, ts_event, ts_recv)


# --- funding ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """A funding payment the venue made or took, as it booked it."""

    venue: str
    payment_id: str  # unique per venue: Binance's tranId, Bybit's execId, OKX's billId
    instrument: str
    asset: str
    amount: Decimal  # positive = received
    rate: Decimal | None  # where the venue says (Bybit)
    position: Decimal | None  # signed base units, where the venue says (Bybit; OKX in contracts: not given)
    ts_event: int

    def balances_changed(self, ts_recv: int) -> BalancesChanged:
        ref = f"funding-{self.payment_id}"
        change = ChangeSet(Reason.FUNDING_PAYMENT, self.ts_event, (TokenChange(self.venue, self.asset, self.amount),),
                           ref=ref)
        return BalancesChanged(VenueId(self.venue), ref, change, self.ts_event, ts_recv)


def parse_funding(entry: Mapping[str, Any], exchange_id: str, *, venue: str | None = None) -> FundingPayment:
    """A ccxt `fetch_funding_history` entry: Binance income `FUNDING_FEE` (`income`, + received), Bybit's funding
    execution (`execFee`, + paid: negated), OKX's bill type 8 (`balChg`, + received)."""
    fam = family(exchange_id)
    info = entry.get("info") or {}
    where = f"{exchange_id} funding {entry.get('id')}"
    rate = position = None
    if fam == "binance":
        if info.get("incomeType", "FUNDING_FEE") != "FUNDING_FEE":
            raise VenueBadPayload(f"{where}: income type {info.get('incomeType')!r} is not funding")
        amount = exact(info["income"], f"{where} income", entry.get("amount"))
        payment_id = str(info.get("tranId") or entry["id"])
    elif fam == "bybit":
        if info.get("execType") != "Funding":
            raise VenueBadPayload(f"{where}: execution type {info.get('execType')!r} is not funding")
        amount = -exact(info["execFee"], f"{where} execFee", entry.get("amount"))  # ccxt keeps Bybit's fee sign
        rate = exact(info["feeRate"], f"{where} feeRate")
        position = exact(info["execQty"], f"{where} execQty") * (1 if info.get("side") == "Buy" else -1)
        payment_id = str(info["execId"])
    else:
        if str(info.get("type")) != "8":
            raise VenueBadPayload(f"{where}: bill type {info.get('type')!r} is not funding")
        amount = exact(info["balChg"], f"{where} balChg", entry.get("amount"))
        payment_id = str(info["billId"])
    return FundingPayment(venue or fam, payment_id, instrument(str(entry["symbol"]))[1], str(entry["code"]), amount,
                          rate, position, _ns(entry.get("timestamp"), where))
