"""Execution: sends approved orders to their venue through the venue port.

The trading state is checked again immediately before each send, so a halt that arrives while orders
are queued stops them at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.bus import LosslessChannel
from daemon.domain.booking import split_instrument
from daemon.domain.messages import OrderEvent, OrderRejected, SubmitOrder, TradingState
from daemon.lifecycle import ActorContext, serve
from daemon.ports import ExchangeVenue


class ExecutionActor:
    name = "execution"

    def __init__(
        self,
        inbox: LosslessChannel[SubmitOrder],
        venues: Mapping[str, ExchangeVenue],
        events: LosslessChannel[OrderEvent],
    ) -> None:
        self.inbox = inbox
        self._venues = venues
        self._events = events
        self.sent = 0

    async def run(self, ctx: ActorContext) -> None:
        async def reject(order: SubmitOrder, reason: str) -> None:
            now = ctx.clock.now_ns()
            ctx.log.warning("order_rejected", client_order_id=order.client_order_id, reason=reason)
            await self._events.send(OrderRejected(order.client_order_id, order.instrument_id, reason, now, now))

        async def handle(order: SubmitOrder) -> None:
            state = ctx.trading.state
            if state is TradingState.HALTED or (state is TradingState.REDUCING and not order.reduce_only):
                await reject(order, f"trading is {state.value.lower()}")
                return
            venue = self._venues.get(split_instrument(order.instrument_id)[0])
            if venue is None:
                await reject(order, f"no venue adapter for {order.instrument_id}")
                return
            report = await venue.submit_order(order)
            self.sent += 1
            if report.status == "rejected":
                await reject(order, f"{report.venue}: {report.reason}")

        await serve(ctx, self.inbox, handle)
