"""Risk: the gate between strategy and execution, and the judge of the trading state.

Orders: HALTED lets nothing through; REDUCING only reduce-only orders. Rejections go back to the strategy
as `OrderRejected`, so it never waits on an order that will not happen.

Snapshots: every portfolio snapshot is assessed (margin per venue, the drawdown breaker) with the limits in
force at that moment (a SIGHUP reload changes them), and the trading state follows: an urgent solvency
level or a tripped breaker means REDUCING, the breaker's last level HALTED. Risk may move the state towards
safety on its own, and back to ACTIVE once its own reasons clear; it never lifts a halt it did not set.

The drawdown breaker acts (`daemon.domain.risk.DrawdownBreaker`): each level, once per trip, has its unwind
sized from the books (`plan`, the strategy's own WITHDRAWAL or UNWIND recipe) and sent to execution — level 1 half
of every leg, level 2 half of what is left, level 3 everything, as an emergency flatten carried out although
trading is HALTED. An unwind is sized on settled books: it waits until no approved instruction is in flight and
the books have booked what those produced, and while it is due or running the strategy's instructions are
refused (with no step done, so the strategy simply decides again next cycle on the reduced books). The unwinds
go out in any trading state, as an emergency flatten does (`basisd halt --flatten`): a halt stops the strategy
and new exposure, and the breaker only ever takes exposure down — after a liquidation has halted trading, the
leg left without its hedge is exactly what it is for. Every action is logged with its reason, kept in `actions`
(the backtest's `breaker_actions`) and recorded (`record`: the journal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import structlog

from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.domain.booking import split_instrument
from daemon.domain.ids import InstructionId
from daemon.domain.ledger import LedgerSnapshot
from daemon.domain.market import MissingMarketData
from daemon.domain.messages import (
    Command,
    ExecuteInstruction,
    HaltTrading,
    InstructionFinished,
    OrderEvent,
    OrderRejected,
    PortfolioSnapshotted,
    ResumeTrading,
    RiskAssessed,
    SubmitOrder,
    TradingState,
)
from daemon.domain.risk import (
    BREAKER_SETTINGS,
    BreakerAction,
    DrawdownAction,
    DrawdownBreaker,
    Level,
    MarginReading,
    RiskLimits,
    margin_reading,
    mark_divergence,
    permits,
    stale_series,
)
from daemon.domain.risk import trading_state as implied_state
from daemon.gate import StartGate
from daemon.lifecycle import ActorContext, serve
from daemon.state_store import StateStore


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    margins: tuple[MarginReading, ...]
    drawdown: Decimal
    breaker: DrawdownAction
    solvency: Level
    implied: TradingState
    stale: tuple[str, ...]  # series past their staleness limit
    mark_divergence: Decimal  # largest gap between venues' marks, as a fraction
    divergence_level: Level  # flag (> 0.5 %, maybe bad data) or alert (> 1 %): reported, never traded on


BREAKER_KEY = "drawdown_breaker"
PEAK_SAVE_STEP = Decimal("1.001")  # persist a new NAV peak once it is 0.1 % above the saved one, not every bar
# `breaker_levels` gives the breaker's settings a reload may change in `BREAKER_SETTINGS` order (3: the levels only).



@dataclass(frozen=True, slots=True)
class Unwind:
    """A breaker action's unwind, sized from the books as they are now: the commands to send (none: nothing held),
    and what it cost once done — the books after it valued at the market it was sized at, against the books
    before it (so the market's own move while it ran is not counted as its cost)."""

    commands: Sequence[ExecuteInstruction]
    cost: Callable[[LedgerSnapshot], Decimal] | None = None


BreakerPlan = Callable[[BreakerAction], Unwind]
BreakerRecord = Callable[[BreakerAction, str], None]  # the action and what was sent


class RiskActor:
    name = "risk"

    def __init__(
        self,
        inbox: LosslessChannel[Command],
        approved: LosslessChannel[SubmitOrder | ExecuteInstruction],
        events: LosslessChannel[OrderEvent],
        snapshots: ConflatingChannel[PortfolioSnapshotted],
        limits: Callable[[], RiskLimits],
        breaker: DrawdownBreaker,
        store: StateStore | None = None,
        published: Fanout[RiskAssessed] | None = None,
        currency: str = "USDT",
        breaker_levels: Callable[[], tuple[Decimal, ...]] | None = None,
        gate: StartGate | None = None,
        plan: BreakerPlan | None = None,
        record: BreakerRecord | None = None,
        follows_execution: bool = False,
        in_flight_limit_s: float = 600.0,
    ) -> None:
        self.inbox = inbox
        self._plan = plan
        self._record = record
        # With `follows_execution`, execution reports every finished instruction here (`instruction_finished`), so
        # a breaker unwind is sized only once nothing approved is still running.
        self._follows = follows_execution
        # Approved instructions not finished yet, with when (monotonic) they went out. One execution never reports
        # (its actor died mid-way) stops holding the breaker back after `in_flight_limit_s`.
        self._in_flight: dict[InstructionId, float] = {}
        self._in_flight_limit_s = in_flight_limit_s
        self._unwinding: set[InstructionId] = set()  # the breaker's own, in flight
        self._reports_due = 0
        self._due: BreakerAction | None = None  # tripped, its unwind not sent yet
        self._unwind_nav: Decimal | None = None  # the NAV the unwind was sized at, until it has settled
        self._cost_of: Callable[[LedgerSnapshot], Decimal] | None = None
        self._nav: Decimal | None = None  # the latest NAV in the share class's currency
        self._breaker_reason = ""
        self.actions: list[dict[str, Any]] = []
        self._gate = gate  # closed until start-up is done (daemon.gate): nothing is approved before
        self.snapshots = snapshots
        self._approved = approved
        self._events = events
        self._limits = limits
        # The breaker outlives restarts of this actor and, with a store, of the process: a tripped breaker
        # that a restart forgot would resume trading after the loss that tripped it.
        self._store = store
        self._published = published
        # The levels in force now (reduce, close, halt): SIGHUP may change them. The breaker's state — its peak
        # and what it tripped — survives restarts; its levels always come from the configuration.
        self._levels = breaker_levels
        # Drawdown is the investor's: measured in the share class's currency. An ETH share class holds ETH, so
        # its NAV in USD falls with the price of ETH, which is not a loss to it (and tripped the breaker).
        self._in_eth = currency == "ETH"
        self._breaker_key = BREAKER_KEY if not self._in_eth else f"{BREAKER_KEY}_eth"
        saved = store.load(self._breaker_key) if store is not None else None
        self.breaker = DrawdownBreaker.from_dict(saved) if saved is not None else breaker
        self._saved_peak = self.breaker.peak_nav
        self._saved = (self.breaker.tripped, self.breaker.day, self.breaker.excluded_costs)
        self._acted = self.breaker.tripped  # a level restored tripped acted before the restart: never resent
        self.assessment: RiskAssessment | None = None
        self.rejected = 0
        self._rearm = False

    def instruction_finished(self, event: InstructionFinished) -> None:
        """Execution's word that an instruction ended (called synchronously, before the strategy hears it)."""
        if self._in_flight.pop(event.instruction_id, None) is not None:
            self._reports_due += event.reports
        self._unwinding.discard(event.instruction_id)

    def rearm_breaker(self) -> None:
        """An operator resumed trading: re-arm the drawdown breaker from the next NAV. (A latched breaker would
        otherwise put trading straight back to HALTED on the next snapshot, and `basisd resume` would not hold.)"""
        self._rearm = True

    async def run(self, ctx: ActorContext) -> None:
        async def on_command(command: Command) -> None:
            if isinstance(command, ExecuteInstruction):
                state = ctx.trading.state
                waiting = (self._gate.reason if self._gate is not None else "") or self._unwind_in_progress()
                if not waiting and permits(state, command.instruction.reduces_exposure):
                    await self._send(command)
                    return
                self.rejected += 1
                now = ctx.clock.now_ns()
                reason = waiting or f"trading is {state.value.lower()}"
                ctx.log.warning("instruction_refused", instruction_id=command.instruction_id, reason=reason)
                await self._events.send(InstructionFinished(command.instruction_id, False, 0, 0, reason, now, now))
            elif isinstance(command, SubmitOrder):
                refusal = (self._gate.reason if self._gate is not None else "") or self._refusal(
                    command, ctx.trading.state)
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
                self.rearm_breaker()
                ctx.trading.set(TradingState.ACTIVE, command.reason, source="risk")

        async def on_snapshot(snapshot: PortfolioSnapshotted) -> None:
            previous = self.assessment
            self.assessment = self._assess(snapshot)
            if self.assessment.divergence_level > Level.OK and (
                    previous is None or previous.divergence_level < self.assessment.divergence_level):
                ctx.log.warning("mark_divergence", level=self.assessment.divergence_level.name,
                                gap=f"{self.assessment.mark_divergence:.4%}")
            self._apply(ctx, self.assessment, self._breaker_reason)
            await self._act(ctx, snapshot)
            if self._published is not None:
                a, now = self.assessment, ctx.clock.now_ns()
                self._published.publish(RiskAssessed(
                    ctx.trading.state, a.solvency.name, tuple((m.venue, m.ratio) for m in a.margins), a.drawdown,
                    a.breaker.name, a.mark_divergence, snapshot.ts_event, now))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.inbox, on_command)
            tg.start_soon(serve, ctx, self.snapshots, on_snapshot)

    def _unwind_cost(self, snapshot: PortfolioSnapshotted, nav: Decimal, nav_before: Decimal) -> Decimal:
        valued, self._cost_of = self._cost_of, None
        if valued is not None and snapshot.ledger is not None:
            try:
                return valued(snapshot.ledger)
            except MissingMarketData:
                pass
        return nav_before - nav  # without the books: the NAV's change while it ran (the market's move included)

    def _unwind_in_progress(self) -> str:
        """Why the strategy's instructions wait: the breaker's unwind is due or running ("" if not)."""
        if self._due is not None or self._unwinding:
            level = self._due.level if self._due is not None else self.breaker.tripped
            return f"the drawdown breaker's level {int(level)} unwind is in progress: decided again next cycle"
        return ""

    async def _send(self, command: ExecuteInstruction) -> None:
        if self._follows:
            self._in_flight[command.instruction_id] = time.monotonic()
        await self._approved.send(command)

    def _waiting_for_execution(self, ctx: ActorContext) -> bool:
        now = time.monotonic()
        for instruction_id, sent in list(self._in_flight.items()):
            if now - sent > self._in_flight_limit_s:
                ctx.log.error("instruction_never_finished", instruction_id=instruction_id,
                              detail="the breaker's unwind no longer waits for it")
                del self._in_flight[instruction_id]
        self._unwinding &= set(self._in_flight)
        return bool(self._in_flight)

    async def _act(self, ctx: ActorContext, snapshot: PortfolioSnapshotted) -> None:
        """Send the due breaker action's unwind, once the books are settled (see the module's docstring)."""
        action = self._due
        if action is None or snapshot.reports_booked < self._reports_due or self._waiting_for_execution(ctx):
            return
        self._due = None
        self._acted = action.level
        try:
            unwind = self._plan(action) if self._plan is not None else Unwind(())
        except Exception as exc:  # a level that cannot be sized is said loudly; the state it implies stands
            ctx.log.critical("drawdown_breaker_unwind_failed", level=int(action.level), error=str(exc),
                             error_type=type(exc).__name__)
            unwind = Unwind((), None)
            failure = f"nothing: the unwind could not be sized ({type(exc).__name__}: {exc})"
        else:
            failure = ""
        commands = unwind.commands
        if commands:
            self._unwind_nav, self._cost_of = self._nav, unwind.cost
        sent = "; ".join(f"{c.instruction_id} ({c.instruction.type}: "
                         f"{', '.join(s.action for s in c.instruction.steps)})" for c in commands) or \
            failure or "nothing: no unwind (nothing held, or no planner)"
        for command in commands:
            if self._follows:  # (without execution's word there is no knowing when it ends: nothing waits for it)
                self._unwinding.add(command.instruction_id)
            await self._send(command)
        ctx.log.warning("drawdown_breaker_acted", level=int(action.level), action=action.level.name,
                        drawdown=f"{action.drawdown:.4%}", daily_loss=f"{action.daily_loss:.4%}",
                        unwind_fraction=str(action.unwind_fraction), reason=action.reason, sent=sent)
        self.actions.append({
            "level": int(action.level), "action": action.level.name.lower(),
            "time": datetime.fromtimestamp(action.ts_ns / 1e9, UTC).isoformat(),
            "drawdown": f"{action.drawdown:.6f}", "daily_loss": f"{action.daily_loss:.6f}",
            "unwind_fraction": f"{action.unwind_fraction:.6f}", "reason": action.reason, "sent": sent})
        if self._record is not None:
            self._record(action, sent)

    def _assess(self, snapshot: PortfolioSnapshotted) -> RiskAssessment:
        limits = self._limits()
        cash = dict(snapshot.cash)
        margins = []
        for p in snapshot.positions:
            venue = split_instrument(p.instrument_id)[0]
            margins.append(margin_reading(venue, cash.get(f"{venue}:USDT", Decimal(0)), p.quantity,
                                          p.average_price, p.mark_price, limits))
        nav = snapshot.nav_usd / snapshot.eth_usd if self._in_eth and snapshot.eth_usd else snapshot.nav_usd
        self._nav = nav
        if self._levels is not None:
            levels = self._levels()
            if self.breaker.settings()[:len(levels)] != levels:
                structlog.get_logger().warning("drawdown_levels_applied", actor=self.name,
                                               **{k: str(v) for k, v in zip(BREAKER_SETTINGS, levels, strict=False)})
                self.breaker = self.breaker.configured(*levels)
        if self._rearm:
            self._rearm = False
            if self.breaker.tripped is not DrawdownAction.NONE or self.breaker.peak_nav > nav:
                structlog.get_logger().warning(
                    "drawdown_breaker_rearmed", actor=self.name, previous_peak=str(self.breaker.peak_nav),
                    nav=str(nav), was=self.breaker.tripped.name)
            self.breaker = self.breaker.reset(nav)
            self._acted, self._due, self._unwind_nav = DrawdownAction.NONE, None, None
            self._saved_peak = Decimal(0)  # persist the re-armed breaker below
        if self._unwind_nav is not None:
            if self._due is not None or self._unwinding or snapshot.reports_booked < self._reports_due:
                # An unwind is under way: the next level is judged once it has settled, on what it left.
                return self._assessment(snapshot, margins, limits, nav)
            cost, self._unwind_nav = self._unwind_cost(snapshot, nav, self._unwind_nav), None
            self.breaker = self.breaker.exclude(cost)
            structlog.get_logger().warning("drawdown_breaker_unwind_settled", actor=self.name, cost=f"{cost:.6f}",
                                           excluded_costs=str(self.breaker.excluded_costs))
        observed, action = self.breaker.step(nav, snapshot.ts_event)
        if action is not None:
            # Sized from the last level whose unwind went out: a level that replaces one not sent yet unwinds what
            # both would have.
            self._due = replace(action, unwind_fraction=observed.unwind_fraction(self._acted))
            self._breaker_reason = action.reason
            structlog.get_logger().warning("drawdown_breaker_tripped", actor=self.name, level=int(action.level),
                                           action=action.level.name, drawdown=f"{action.drawdown:.4%}",
                                           daily_loss=f"{action.daily_loss:.4%}", reason=action.reason)
        # Saved when what it would restore differs in a way that matters: a level, the day it measures from, the
        # unwind costs it excludes, or a peak 0.1 % above the saved one.
        kept = (observed.tripped, observed.day, observed.excluded_costs)
        if self._store is not None and (kept != self._saved or not self._saved_peak or
                                        observed.peak_nav >= self._saved_peak * PEAK_SAVE_STEP):
            self._store.save(self._breaker_key, observed.to_dict())
            self._saved_peak, self._saved = observed.peak_nav, kept
        self.breaker = observed
        return self._assessment(snapshot, margins, limits, nav)

    def _assessment(self, snapshot: PortfolioSnapshotted, margins: list[MarginReading], limits: RiskLimits,
                    nav: Decimal) -> RiskAssessment:
        solvency = max((m.level for m in margins), default=Level.OK)
        stale = stale_series(dict(snapshot.series_ages_s), limits)
        implied = implied_state(solvency, self.breaker.tripped, operator_halted=False, stale=bool(stale))
        marks = {split_instrument(p.instrument_id)[0]: p.mark_price for p in snapshot.positions}
        gap, gap_level = mark_divergence(marks, limits)
        return RiskAssessment(tuple(margins), self.breaker.drawdown(nav), self.breaker.tripped,
                              solvency, implied, stale, gap, gap_level)

    @staticmethod
    def _apply(ctx: ActorContext, a: RiskAssessment, breaker_reason: str = "") -> None:
        current = ctx.trading.state
        if current is TradingState.HALTED or a.implied is current:
            return  # a halt is lifted only by whoever set it (an operator, or a resume command)
        if a.implied is TradingState.ACTIVE and current is TradingState.REDUCING:
            # Hysteresis: back to ACTIVE only once clear of the warning band too, not merely above urgent,
            # so a ratio hovering at the line does not flap the state (and the orders) every bar.
            if a.solvency is Level.OK and not a.stale:
                ctx.trading.set(TradingState.ACTIVE, "risk cleared", source="risk")
            return
        worst = min(a.margins, key=lambda m: m.ratio, default=None)
        reason = ((breaker_reason or f"drawdown breaker {a.breaker.name}") if a.breaker is not DrawdownAction.NONE else
                  f"stale market data: {', '.join(a.stale)}" if a.stale and a.solvency < Level.URGENT else
                  f"margin {worst.level.name} on {worst.venue} (ratio {worst.ratio:.3f})" if worst else "risk")
        ctx.trading.set(a.implied, reason, source="risk")

    @staticmethod
    def _refusal(order: SubmitOrder, state: TradingState) -> str | None:
        if permits(state, order.reduce_only):
            return None
        if state is TradingState.HALTED:
            return "trading is halted"
        return "trading is reducing: only reduce-only orders are allowed"
