"""A simulated exchange account with the same port as the live adapters.

Market orders fill at once at the venue's own current mark (perps) or spot price, plus a linear slippage
by notional and the venue's taker fee for the market traded (its perp schedule for perps, its spot schedule for
spot: VIP 0, `configs/venues/*.yaml`). A withdrawal to the wallet pays the venue's fixed fee per withdrawal in the
asset withdrawn (`withdrawal_fee`, taken by the chain's rail when it books the transfer). Fills are published as
`FillReport`s on the report channel, like a venue's private stream. Submission is idempotent on the client order
id, so a resend after a restart can never fill twice.

The account is the venue's own (`daemon.venues.book`): an order the account cannot pay for is rejected, and
after each new mark or funding settlement the account is checked against the venue's maintenance margin. An
account at or below it is liquidated as USDⓈ-M futures venues do in cross margin: every perp is closed at the
mark and a clearance fee on the notional is taken from what equity is left; equity below zero (a gap through
the bankruptcy price) is absorbed by the insurance fund, so the account ends at zero, never negative. The
liquidation is reported as one `BalancesChanged` (reason LIQUIDATION) carrying the closing perp changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from decimal import Decimal

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.booking import fill_change_set, split_instrument
from daemon.domain.exposure import perp_asset
from daemon.domain.ids import ClientOrderId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import ChangeSet, Ledger, LedgerError, PerpChange, Reason, TokenChange
from daemon.domain.messages import (
    AccountReport,
    BalancesChanged,
    FillReport,
    OrderStatusReport,
    SubmitOrder,
    VenueReport,
)
from daemon.errors import RetryableVenueError
from daemon.venues.book import LiquidationEvent, Reading, record, worse

BPS = Decimal("0.0001")
ZERO = Decimal(0)


class SimulatedExchange:
    def __init__(
        self,
        venue: str,
        clock: Clock,
        reports: LosslessChannel[VenueReport],
        taker_fee_bps: Decimal,
        slippage_bps_per_million_usd: Decimal = Decimal(5),
        min_order_usd: Decimal = Decimal(10),
        maintenance_margin_ratio: Decimal = Decimal("0.10"),
        liquidation_fee_bps: Decimal = Decimal(125),
        spot_taker_fee_bps: Decimal | None = None,
        withdrawal_fees: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.venue = VenueId(venue)
        self._clock = clock
        self._reports = reports
        self._taker_fee = taker_fee_bps * BPS
        self._spot_taker_fee = (taker_fee_bps if spot_taker_fee_bps is None else spot_taker_fee_bps) * BPS
        self._withdrawal_fees = dict(withdrawal_fees or {})
        self._slippage = slippage_bps_per_million_usd * BPS / Decimal(1_000_000)
        self._min_order_usd = min_order_usd
        self._prices: dict[tuple[str, str], Decimal] = {}  # ("Perp" | "Spot", asset) -> price
        self._orders: dict[ClientOrderId, OrderStatusReport] = {}
        self.open_orders: dict[ClientOrderId, SubmitOrder] = {}
        self._ids = itertools.count(1)
        self._maintenance = maintenance_margin_ratio
        self._liquidation_fee = liquidation_fee_bps * BPS
        self.book = Ledger((venue,))  # the venue's own record of the account
        self.funding_settlements = 0
        self.liquidations = 0
        self.account_queries_time_out = False  # a drill: the reconciler cannot read this account
        self.reports_sent = 0  # fills and balance changes reported, for the reconciler's "have the books caught up"
        self.min_margin_ratio_intrabar: Decimal | None = None  # see observe_range
        self.worst_margin_ratio: Reading | None = None  # at each check, before acting: see check_liquidation
        self.liquidation_events: list[LiquidationEvent] = []

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
        quantity = order.quantity
        if not reason and order.reduce_only:
            # As the venues do: a reduce-only order never opens or flips a position; it is cut to what is held.
            held = self.book.perp(self.venue, symbol).quantity if kind == "Perp" else ZERO
            if held == 0 or (held > 0) == (order.side.sign > 0):
                reason = f"reduce-only {order.side.value} would not reduce the position ({held} {symbol})"
            else:
                quantity = min(quantity, abs(held))
        if reason:
            report = OrderStatusReport(self.venue, order.client_order_id, None, "rejected", reason, now, now)
            self._orders[order.client_order_id] = report
            return report
        assert price is not None
        n = next(self._ids)
        venue_order_id = VenueOrderId(f"{self.venue}-{n}")
        notional = quantity * price
        fill_price = (price * (1 + order.side.sign * self._slippage * notional)).quantize(Decimal("0.01"))
        if order.limit_price is not None and order.side.sign * (fill_price - order.limit_price) > 0:
            # A marketable limit, fill-or-kill (the slippage cap, daemon.domain.limits): no fill beyond the limit.
            report = OrderStatusReport(self.venue, order.client_order_id, None, "rejected",
                                       f"would fill at {fill_price}, beyond the limit price {order.limit_price:.2f} "
                                       "(slippage cap)", now, now)
            self._orders[order.client_order_id] = report
            return report
        rate = self._spot_taker_fee if kind == "Spot" else self._taker_fee
        fee = (quantity * fill_price * rate).quantize(Decimal("0.00000001"))
        fill = FillReport(
            venue=self.venue, trade_id=TradeId(f"{self.venue}-t{n}"), client_order_id=order.client_order_id,
            venue_order_id=venue_order_id, instrument_id=order.instrument_id, side=order.side,
            quantity=quantity, price=fill_price, fee=fee, fee_currency="USDT", ts_event=now, ts_recv=now,
        )
        try:
            self.book.apply(fill_change_set(fill))
        except LedgerError as exc:
            report = OrderStatusReport(self.venue, order.client_order_id, None, "rejected",
                                       f"insufficient balance: {exc}", now, now)
            self._orders[order.client_order_id] = report
            return report
        report = OrderStatusReport(self.venue, order.client_order_id, venue_order_id, "filled", "", now, now)
        self._orders[order.client_order_id] = report
        self.reports_sent += 1
        await self._reports.send(fill)
        return report

    def withdrawal_fee(self, asset: str) -> Decimal:
        """The venue's fee for one withdrawal of `asset` to the wallet, in `asset` (0 if none is configured)."""
        return self._withdrawal_fees.get(asset, ZERO)

    def record_transfer(self, change: ChangeSet) -> None:
        """Record this account's side of a deposit or withdrawal (the chain calls it before reporting the
        transaction); raises `NonRetryableVenueError` if the account cannot pay it out."""
        record(self.book, change, self.venue)

    async def settle_funding(self, rate: Decimal, mark: Decimal, asset: str = "ETH") -> None:
        """Settle one funding interval on the position held now: a positive rate pays shorts."""
        size = self.book.perp(self.venue, f"{asset}USDT").quantity
        if size == 0:
            return
        payment = (-size * mark * rate).quantize(Decimal("0.00000001"))
        now = self._clock.now_ns()
        self.funding_settlements += 1
        key = f"funding-{asset}-{now}"
        change = ChangeSet(Reason.FUNDING_PAYMENT, now, (TokenChange(self.venue, "USDT", payment),), ref=key)
        # A payment larger than the account's cash is still owed: the venue takes it and the margin check
        # that follows liquidates the account. The book records it as an insurance-fund top-up to zero.
        balance = self.book.balance(self.venue, "USDT")
        if balance + payment < 0:
            change = ChangeSet(Reason.FUNDING_PAYMENT, now, (TokenChange(self.venue, "USDT", -balance),), ref=key)
        self.book.apply(change)
        self.reports_sent += 1
        await self._reports.send(BalancesChanged(self.venue, key, change, now, now))

    def margin(self) -> tuple[Decimal, Decimal]:
        """(equity, maintenance requirement) of the account in USDT at the venue's own marks."""
        equity, maintenance = self.book.balance(self.venue, "USDT"), ZERO
        for instrument, p in self.book.open_perps(self.venue):
            mark = self._mark(instrument)
            equity += p.quantity * mark - p.cost
            maintenance += abs(p.quantity) * mark * self._maintenance
        return equity, maintenance

    def observe_range(self, asset: str, high: Decimal, low: Decimal) -> Decimal | None:
        """The account's margin ratio at the worst price of the hour just ended for `asset` (the candle's high
        for a net short, its low for a net long), other perps at their marks; kept as the lowest seen.

        A reading, not a liquidation: candles are last-trade prices, and venues liquidate on their mark price,
        which seldom wicks as far. It says how close the hour came, between two hourly bars."""
        perps = self.book.open_perps(self.venue)
        size = sum((p.quantity for i, p in perps if perp_asset(i) == asset), ZERO)
        if not size:
            return None
        worst = high if size < 0 else low
        equity, notional = self.book.balance(self.venue, "USDT"), ZERO
        for instrument, p in perps:
            price = worst if perp_asset(instrument) == asset else self._mark(instrument)
            equity += p.quantity * price - p.cost
            notional += abs(p.quantity) * price
        ratio = equity / notional
        if self.min_margin_ratio_intrabar is None or ratio < self.min_margin_ratio_intrabar:
            self.min_margin_ratio_intrabar = ratio
        return ratio

    def _mark(self, instrument: str) -> Decimal:
        return self._prices[("Perp", perp_asset(instrument))]

    async def check_liquidation(self) -> bool:
        """Liquidate the account if its equity is at or below the maintenance margin; True if it did.

        The margin ratio (equity / notional at the marks) is read first and the lowest kept with its time
        (`worst_margin_ratio`): this is the price the venue acts on, before it liquidates and before the strategy
        sees the bar and tops up."""
        equity, maintenance = self.margin()
        now = self._clock.now_ns()
        if maintenance:
            self.worst_margin_ratio = worse(self.worst_margin_ratio, equity * self._maintenance / maintenance, now)
        if not maintenance or equity > maintenance:  # no open perp, or margin enough
            return False
        open_perps = self.book.open_perps(self.venue)
        closes = tuple(PerpChange(self.venue, i, -p.quantity, self._mark(i)) for i, p in open_perps)
        notional = sum((abs(c.delta_qty) * c.price for c in closes), ZERO)
        # Closing at the marks leaves exactly `equity` in USDT; the fee comes out of it, the fund covers a deficit.
        settle = -min((notional * self._liquidation_fee).quantize(Decimal("0.00000001")), equity) if equity > 0 \
            else -equity
        self.liquidations += 1
        self.liquidation_events.append(LiquidationEvent(self.venue, now, "margin_ratio",
                                                        equity * self._maintenance / maintenance, notional,
                                                        -settle, "USDT"))
        key = f"liquidation-{self.liquidations}-{now}"
        change = ChangeSet(Reason.LIQUIDATION, now, (TokenChange(self.venue, "USDT", settle),), closes, ref=key)
        self.book.apply(change)
        self.reports_sent += 1
        await self._reports.send(BalancesChanged(self.venue, key, change, now, now))
        return True

    def credit_unreported(self, asset: str, amount: Decimal) -> None:
        """Credit the account without telling anyone — a fee rebate, an airdrop. Only the reconciler can notice:
        a drill (`chaos.unreported_usdt`)."""
        self.book.apply(ChangeSet(Reason.DEPOSIT, self._clock.now_ns(), (TokenChange(self.venue, asset, amount),)))

    async def fetch_account(self) -> AccountReport:
        if self.account_queries_time_out:
            raise RetryableVenueError(f"{self.venue}: the account query timed out (chaos.unreachable_accounts)")
        snap = self.book.snapshot()
        now = self._clock.now_ns()
        perps = tuple((p.instrument, p.quantity) for p in snap.perps if p.venue == self.venue and p.quantity)
        return AccountReport(self.venue, tuple((t, v) for a, t, v in snap.balances if a == self.venue), perps,
                             self.reports_sent, now, now)

    def rest_order(self, order: SubmitOrder) -> OrderStatusReport:
        """Accept `order` as a resting limit order far from the market: it stays open until cancelled.

        The strategy only sends market orders, which fill at once; resting orders exist so an emergency-stop
        drill (`chaos.resting_orders_per_venue`) has open orders on the venue to cancel.
        """
        now = self._clock.now_ns()
        report = OrderStatusReport(self.venue, order.client_order_id, VenueOrderId(f"{self.venue}-{next(self._ids)}"),
                                   "accepted", "resting", now, now)
        self._orders[order.client_order_id] = report
        self.open_orders[order.client_order_id] = order
        return report

    async def cancel_all_orders(self) -> int:
        """Cancel every open order (market orders fill at once, so only resting ones can be open)."""
        now = self._clock.now_ns()
        cancelled = 0
        for client_order_id in list(self.open_orders):
            del self.open_orders[client_order_id]
            seen = self._orders[client_order_id]
            self._orders[client_order_id] = OrderStatusReport(self.venue, client_order_id, seen.venue_order_id,
                                                              "canceled", "cancelled by request", now, now)
            cancelled += 1
        return cancelled
