"""The ports through which actors reach venues. ccxt and web3 live only behind these (daemon/venues/)."""

from __future__ import annotations

from typing import Protocol

from daemon.domain.ids import VenueId
from daemon.domain.messages import OrderStatusReport, SubmitOrder


class ExchangeVenue(Protocol):
    """An exchange account. Fills are not returned here: the adapter publishes `FillReport`s to the
    report channel it was built with, because on a real venue they arrive on their own stream."""

    venue: VenueId

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        """Send `order`. Idempotent on `client_order_id`: a repeat returns the first outcome."""
        ...

    async def cancel_all_orders(self) -> int:
        """Cancel every open order of this account; return how many were cancelled."""
        ...
