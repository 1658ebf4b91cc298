"""Booking: how events from venues become ledger change sets (pure)."""

from __future__ import annotations

from daemon.domain.ledger import ChangeSet, PerpChange, Reason, TokenChange
from daemon.domain.messages import FillReport, OrderFilled


def split_instrument(instrument: str) -> tuple[str, str, str]:
    """`"binance:Perp:ETHUSDT"` → `("binance", "Perp", "ETHUSDT")`."""
    venue, kind, symbol = instrument.split(":")
    return venue, kind, symbol


def fill_change_set(fill: OrderFilled | FillReport) -> ChangeSet:
    """One fill, booked atomically: the position or the spot legs together with the fee. (The same set is what a
    simulated venue records on its side, so both books move identically.)"""
    venue, kind, symbol = split_instrument(fill.instrument_id)
    signed = fill.quantity * fill.side.sign
    fee = (TokenChange(venue, fill.fee_currency, -fill.fee),) if fill.fee else ()
    if kind == "Perp":
        return ChangeSet(Reason.TRADE_EXECUTED, fill.ts_event, fee, (PerpChange(venue, symbol, signed, fill.price),),
                         ref=fill.trade_id)
    if kind == "Spot":
        base, quote = symbol[:-4], symbol[-4:]
        return ChangeSet(Reason.SPOT_TRADE, fill.ts_event, (
            TokenChange(venue, base, signed), TokenChange(venue, quote, -signed * fill.price), *fee,
        ), ref=fill.trade_id)
    raise ValueError(f"cannot book a fill on {fill.instrument_id!r}: unknown instrument type {kind!r}")
