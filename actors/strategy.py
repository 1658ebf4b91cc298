"""Strategy: turns market data and portfolio snapshots into orders (lossless, to the risk actor).

It decides at most once per market hour, and only on a settled view: no order of its own in flight, and a
snapshot that already includes every fill it has heard of. Instruction ids are derived from market time and
a sequence that survives restarts, and client order ids from those, so a resend is recognised by the venue.
"""

from __future__ import annotations

from decimal import Decimal

import anyio

from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.booking import split_instrument
from daemon.domain.hedge_keeper import (
    HedgeParams,
    OrderIntent,
    entry_spot_quantity,
    hedge_intents,
    spot_instrument,
)
from daemon.domain.ids import ClientOrderId, InstructionId, client_order_id
from daemon.domain.messages import (
    Command,
    FundingRateReported,
    MarketData,
    OrderEvent,
    OrderFilled,
    PortfolioSnapshotted,
    PriceTicked,
    Side,
    SubmitOrder,
)
from daemon.lifecycle import ActorContext, serve

NS_PER_HOUR = 3_600 * 1_000_000_000
ZERO = Decimal(0)


class StrategyActor:
    name = "strategy"

    def __init__(
        self,
        market: ConflatingChannel[MarketData | PortfolioSnapshotted],
        events: LosslessChannel[OrderEvent],
        commands: LosslessChannel[Command],
        *,
        hedged: bool,
        spot_venue: str | None,
        capital_usd: Decimal,
        long_allocation: Decimal,
        hedge: HedgeParams,
    ) -> None:
        self.market = market
        self.events = events
        self._commands = commands
        self._hedged = hedged
        self._spot_venue = spot_venue
        self._capital = capital_usd
        self._allocation = long_allocation
        self._hedge = hedge
        self._sequence = 0  # survives restarts: instruction ids must never repeat
        self.decisions = 0

    async def run(self, ctx: ActorContext) -> None:
        spot_price: Decimal | None = None
        funding: dict[str, Decimal] = {}
        snapshot: PortfolioSnapshotted | None = None
        pending: dict[ClientOrderId, OrderIntent] = {}
        fills_heard = 0
        last_hour = -1

        async def on_market(update: MarketData | PortfolioSnapshotted) -> None:
            nonlocal spot_price, snapshot
            if isinstance(update, PortfolioSnapshotted):
                snapshot = update
            elif isinstance(update, PriceTicked) and split_instrument(update.instrument_id)[1] == "Spot":
                spot_price = update.price
            elif isinstance(update, FundingRateReported):
                funding[split_instrument(update.instrument_id)[0]] = update.rate
            await maybe_decide()

        async def on_event(event: OrderEvent) -> None:
            nonlocal fills_heard
            pending.pop(event.client_order_id, None)
            if isinstance(event, OrderFilled):
                fills_heard += 1
            else:
                ctx.log.warning("order_rejected", client_order_id=event.client_order_id, reason=event.reason)

        async def maybe_decide() -> None:
            nonlocal last_hour
            if spot_price is None or snapshot is None or pending or snapshot.fills_applied < fills_heard:
                return
            hour = ctx.clock.now_ns() // NS_PER_HOUR
            if hour == last_hour:
                return
            last_hour = hour
            intents = self._decide(snapshot, spot_price, funding, ctx)
            self.decisions += 1
            if not intents:
                return
            self._sequence += 1
            instruction = InstructionId(f"i{hour}-{self._sequence}")
            for step, intent in enumerate(intents, start=1):
                now = ctx.clock.now_ns()
                order = SubmitOrder(
                    client_order_id=client_order_id(instruction, step), instruction_id=instruction,
                    instrument_id=intent.instrument_id,
                    side=Side.BUY if intent.signed_quantity > 0 else Side.SELL,
                    quantity=abs(intent.signed_quantity), reduce_only=intent.reduce_only,
                    reason=intent.reason, ts_event=now, ts_recv=now,
                )
                pending[order.client_order_id] = intent
                await self._commands.send(order)
            ctx.log.info("instruction_issued", instruction_id=instruction, orders=len(intents),
                         reasons=sorted({i.reason for i in intents}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.market, on_market)
            tg.start_soon(serve, ctx, self.events, on_event)

    def _decide(
        self, snapshot: PortfolioSnapshotted, price: Decimal, funding: dict[str, Decimal], ctx: ActorContext
    ) -> list[OrderIntent]:
        long_eth = sum((v for k, v in snapshot.cash if k.endswith(":ETH")), ZERO)
        if long_eth <= 0 and self._spot_venue is not None:
            if not ctx.trading.allows_new_exposure():
                return []
            qty = entry_spot_quantity(self._capital, self._allocation, price)
            return [OrderIntent(spot_instrument(self._spot_venue), qty, False, "entry")]
        if not self._hedged:
            return []
        if not ctx.trading.allows_new_exposure():
            # Hold the hedge as it is. Sending only the reduce-only legs of a move between venues would
            # shrink each position and still unhedge the book: a partial hedge move is worse than none.
            return []
        shorts = {split_instrument(p.instrument_id)[0]: p.quantity for p in snapshot.positions}
        return hedge_intents(long_eth, shorts, funding, price, self._hedge)
