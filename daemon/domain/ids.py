"""Distinct identifier types, so that a venue order id can never be passed where a client order id is due."""

from __future__ import annotations

from typing import NewType

ClientOrderId = NewType("ClientOrderId", str)
VenueOrderId = NewType("VenueOrderId", str)
TradeId = NewType("TradeId", str)
InstrumentId = NewType("InstrumentId", str)  # canonical "venue:type:symbol", e.g. "binance:Perp:ETHUSDT"
VenueId = NewType("VenueId", str)
InstructionId = NewType("InstructionId", str)


def client_order_id(instruction: InstructionId, step: int) -> ClientOrderId:
    """Derive the client order id from the instruction and its step.

    Deterministic on purpose: after a restart the same step produces the same id, so the venue rejects
    a duplicate instead of filling an order twice.
    """
    return ClientOrderId(f"{instruction}-{step}")
