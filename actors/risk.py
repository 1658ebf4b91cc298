"""Risk: the gate between strategy and execution, and the judge of the trading state.

Orders: HALTED lets nothing through; REDUCING only reduce-only orders. Rejections go back to the strategy
as `OrderRejected`, so it never waits on an order that will not happen.

Snapshots: every portfolio snapshot is assessed (margin per venue, the drawdown breaker) with the limits in
force at that moment (a SIGHUP reload changes them), and the trading state follows: an urgent solvency
level or a tripped breaker means REDUCING, the breaker's last level HALTED. Risk may move the state towards
safety on its own, and back to ACTIVE once its own reasons clear; it never lifts a halt it did not set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

import anyio
import structlog

from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.domain.booking import split_instrument
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
        breaker_levels: Callable[[], tuple[Decimal, Decimal, Decimal]] | None = None,
        gate: StartGate | None = None,
    ) -> None:
        self.inbox = inbox
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
        self.assessment: RiskAssessment | None = None
        self.rejected = 0
        self._rearm = False

    def rearm_breaker(self) -> None:
        """An operator resumed trading: re-arm the drawdown breaker from the next NAV. (A latched breaker would
        otherwise put trading straight back to HALTED on the next snapshot, and `basisd resume` would not hold.)"""
        self._rearm = True

    async def run(self, ctx: ActorContext) -> None:
        async def on_command(command: Command) -> None:
            if isinstance(command, ExecuteInstruction):
                state = ctx.trading.state
                waiting = self._gate.reason if self._gate is not None else ""
                if not waiting and permits(state, command.instruction.reduces_exposure):
                    await self._approved.send(command)
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
            self._apply(ctx, self.assessment)
            if self._published is not None:
                a, now = self.assessment, ctx.clock.now_ns()
                self._published.publish(RiskAssessed(
                    ctx.trading.state, a.solvency.name, tuple((m.venue, m.ratio) for m in a.margins), a.drawdown,
                    a.breaker.name, a.mark_divergence, snapshot.ts_event, now))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, ctx, self.inbox, on_command)
            tg.start_soon(serve, ctx, self.snapshots, on_snapshot)

    def _assess(self, snapshot: PortfolioSnapshotted) -> RiskAssessment:
        limits = self._limits()
        cash = dict(snapshot.cash)
        margins = []
        for p in snapshot.positions:
            venue = split_instrument(p.instrument_id)[0]
            margins.append(margin_reading(venue, cash.get(f"{venue}:USDT", Decimal(0)), p.quantity,
                                          p.average_price, p.mark_price, limits))
        nav = snapshot.nav_usd / snapshot.eth_usd if self._in_eth and snapshot.eth_usd else snapshot.nav_usd
        if self._levels is not None:
            levels = self._levels()
            if levels != (self.breaker.reduce_fraction, self.breaker.close_fraction, self.breaker.halt_fraction):
                structlog.get_logger().warning(
                    "drawdown_levels_applied", actor=self.name, reduce=str(levels[0]), close=str(levels[1]),
                    halt=str(levels[2]))
                self.breaker = replace(self.breaker, reduce_fraction=levels[0], close_fraction=levels[1],
                                       halt_fraction=levels[2])
        if self._rearm:
            self._rearm = False
            if self.breaker.tripped is not DrawdownAction.NONE or self.breaker.peak_nav > nav:
                structlog.get_logger().warning(
                    "drawdown_breaker_rearmed", actor=self.name, previous_peak=str(self.breaker.peak_nav),
                    nav=str(nav), was=self.breaker.tripped.name)
            self.breaker = self.breaker.reset(nav)
            self._saved_peak = Decimal(0)  # persist the re-armed breaker below
        observed = self.breaker.observe(nav)
        if self._store is not None and (observed.tripped is not self.breaker.tripped or not self._saved_peak or
                                        observed.peak_nav >= self._saved_peak * PEAK_SAVE_STEP):
            self._store.save(self._breaker_key, observed.to_dict())
            self._saved_peak = observed.peak_nav
        self.breaker = observed
        solvency = max((m.level for m in margins), default=Level.OK)
        stale = stale_series(dict(snapshot.series_ages_s), limits)
        implied = implied_state(solvency, self.breaker.tripped, operator_halted=False, stale=bool(stale))
        marks = {split_instrument(p.instrument_id)[0]: p.mark_price for p in snapshot.positions}
        gap, gap_level = mark_divergence(marks, limits)
        return RiskAssessment(tuple(margins), self.breaker.drawdown(snapshot.nav_usd), self.breaker.tripped,
                              solvency, implied, stale, gap, gap_level)

    @staticmethod
    def _apply(ctx: ActorContext, a: RiskAssessment) -> None:
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
        reason = (f"drawdown breaker {a.breaker.name}" if a.breaker is not DrawdownAction.NONE else
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
