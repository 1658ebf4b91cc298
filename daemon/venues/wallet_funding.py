"""Moving quote currency between a venue's own wallets so an order can be paid for: Binance keeps spot and USDⓈ-M
futures apart (a spot buy draws on the spot wallet, perp margin on the futures wallet), while our books keep one
account per venue. Bybit's unified account and OKX's trading account have one wallet and need none of this.

Before an order that needs quote currency (a spot BUY: its cost at the slippage cap, with the taker fee; a perp
order that is not reduce-only: its initial margin at the configured leverage, plus `funding_margin`, plus the taker
fee) the wallet it draws on is read, and a shortfall is moved from the other wallet with ccxt's `transfer`. If the
other wallet cannot cover it, or the transfer fails, the order is refused with the reason, before it is sent. A
transfer whose answer was lost is not retried here: the next order reads both wallets again, so it moves only what
is still missing.

After a spot SELL fills, its proceeds are swept back to futures (`sweep_spot_proceeds`): idle USDT in the spot wallet
protects nothing, while in the futures wallet it is margin for the open perp (the basis trade's short leg), further
from liquidation. A sweep that fails is logged and counted; the fill stands.

An internal transfer changes nothing in our books (the same venue account: the report sums the wallets), so nothing
is published; each one is logged and kept in `transfers` for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import ccxt
import structlog

from daemon.clock import Clock
from daemon.domain.messages import Side, SubmitOrder
from daemon.errors import RetryableVenueError, VenueError
from daemon.venues.ccxt_errors import Call

log = structlog.get_logger()

CENT = Decimal("0.01")  # transfers are made in whole cents of the quote currency: up for a need, down for a sweep
WALLETS = {"Spot": "spot", "Perp": "linear"}  # ccxt's account names for Binance's transfer (MAIN / UMFUTURE)
DEFAULT_TAKER = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class InternalTransfer:
    ts_ns: int
    asset: str
    amount: Decimal
    from_wallet: str  # "spot" | "futures"
    to_wallet: str
    why: str  # the client order id it funded, or "sweep <cid>"
    ok: bool
    error: str = ""


MapError = Callable[[BaseException, Call, Any, str], VenueError]


class WalletFunding:
    def __init__(self, venue: str, clients: Mapping[str, Any], *, leverage: int, margin: Decimal,
                 slippage: Decimal, sweep: bool, clock: Clock, error: MapError) -> None:
        """`clients`: the gated ccxt clients by kind ("Spot", "Perp"); transfers go through the spot one."""
        self.venue = venue
        self._clients = clients
        self._leverage = Decimal(leverage)
        self._margin = margin
        self._slippage = slippage
        self._sweep = sweep
        self._clock = clock
        self._error = error
        self.transfers: list[InternalTransfer] = []

    @property
    def transfers_done(self) -> int:
        return sum(1 for t in self.transfers if t.ok)

    @property
    def transfers_failed(self) -> int:
        return sum(1 for t in self.transfers if not t.ok)

    async def fund(self, order: SubmitOrder, kind: str, symbol: str, amount: Decimal,
                   price: Decimal | None) -> str | None:
        """Make sure the wallet `order` draws on holds what it needs; why it cannot be funded, or None.
        `amount` is the order's quantity in the base asset, `price` its limit (slippage cap) if it has one."""
        if order.reduce_only or (kind == "Spot" and order.side is Side.SELL):
            return None  # pays nothing in quote: a reduce-only perp frees margin, a spot sell spends the base asset
        client = self._clients[kind]
        quote = _quote(symbol)
        reference = price if price is not None else await self._reference(kind, symbol)
        notional = amount * reference
        fee = notional * _taker(client, symbol)
        need = notional + fee if kind == "Spot" else notional / self._leverage * (1 + self._margin) + fee
        have = await self._free(kind, quote)
        if have >= need:
            return None
        other = "Perp" if kind == "Spot" else "Spot"
        shortfall = (need - have).quantize(CENT, ROUND_CEILING)
        spare = await self._free(other, quote)
        wallet, source = _name(kind), _name(other)
        if spare < shortfall:
            return (f"needs {need.quantize(CENT, ROUND_CEILING)} {quote} in the {wallet} wallet, which has {have}; "
                    f"the {source} wallet has {spare}, short of the {shortfall} to move")
        failure = await self._transfer(quote, shortfall, other, kind, str(order.client_order_id))
        if failure is not None:
            return f"moving {shortfall} {quote} from the {source} wallet to the {wallet} wallet failed: {failure}"
        return None

    async def sweep(self, order: SubmitOrder, symbol: str, raw: Mapping[str, Any]) -> None:
        """After a spot sell filled: its proceeds (what the spot wallet has free, at most the order's cost) back
        to the futures wallet."""
        if not self._sweep or order.side is not Side.SELL:
            return
        cost = raw.get("cost")
        if not cost:
            return
        quote = _quote(symbol)
        try:
            free = await self._free("Spot", quote)
        except VenueError as exc:
            log.warning("internal_transfer_skipped", venue=self.venue, asset=quote,
                        why=f"sweep {order.client_order_id}", error=str(exc))
            return
        fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
        charged = sum((Decimal(str(f["cost"])) for f in fees if f.get("currency") == quote and f.get("cost")),
                      Decimal(0))
        amount = min(free, Decimal(str(cost)) - charged).quantize(CENT, ROUND_FLOOR)
        if amount > 0:
            await self._transfer(quote, amount, "Spot", "Perp", f"sweep {order.client_order_id}")

    async def _transfer(self, asset: str, amount: Decimal, source: str, target: str, why: str) -> str | None:
        spot = self._clients["Spot"]
        try:
            await spot.transfer(asset, str(amount), WALLETS[source], WALLETS[target])
        except (ccxt.BaseError, VenueError) as exc:  # the venue's answer, or the gate's own refusal
            error = exc if isinstance(exc, VenueError) else self._error(exc, Call.WRITE, spot.raw,
                                                                        "an internal transfer")
            self._note(asset, amount, source, target, why, str(error))
            return str(error)
        self._note(asset, amount, source, target, why, "")
        return None

    def _note(self, asset: str, amount: Decimal, source: str, target: str, why: str, error: str) -> None:
        entry = InternalTransfer(self._clock.now_ns(), asset, amount, _name(source), _name(target), why, not error,
                                 error)
        self.transfers.append(entry)
        (log.error if error else log.info)("internal_transfer", venue=self.venue, asset=asset, amount=str(amount),
                                           from_wallet=entry.from_wallet, to_wallet=entry.to_wallet, why=why,
                                           ok=entry.ok, error=error or None)

    async def _free(self, kind: str, quote: str) -> Decimal:
        client = self._clients[kind]
        try:
            balance = await client.fetch_balance()
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, client, f"reading the {_name(kind)} wallet to fund an order") from None
        free = (balance.get("free") or {}).get(quote)
        return Decimal(str(free)) if free is not None else Decimal(0)

    async def _reference(self, kind: str, symbol: str) -> Decimal:
        """The price a market order is funded at: the venue's last spot price or perp mark, moved against us."""
        client = self._clients[kind]
        try:
            if kind == "Spot":
                prices = await client.fetch_last_prices([symbol])
                value = (prices.get(symbol) or {}).get("price")
            else:
                value = (await client.fetch_mark_price(symbol)).get("markPrice")
        except ccxt.BaseError as exc:
            raise self._error(exc, Call.READ, client, f"reading the price of {symbol} to fund an order") from None
        if value is None:
            raise RetryableVenueError(f"{self.venue}: no reference price for {symbol} to fund a market order")
        return Decimal(str(value)) * (1 + self._slippage)


def _quote(symbol: str) -> str:
    return symbol.split("/", 1)[1].split(":", 1)[0]


def _name(kind: str) -> str:
    return "spot" if kind == "Spot" else "futures"


def _taker(client: Any, symbol: str) -> Decimal:
    taker = ((client.markets or {}).get(symbol) or {}).get("taker")
    return Decimal(str(taker)) if taker is not None else DEFAULT_TAKER
