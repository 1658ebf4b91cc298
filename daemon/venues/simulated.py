"""A simulated exchange account with the same port as the live adapters.

Market orders fill at once at the venue's own current mark (perps) or spot price, plus a linear slippage
by notional and the venue's taker fee. Fills are published as `FillReport`s on the report channel, like a
venue's private stream. Submission is idempotent on the client order id, so a resend after a restart can
never fill twice.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.booking import split_instrument
from daemon.domain.ids import ClientOrderId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import ChangeSet, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, FillReport, OrderStatusReport, SubmitOrder, VenueReport

BPS = Decimal("0.0001")


class SimulatedExchange:
    def __init__(
        self,
        venue: str,
        clock: Clock,
        reports: LosslessChannel[VenueReport],
        taker_fee_bps: Decimal,
        slippage_bps_per_million_usd: Decimal = Decimal(5),
        min_order_usd: Decimal = Decimal(10),
    ) -> None:
        self.venue = VenueId(venue)
        self._clock = clock
        self._reports = reports
        self._taker_fee = taker_fee_bps * BPS
        self._slippage = slippage_bps_per_million_usd * BPS / Decimal(1_000_000)
        self._min_order_usd = min_order_usd
        self._prices: dict[tuple[str, str], Decimal] = {}  # ("Perp" | "Spot", asset) -> price
        self._orders: dict[ClientOrderId, OrderStatusReport] = {}
        self._ids = itertools.count(1)
        self._perp_size: dict[str, Decimal] = {}  # asset -> the venue's own record of the account's perp position
        self.funding_settlements = 0

    def set_price(self, kind: str, price: Decimal, asset: str = "ETH") -> None:
        self._prices[(kind, asset)] = price

    @property
    def orders_received(self) -> int:
        return len(self._orders)

    async def submit_order(self, order: SubmitOrder) -> OrderStatusReport:
        seen = self._orders.get(order.client_order_id)
        if seen is not None:
            return seen
        venue, kind, symbol = split_instrument(order.instrument_id)
        asset = symbol[:-4]
        now = self._clock.now_ns()
        price = self._prices.get((kind, asset))
        reason = ""
        if venue != self.venue:
            reason = f"instrument {order.instrument_id} is not traded on {self.venue}"
        elif price is None:
            reason = f"no {asset} {kind} price yet"
        elif order.quantity <= 0:
            reason = "quantity must be positive"
        elif order.quantity * price < self._min_order_usd:
            reason = f"notional below the venue minimum of {self._min_order_usd} USD"
        if reason:
            report = OrderStatusReport(self.venue, order.client_order_id, None, "rejected", reason, now, now)
            self._orders[order.client_order_id] = report
            return report
        assert price is not None
        n = next(self._ids)
        venue_order_id = VenueOrderId(f"{self.venue}-{n}")
        notional = order.quantity * price
        fill_price = (price * (1 + order.side.sign * self._slippage * notional)).quantize(Decimal("0.01"))
        fee = (order.quantity * fill_price * self._taker_fee).quantize(Decimal("0.00000001"))
        if kind == "Perp":
            self._perp_size[asset] = self._perp_size.get(asset, Decimal(0)) + order.quantity * order.side.sign
        report = OrderStatusReport(self.venue, order.client_order_id, venue_order_id, "filled", "", now, now)
        self._orders[order.client_order_id] = report
        await self._reports.send(FillReport(
            venue=self.venue, trade_id=TradeId(f"{self.venue}-t{n}"), client_order_id=order.client_order_id,
            venue_order_id=venue_order_id, instrument_id=order.instrument_id, side=order.side,
            quantity=order.quantity, price=fill_price, fee=fee, fee_currency="USDT", ts_event=now, ts_recv=now,
        ))
        return report

    async def settle_funding(self, rate: Decimal, mark: Decimal, asset: str = "ETH") -> None:
        """Settle one funding interval on the position held now: a positive rate pays shorts."""
        size = self._perp_size.get(asset, Decimal(0))
        if size == 0:
            return
        payment = (-size * mark * rate).quantize(Decimal("0.00000001"))
        now = self._clock.now_ns()
        self.funding_settlements += 1
        key = f"funding-{asset}-{now}"
        change = ChangeSet(Reason.FUNDING_PAYMENT, now, (TokenChange(self.venue, "USDT", payment),), ref=key)
        await self._reports.send(BalancesChanged(self.venue, key, change, now, now))

    async def cancel_all_orders(self) -> int:
        # Market orders fill at once here, so nothing is ever left open to cancel.
        return 0
