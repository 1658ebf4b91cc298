"""Execution: carries out approved orders and instructions through the venue ports.

An instruction's steps run one at a time, in order (the tight loop of spec 06): each step's venue reports
are on the report channel before the next step starts. The trading state is checked before every step, so
a halt stops an instruction between steps; an instruction that reduces exposure may finish in REDUCING.
A step that fails stops the instruction and is reported: it is never retried blindly, because a network
error is not proof that nothing happened (the venue is asked, by client order id, when adapters are live).
Later steps never move more than the earlier steps produced (a swap fee makes a deleverage free a little
less than planned).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal

from daemon.bus import LosslessChannel
from daemon.domain.booking import split_instrument
from daemon.domain.ids import InstructionId, InstrumentId, client_order_id
from daemon.domain.messages import (
    ExecuteInstruction,
    InstructionFinished,
    OrderEvent,
    OrderRejected,
    Side,
    SubmitOrder,
    TradingState,
)
from daemon.domain.strategy import Step
from daemon.errors import NonRetryableVenueError, VenueError
from daemon.lifecycle import ActorContext, serve
from daemon.ports import ExchangeVenue
from daemon.venues.simulated_chain import SimulatedChain

QTY = Decimal("0.001")
# action → (spot or perp, side, reduce_only)
ORDER_STEPS: dict[str, tuple[str, Side, bool]] = {
    "BUY_SPOT": ("Spot", Side.BUY, False),
    "SELL_SPOT": ("Spot", Side.SELL, False),
    "SELL_ETH_SPOT": ("Spot", Side.SELL, False),
    "OPEN_PERP_SHORT": ("Perp", Side.SELL, False),
    "INCREASE_PERP_SHORT": ("Perp", Side.SELL, False),
    "REDUCE_PERP_SHORT": ("Perp", Side.BUY, True),
    "REDUCE_PERP_LONG": ("Perp", Side.SELL, True),
}


class ExecutionActor:
    name = "execution"

    def __init__(
        self,
        inbox: LosslessChannel[SubmitOrder | ExecuteInstruction],
        venues: Mapping[str, ExchangeVenue],
        events: LosslessChannel[OrderEvent],
        chain: SimulatedChain | None = None,
    ) -> None:
        self.inbox = inbox
        self._venues = venues
        self._events = events
        self._chain = chain
        self.sent = 0

    async def run(self, ctx: ActorContext) -> None:
        async def handle(command: SubmitOrder | ExecuteInstruction) -> None:
            if isinstance(command, ExecuteInstruction):
                await self._execute(ctx, command)
                return
            reason = await self._submit(ctx, command)
            if reason is not None:
                now = ctx.clock.now_ns()
                ctx.log.warning("order_rejected", client_order_id=command.client_order_id, reason=reason)
                await self._events.send(OrderRejected(command.client_order_id, command.instrument_id, reason, now,
                                                      now))

        await serve(ctx, self.inbox, handle)

    async def _submit(self, ctx: ActorContext, order: SubmitOrder) -> str | None:
        """Send one order, checking the trading state at the last moment; the reason it failed, or None."""
        state = ctx.trading.state
        if state is TradingState.HALTED or (state is TradingState.REDUCING and not order.reduce_only):
            return f"trading is {state.value.lower()}"
        venue = self._venues.get(split_instrument(order.instrument_id)[0])
        if venue is None:
            return f"no venue adapter for {order.instrument_id}"
        report = await venue.submit_order(order)
        self.sent += 1
        return f"{report.venue}: {report.reason}" if report.status == "rejected" else None

    async def _execute(self, ctx: ActorContext, command: ExecuteInstruction) -> None:
        instruction = command.instruction
        done = reports = 0
        freed: Decimal | None = None  # what an earlier step actually produced, caps what later steps move
        reason = ""
        for step in instruction.steps:
            state = ctx.trading.state
            if state is TradingState.HALTED or (state is TradingState.REDUCING and not instruction.reduces_exposure):
                reason = f"stopped before step {step.step}: trading is {state.value.lower()}"
                break
            try:
                if step.action in ORDER_STEPS:
                    await self._order_step(ctx, command.instruction_id, step, freed)
                else:
                    freed = await self._chain_step(command.instruction_id, step, freed)
            except VenueError as exc:
                reason = f"step {step.step} {step.action} failed: {exc}"
                break
            reports += 1
            done += 1
        now = ctx.clock.now_ns()
        completed = done == len(instruction.steps)
        log = ctx.log.info if completed else ctx.log.error
        log("instruction_finished", instruction_id=command.instruction_id, type=instruction.type,
            completed=completed, steps_done=done, steps=len(instruction.steps), reason=reason)
        await self._events.send(InstructionFinished(command.instruction_id, completed, done, reports, reason, now,
                                                    now))

    async def _order_step(self, ctx: ActorContext, instruction_id: InstructionId, step: Step,
                          freed: Decimal | None) -> None:
        kind, side, reduce_only = ORDER_STEPS[step.action]
        quantity = _amount(step, freed, "amount", "amount_eth").quantize(QTY, rounding=ROUND_DOWN)
        now = ctx.clock.now_ns()
        order = SubmitOrder(client_order_id(instruction_id, step.step), instruction_id,
                            InstrumentId(f"{step.venue}:{kind}:ETHUSDT"), side, quantity, reduce_only, step.action,
                            now, now)
        reason = await self._submit(ctx, order)
        if reason is not None:
            raise NonRetryableVenueError(reason)

    async def _chain_step(self, instruction_id: InstructionId, step: Step, freed: Decimal | None) -> Decimal | None:
        """Carry out an on-chain or transfer step; return the ETH it freed for the steps after it."""
        chain = self._chain
        if chain is None:
            raise NonRetryableVenueError(f"no venue can carry out {step.action}")
        ref, params = f"{instruction_id}-{step.step}", step.params
        if step.action == "TRANSFER_USDT_TO_CEX":
            await chain.transfer_usdt_to_cex(step.venue, _amount(step, freed, "amount_usd"), ref)
        elif step.action == "TRANSFER_ETH_TO_CEX":
            await chain.transfer_eth_to_cex(step.venue, _amount(step, freed, "amount_eth"), ref)
        elif step.action == "WITHDRAW_TO_WALLET":
            await chain.withdraw_eth_from_cex(step.venue, _amount(step, freed, "amount_eth"), ref)
        elif step.action == "STAKE":
            await chain.stake(_amount(step, freed, "amount_eth"), ref)
        elif step.action == "ATOMIC_LEVERAGE_ENTRY":
            await chain.atomic_leverage_entry(Decimal(str(params["equity_eth"])), Decimal(str(params["supply_eth"])),
                                              Decimal(str(params["borrow_eth"])), ref)
        elif step.action == "ATOMIC_DELEVERAGE_AAVE" and "withdraw_eth" in params:
            return await chain.atomic_deleverage(Decimal(str(params["repay_eth"])),
                                                 Decimal(str(params["withdraw_eth"])), ref)
        else:
            raise NonRetryableVenueError(f"the simulated chain cannot carry out {step.action} yet")
        return freed


def _amount(step: Step, freed: Decimal | None, *keys: str) -> Decimal:
    for key in keys:
        if key in step.params:
            value = Decimal(str(step.params[key]))
            return min(value, freed) if freed is not None else value
    raise NonRetryableVenueError(f"{step.action} has none of the parameters {keys}")
