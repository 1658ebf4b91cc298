"""Risk: the gate between strategy and execution, and the owner of trading-state commands.

HALTED lets nothing through; REDUCING lets only reduce-only orders through. Rejections go back to the
strategy as `OrderRejected`, so it never waits on an order that will not happen.
"""

from __future__ import annotations

from daemon.bus import LosslessChannel
from daemon.domain.messages import (
    Command,
    HaltTrading,
    OrderEvent,
    OrderRejected,
    ResumeTrading,
    SubmitOrder,
    TradingState,
)
from daemon.lifecycle import ActorContext, serve


class RiskActor:
    name = "risk"

    def __init__(
        self,
        inbox: LosslessChannel[Command],
        approved: LosslessChannel[SubmitOrder],
        events: LosslessChannel[OrderEvent],
    ) -> None:
        self.inbox = inbox
        self._approved = approved
        self._events = events
        self.rejected = 0

    async def run(self, ctx: ActorContext) -> None:
        async def handle(command: Command) -> None:
            if isinstance(command, SubmitOrder):
                refusal = self._refusal(command, ctx.trading.state)
                if refusal is None:
                    await self._approved.send(command)
                    return
                self.rejected += 1
                now = ctx.clock.now_ns()
                ctx.log.warning("order_refused", client_order_id=command.client_order_id, reason=refusal)
                await self._events.send(
                    OrderRejected(command.client_order_id, command.instrument_id, refusal, now, now)
                )
            elif isinstance(command, HaltTrading):
                ctx.trading.halt(command.reason, source="risk")
            elif isinstance(command, ResumeTrading):
                ctx.trading.set(TradingState.ACTIVE, command.reason, source="risk")

        await serve(ctx, self.inbox, handle)

    @staticmethod
    def _refusal(order: SubmitOrder, state: TradingState) -> str | None:
        if state is TradingState.HALTED:
            return "trading is halted"
        if state is TradingState.REDUCING and not order.reduce_only:
            return "trading is reducing: only reduce-only orders are allowed"
        return None
