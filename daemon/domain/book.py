"""A minimal exact book of cash, spot holdings and perp positions, folded from fills.

Perp positions keep a size-weighted entry price; a reduction realizes P&L into the account's USDT, and a
flip through zero realizes the closed part and opens the rest at the fill price (DOMAIN §8 #21). The full
ledger (wallet tokens, AAVE scaled balances, atomic change sets) comes with the domain issue; this book is
what the runtime needs to show positions changing, and it is exact: Decimal throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.ids import InstrumentId
from daemon.domain.messages import OrderFilled, PositionView

ZERO = Decimal(0)
BASIS_EXPONENT = Decimal("1e-18")


def split_instrument(instrument: InstrumentId) -> tuple[str, str, str]:
    """`"binance:Perp:ETHUSDT"` → `("binance", "Perp", "ETHUSDT")`."""
    venue, kind, symbol = instrument.split(":")
    return venue, kind, symbol


@dataclass(slots=True)
class PerpPosition:
    """A perp position held as a signed cost basis rather than an average price.

    An average price needs a division, and a rounded average would make realized + unrealized P&L drift
    from the cash actually paid. With the cost basis, the only division (the share of basis a reduction
    removes) is booked identically on both sides, so P&L stays exact to the last digit.
    """

    quantity: Decimal = ZERO  # signed, negative = short
    cost: Decimal = ZERO  # signed Σ quantity × price of what is still open
    realized_pnl: Decimal = ZERO

    @property
    def average_price(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO

    def apply(self, signed_qty: Decimal, price: Decimal) -> Decimal:
        """Add `signed_qty` at `price`; return the P&L this realizes."""
        q0 = self.quantity
        if q0 == 0 or (q0 > 0) == (signed_qty > 0):
            self.quantity = q0 + signed_qty
            self.cost += signed_qty * price
            return ZERO
        closed = min(abs(signed_qty), abs(q0))
        direction = 1 if q0 > 0 else -1
        # Quantized so that every later sum stays within Decimal's 28 digits, i.e. exact.
        removed = self.cost if closed == abs(q0) else (self.cost * closed / abs(q0)).quantize(BASIS_EXPONENT)
        realized = direction * closed * price - removed
        self.realized_pnl += realized
        self.cost -= removed
        self.quantity = q0 + signed_qty
        if self.quantity and (self.quantity > 0) != (q0 > 0):  # flipped: the remainder opens at `price`
            self.cost = self.quantity * price
        return realized

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.quantity * mark - self.cost


class Book:
    def __init__(self) -> None:
        self.cash: dict[tuple[str, str], Decimal] = {}  # (account, asset) -> amount
        self.perps: dict[InstrumentId, PerpPosition] = {}
        self.marks: dict[str, Decimal] = {}  # instrument id or "spot:ETH" -> price
        self.fills_applied = 0

    def deposit(self, account: str, asset: str, amount: Decimal) -> None:
        key = (account, asset)
        self.cash[key] = self.cash.get(key, ZERO) + amount

    def apply_fill(self, fill: OrderFilled) -> None:
        venue, kind, symbol = split_instrument(fill.instrument_id)
        base, quote = symbol[:-4], symbol[-4:]  # "ETHUSDT" → ETH, USDT
        signed = fill.quantity * fill.side.sign
        if kind == "Perp":
            position = self.perps.setdefault(fill.instrument_id, PerpPosition())
            self.deposit(venue, quote, position.apply(signed, fill.price))
        elif kind == "Spot":
            self.deposit(venue, base, signed)
            self.deposit(venue, quote, -signed * fill.price)
        else:
            raise ValueError(f"cannot book a fill on {fill.instrument_id!r}: unknown instrument type {kind!r}")
        self.deposit(venue, fill.fee_currency, -fill.fee)
        self.fills_applied += 1

    def mark(self, key: str, price: Decimal) -> None:
        self.marks[key] = price

    def perp_quantity(self, instrument: InstrumentId) -> Decimal:
        position = self.perps.get(instrument)
        return position.quantity if position else ZERO

    def asset_total(self, asset: str) -> Decimal:
        return sum((v for (_, a), v in self.cash.items() if a == asset), ZERO)

    def net_delta(self, asset: str) -> Decimal:
        """Spot holdings plus signed perp sizes in `asset` (stablecoins carry no delta)."""
        perps = sum((p.quantity for i, p in self.perps.items() if split_instrument(i)[2].startswith(asset)), ZERO)
        return self.asset_total(asset) + perps

    def nav_usd(self) -> Decimal:
        spot = self.marks.get("spot:ETH", ZERO)
        total = self.asset_total("USDT") + self.asset_total("ETH") * spot
        for instrument, position in self.perps.items():
            total += position.unrealized(self.marks.get(instrument, position.average_price))
        return total

    def positions(self) -> tuple[PositionView, ...]:
        views = []
        for instrument, p in sorted(self.perps.items()):
            mark = self.marks.get(instrument, p.average_price)
            views.append(PositionView(instrument, p.quantity, p.average_price, mark, p.realized_pnl,
                                      p.unrealized(mark)))
        return tuple(views)

