"""Fills: turns venue `FillReport`s into `OrderFilled` events, once each, and passes the venues' other
balance reports to the books in the order they arrived.

A venue may report the same trade twice (private stream and REST backstop, or a resend after a
reconnect), so trades are de-duplicated by (venue, trade id) over a bounded window. With a journal, every
report is journaled (durably) before it is passed on.
"""

from __future__ import annotations

from collections import OrderedDict

from daemon.bus import LosslessChannel
from daemon.domain.messages import BalancesChanged, OrderFilled, VenueReport
from daemon.journal import Journal
from daemon.lifecycle import ActorContext, serve

DEDUP_WINDOW = 100_000


class FillsActor:
    name = "fills"

    def __init__(
        self,
        inbox: LosslessChannel[VenueReport],
        books: LosslessChannel[OrderFilled | BalancesChanged],
        strategy: LosslessChannel[OrderFilled],
        journal: Journal | None = None,
    ) -> None:
        self.inbox = inbox
        self._journal = journal  # every report is written there before the books see it
        self._books = books
        self._strategy = strategy
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0

    async def run(self, ctx: ActorContext) -> None:
        async def handle(report: VenueReport) -> None:
            if isinstance(report, BalancesChanged):
                if self._journal is not None:
                    self._journal.record_report(ctx.clock.now_ns(), report.venue, f"{report.venue}:{report.report_id}",
                                                "BalancesChanged", report)
                await self._books.send(report)  # same channel as fills: the books see venue order
                return
            key = (report.venue, report.trade_id)
            if key in self._seen:
                self.duplicates += 1
                ctx.log.info("duplicate_fill_ignored", venue=report.venue, trade_id=report.trade_id)
                return
            if self._journal is not None:
                # Durable before anyone acts on it. (Written even when the journal has it already: until the books
                # are rebuilt from the journal at start-up, the books must still be told.)
                self._journal.record_report(ctx.clock.now_ns(), report.venue, f"{report.venue}:{report.trade_id}",
                                            "FillReport", report)
            fill = OrderFilled(
                venue=report.venue, trade_id=report.trade_id, client_order_id=report.client_order_id,
                instrument_id=report.instrument_id, side=report.side, quantity=report.quantity,
                price=report.price, fee=report.fee, fee_currency=report.fee_currency,
                ts_event=report.ts_event, ts_recv=ctx.clock.now_ns(),
            )
            await self._books.send(fill)
            await self._strategy.send(fill)
            # Marked seen only once delivered: a failure above redelivers rather than loses the fill.
            self._seen[key] = None
            if len(self._seen) > DEDUP_WINDOW:
                self._seen.popitem(last=False)
            ctx.log.info("order_filled", venue=fill.venue, instrument=fill.instrument_id, side=fill.side.value,
                         quantity=str(fill.quantity), price=str(fill.price), client_order_id=fill.client_order_id)

        await serve(ctx, self.inbox, handle)
