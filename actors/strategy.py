"""Strategy: runs the per-mode strategy manager (`daemon.domain.strategy.decide`) once per market hour.

It decides only on a settled view: no instruction of its own in flight, and a portfolio snapshot that has
booked every venue report its instructions produced. A decision on a flat book — nothing held beyond idle
capital: at the first start, and again after `basisd flatten` and `basisd resume` — is the mode's
INITIAL_SETUP, any other a REBALANCE (`daemon.domain.strategy.next_change`). A flat book that does not
enter says why at warning level: idle capital is never silent. Instruction ids come from market time and a sequence that
survives restarts, and client order ids from those, so a resend is recognised by the venue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.domain.ids import InstructionId
from daemon.domain.market import MarketBoard, MissingMarketData
from daemon.domain.messages import (
    Command,
    ExecuteInstruction,
    InstructionFinished,
    MarketUpdated,
    OrderEvent,
    PortfolioSnapshotted,
)
from daemon.domain.risk import Level, RiskLimits
from daemon.domain.strategy import (
    Change,
    Decision,
    Instruction,
    ModeSpec,
    StrategyView,
    decide,
    next_change,
    solvency_levels,
)
from daemon.domain.view import strategy_view
from daemon.gate import StartGate
from daemon.lifecycle import ActorContext, serve

NS_PER_HOUR = 3_600 * 1_000_000_000


class StrategyActor:
    name = "strategy"

    def __init__(
        self,
        market: ConflatingChannel[MarketUpdated | PortfolioSnapshotted],
        events: LosslessChannel[OrderEvent],
        commands: LosslessChannel[Command],
        *,
        spec: ModeSpec,
        venues: tuple[str, ...],
        id_prefix: str = "i",
        gate: StartGate | None = None,
        limits: Callable[[], RiskLimits] | None = None,
        decision_interval_s: float = 3600.0,
        failure_backoff_max_s: float | None = None,
        decide_on_risk: bool = False,
    ) -> None:
        self.market = market
        # Decisions wait for the start gate (daemon.gate): one made on books not yet checked against the venues
        # would be refused, and stale once they are.
        self._gate = gate
        self.events = events
        self._commands = commands
        self._spec = spec
        self._venues = venues
        # The risk limits in force (SIGHUP may change them): the margin levels no short may grow past and the
        # delta act level the rebalance band may not exceed. The defaults when none are given (tests).
        self._limits = limits or RiskLimits
        # At most one decision per interval of market time: a replay's hour (one bar), a few seconds' polls on live
        # data. The instruction ids keep the market hour, whatever the interval.
        self._interval_ns = int(decision_interval_s * 1_000_000_000)
        # On live data (`decide_on_risk`), a venue's margin or the AAVE loop reaching a worse level than at the last
        # decision (WARNING, URGENT, CRITICAL: `solvency_levels`) is decided on at once, inside the interval: a
        # margin call must not wait out the timer. Off in a replay, whose interval is its bar.
        self._decide_on_risk = decide_on_risk
        self._levels: tuple[Level, Level] = (Level.OK, Level.OK)  # at the last decision
        self.risk_decisions = 0
        # On live venues an instruction refused whole (a venue's rejection, a limit) is not re-sent every interval:
        # the next decision waits one interval more after each refusal in a row, up to `failure_backoff_max_s`
        # (None: no wait, the replay's rule — a refusal there is retried on the next bar).
        self._backoff_max_ns = None if failure_backoff_max_s is None else int(failure_backoff_max_s * 1_000_000_000)
        self._refusals = 0
        self.retry_at_ns = 0
        # Instruction ids (and the client order ids derived from them) must never repeat: the sequence survives
        # restarts of the actor, and the prefix carries the process's journal run, so a restarted daemon deciding
        # in the same market hour cannot reuse an id a venue has already seen for another order.
        self._prefix = id_prefix
        self._sequence = 0
        self.decisions = 0
        self.instructions = 0
        self.failed_instructions = 0
        self.completed_instructions = 0
        # Every instruction issued, (ts_ns, id, instruction, the decision's change): the backtest's
        # instructions.csv and the report's markers. A run issues a few per day at most.
        self.issued: list[tuple[int, InstructionId, Instruction, str]] = []
        self.hold_reason = ""
        self.missing_data = ""  # the market data the last decision waited for, if any

    async def run(self, ctx: ActorContext) -> None:
        board = MarketBoard()
        snapshot: PortfolioSnapshotted | None = None
        pending: set[InstructionId] = set()
        reports_due = 0
        last_slot = -1

        async def on_market(update: MarketUpdated | PortfolioSnapshotted) -> None:
            nonlocal snapshot
            if isinstance(update, PortfolioSnapshotted):
                snapshot = update
            else:
                for item in update.updates:
                    board.update(item)
            await maybe_decide()

        async def on_event(event: OrderEvent) -> None:
            nonlocal reports_due
            if isinstance(event, InstructionFinished):
                pending.discard(event.instruction_id)
                reports_due += event.reports
                if event.completed:
                    self.completed_instructions += 1
                    self._refusals = 0
                else:
                    self._failed(ctx, event)

        async def maybe_decide() -> None:
            nonlocal last_slot
            if (snapshot is None or snapshot.ledger is None or pending or snapshot.reports_booked < reports_due
                    or self._waiting(ctx)):
                return
            now = ctx.clock.now_ns()
            slot, hour = now // self._interval_ns, now // NS_PER_HOUR
            if not self._may_decide(now, same_interval=slot == last_slot):
                return
            try:
                self._check_marks(board)
                view = strategy_view(snapshot.ledger, board.state(), self._spec, self._venues, ctx.trading.state)
            except MissingMarketData as missing:
                self._waiting_for_data(ctx, str(missing))
                return
            self.missing_data = ""
            limits = self._limits()
            levels = self._solvency(view, limits)
            if slot == last_slot and not self._risk_event(ctx, levels):
                return
            self._levels = levels or self._levels
            last_slot = slot
            decision = decide(next_change(self._spec, view), self._spec, view, limits=limits)
            await self._issue(ctx, decision, hour, pending)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.market, on_market)
            tg.start_soon(serve, ctx, self.events, on_event)
            tg.start_soon(self._decide_once_open, maybe_decide)

    def _failed(self, ctx: ActorContext, event: InstructionFinished) -> None:
        self.failed_instructions += 1
        ctx.log.warning("instruction_failed", instruction_id=event.instruction_id, reason=event.reason,
                        steps_done=event.steps_done)
        if event.steps_done == 0:
            self._back_off(ctx)
        else:
            # Half an instruction is a position nobody designed (DOMAIN §8 #20): keep what is held, send nothing
            # new, and leave the next move to a human.
            ctx.trading.halt(f"instruction {event.instruction_id} stopped after {event.steps_done} step(s): "
                             f"{event.reason}", source="strategy")

    def _may_decide(self, now: int, *, same_interval: bool) -> bool:
        """Not backing off, and a new interval — or, on live data, inside it if a risk event may call for it."""
        return now >= self.retry_at_ns and (not same_interval or self._decide_on_risk)

    def _solvency(self, view: StrategyView, limits: RiskLimits) -> tuple[Level, Level] | None:
        """The solvency readings now, on live data (`solvency_levels`); None in a replay, which never reads them."""
        return solvency_levels(self._spec, view, limits) if self._decide_on_risk else None

    def _risk_event(self, ctx: ActorContext, levels: tuple[Level, Level] | None) -> bool:
        """Inside the interval, on live data (`levels` the solvency readings now; None off live data): whether one
        reached a worse level than at the last decision (then it is decided on now, and said); a reading better
        since — a top-up landed — is kept, so that the next worsening is an event again."""
        if levels is None:
            return False
        was = self._levels
        if not any(now > before for now, before in zip(levels, was, strict=True)):
            self._levels = (min(levels[0], was[0]), min(levels[1], was[1]))
            return False
        self.risk_decisions += 1
        ctx.log.warning("deciding_on_risk", margin=levels[0].name, aave=levels[1].name, was_margin=was[0].name,
                        was_aave=was[1].name, detail="a reading reached a worse level than at the last decision: "
                                                     "decided now, not at the next interval")
        return True

    def _back_off(self, ctx: ActorContext) -> None:
        """An instruction refused whole: on live venues, wait longer before each attempt in a row."""
        if self._backoff_max_ns is None:
            return
        self._refusals += 1
        wait_ns = min(self._interval_ns * 2 ** min(self._refusals - 1, 32), self._backoff_max_ns)
        self.retry_at_ns = ctx.clock.now_ns() + wait_ns
        ctx.log.info("decisions_backing_off", refusals_in_a_row=self._refusals, wait_s=wait_ns / 1e9,
                     detail="the next decision waits before trying again")

    async def _decide_once_open(self, decide_now: Callable[[], Awaitable[None]]) -> None:
        if self._gate is not None and not self._gate.is_open:
            await self._gate.wait()
            await decide_now()  # on the books as they are now, checked

    def _waiting_for_data(self, ctx: ActorContext, missing: str) -> None:
        """Not every series has arrived yet (on live data: a venue may not be answering). Said once."""
        if missing != self.missing_data:
            self.missing_data = missing
            ctx.log.info("waiting_for_market_data", missing=missing)

    def _check_marks(self, board: MarketBoard) -> None:
        """Every venue the hedge trades has reported its own mark (a venue whose data failed from the start has none;
        the view would price its perp at spot, and its orders could not fill)."""
        asset = self._spec.asset
        missing = [v for v, w in self._spec.hedge_weights.items()
                   if w > 0 and self._spec.hedged and v in self._venues and (v, asset) not in board.marks]
        if missing:
            raise MissingMarketData(f"no {asset} perp mark from {', '.join(missing)}")

    def _waiting(self, ctx: ActorContext) -> bool:
        """Whether the start gate is still closed (said once, as a hold with its reason)."""
        if self._gate is None or self._gate.is_open:
            return False
        if self.hold_reason != self._gate.reason:
            self.hold_reason = self._gate.reason
            ctx.log.info("holding", reason=self.hold_reason)
        return True

    async def _issue(self, ctx: ActorContext, decision: Decision, hour: int, pending: set[InstructionId]) -> None:
        """Send the decision's instructions (lossless, to risk); log an explicit hold when there are none.

        Each id joins `pending` before its command is sent: the instruction may finish before `send` returns.
        """
        self.decisions += 1
        if decision.hold_reason and decision.hold_reason != self.hold_reason:
            if decision.change is Change.INITIAL_SETUP:  # flat: the capital earns nothing until it enters
                ctx.log.warning("holding", reason=decision.hold_reason, flat=True)
            else:
                ctx.log.info("holding", reason=decision.hold_reason)
        self.hold_reason = decision.hold_reason
        for instruction in decision.instructions:
            self._sequence += 1
            instruction_id = InstructionId(f"{self._prefix}{hour}-{self._sequence}")
            pending.add(instruction_id)
            now = ctx.clock.now_ns()
            await self._commands.send(ExecuteInstruction(instruction_id, instruction, now, now))
            self.instructions += 1
            self.issued.append((now, instruction_id, instruction, decision.change.value))
            ctx.log.info("instruction_issued", instruction_id=instruction_id, type=instruction.type,
                         venue=instruction.venue, amount_usd=f"{instruction.amount_usd:.2f}",
                         steps=[s.action for s in instruction.steps], change=decision.change.value)
