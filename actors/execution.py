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

from collections.abc import Awaitable, Callable, Mapping
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
from daemon.domain.risk import permits
from daemon.domain.strategy import Step
from daemon.errors import NonRetryableVenueError, VenueError
from daemon.gate import StartGate
from daemon.journal import Journal
from daemon.lifecycle import ActorContext, serve
from daemon.ports import ChainVenue, ExchangeVenue

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


# REDUCE_LTV's steps after FLASH_BORROW: one atomic transaction, carried out as the FLASH_BORROW step.
ATOMIC_BUNDLE_TAIL = frozenset({"REPAY_DEBT", "WITHDRAW_COLLATERAL", "SWAP_LST_TO_WETH", "REPAY_FLASH"})


class ExecutionActor:
    name = "execution"

    def __init__(
        self,
        inbox: LosslessChannel[SubmitOrder | ExecuteInstruction],
        venues: Mapping[str, ExchangeVenue],
        events: LosslessChannel[OrderEvent],
        chain: ChainVenue | None = None,
        journal: Journal | None = None,
        gate: StartGate | None = None,
    ) -> None:
        self.inbox = inbox
        # The last line before the venue ports: nothing is sent while the start gate is closed (daemon.gate).
        self._gate = gate
        self._venues = venues
        self._events = events
        self._chain = chain
        self._journal = journal  # each order's intent before it is sent, and the venue's answer
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

    async def _submit(self, ctx: ActorContext, order: SubmitOrder, flatten: bool = False) -> str | None:
        """Send one order, checking the trading state at the last moment; the reason it failed, or None.
        `flatten`: a step of an operator's emergency flatten, which may go out while HALTED."""
        if self._gate is not None and not self._gate.is_open:
            return self._gate.reason
        state = ctx.trading.state
        if not (permits(state, order.reduce_only) or (flatten and state is TradingState.HALTED)):
            return f"trading is {state.value.lower()}"
        venue = self._venues.get(split_instrument(order.instrument_id)[0])
        if venue is None:
            return f"no venue adapter for {order.instrument_id}"
        journal = self._journal
        if journal is not None:
            journal.record_order(ctx.clock.now_ns(), order.client_order_id, order.instruction_id, "intent", order)
        try:
            report = await venue.submit_order(order)
        except VenueError as exc:
            if journal is not None:
                journal.record_order(ctx.clock.now_ns(), order.client_order_id, order.instruction_id, "error",
                                     {"error": str(exc), "kind": type(exc).__name__})
            raise
        if journal is not None:
            journal.record_order(ctx.clock.now_ns(), order.client_order_id, order.instruction_id, report.status,
                                 report)
        self.sent += 1
        return f"{report.venue}: {report.reason}" if report.status == "rejected" else None

    async def _execute(self, ctx: ActorContext, command: ExecuteInstruction) -> None:
        instruction = command.instruction
        done = reports = 0
        freed: Decimal | None = None  # what an earlier step actually produced, caps what later steps move
        reason = ""
        flatten = command.operator_flatten and instruction.reduces_exposure
        for step in instruction.steps:
            if self._gate is not None and not self._gate.is_open:
                reason = f"stopped before step {step.step}: {self._gate.reason}"
                break
            state = ctx.trading.state
            if not (permits(state, instruction.reduces_exposure) or (flatten and state is TradingState.HALTED)):
                reason = f"stopped before step {step.step}: trading is {state.value.lower()}"
                break
            # The reports a step produced: one fill for an order; for the chain, every transaction it sent (a
            # sequential loop sends dozens, a step inside a flash bundle none). The strategy waits for its
            # books to have booked them all before it decides again.
            sent_before = self._chain.transactions if self._chain is not None else 0
            try:
                if step.action in ORDER_STEPS:
                    await self._order_step(ctx, command.instruction_id, step, freed, flatten)
                    reports += 1
                else:
                    freed = await self._chain_step(command.instruction_id, step, freed)
            except VenueError as exc:
                reason = f"step {step.step} {step.action} failed: {exc}"
                break
            finally:
                if self._chain is not None:
                    reports += self._chain.transactions - sent_before
            done += 1
        now = ctx.clock.now_ns()
        completed = done == len(instruction.steps)
        log = ctx.log.info if completed else ctx.log.error
        log("instruction_finished", instruction_id=command.instruction_id, type=instruction.type,
            completed=completed, steps_done=done, steps=len(instruction.steps), reason=reason)
        await self._events.send(InstructionFinished(command.instruction_id, completed, done, reports, reason, now,
                                                    now))

    async def _order_step(self, ctx: ActorContext, instruction_id: InstructionId, step: Step,
                          freed: Decimal | None, flatten: bool = False) -> None:
        kind, side, reduce_only = ORDER_STEPS[step.action]
        quantity = _amount(step, freed, "amount", "amount_eth").quantize(QTY, rounding=ROUND_DOWN)
        now = ctx.clock.now_ns()
        order = SubmitOrder(client_order_id(instruction_id, step.step), instruction_id,
                            InstrumentId(f"{step.venue}:{kind}:{step.params.get('asset', 'ETH')}USDT"), side, quantity,
                            reduce_only, step.action,
                            now, now)
        reason = await self._submit(ctx, order, flatten)
        if reason is not None:
            raise NonRetryableVenueError(reason)

    async def _chain_step(self, instruction_id: InstructionId, step: Step, freed: Decimal | None) -> Decimal | None:
        """Carry out an on-chain or transfer step; return the ETH freed for the steps after it."""
        handler = CHAIN_STEPS.get(step.action)
        if self._chain is None or handler is None:
            raise NonRetryableVenueError(f"no venue can carry out {step.action}")
        produced = await handler(self._chain, step, freed, f"{instruction_id}-{step.step}")
        return produced if produced is not None else freed


def _amount(step: Step, freed: Decimal | None, *keys: str) -> Decimal:
    for key in keys:
        if key in step.params:
            value = Decimal(str(step.params[key]))
            return min(value, freed) if freed is not None else value
    raise NonRetryableVenueError(f"{step.action} has none of the parameters {keys}")


def _d(step: Step, key: str) -> Decimal:
    return Decimal(str(step.params[key]))


ChainStep = Callable[[ChainVenue, Step, Decimal | None, str], Awaitable[Decimal | None]]


async def _transfer_usdt(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.transfer_usdt_to_cex(s.venue, _amount(s, freed, "amount_usd"), ref)


async def _withdraw_usdt(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.withdraw_usdt_from_cex(s.venue, _amount(s, freed, "amount_usd"), ref)


async def _transfer_eth(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.transfer_eth_to_cex(s.venue, _amount(s, freed, "amount_eth"), ref)


async def _withdraw_to_wallet(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.withdraw_eth_from_cex(s.venue, _amount(s, freed, "amount_eth"), ref)


async def _stake(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.stake(_amount(s, freed, "amount_eth"), ref)


async def _leverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.atomic_leverage_entry(_d(s, "equity_eth"), _d(s, "supply_eth"), _d(s, "borrow_eth"), ref)


async def _sequential_leverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    cap = str(s.params.get("max_iterations", ""))
    await c.sequential_leverage_entry(_d(s, "equity_eth"), _d(s, "target_ltv"), _d(s, "min_borrow_eth"),
                                      int(cap) if cap else None, ref)


async def _deleverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> Decimal:
    return await c.atomic_deleverage(_d(s, "repay_eth"), _d(s, "withdraw_eth"), ref)


async def _sequential_deleverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> Decimal:
    # The slow unwind redeems the LST at the protocol; otherwise each round sells it on a DEX.
    return await c.sequential_deleverage(_d(s, "repay_eth"), _d(s, "withdraw_eth"), ref,
                                         redeem=s.params.get("unwind_mode") == "slow")


async def _reduce_debt(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.atomic_reduce_debt(_d(s, "amount_eth"), ref)


async def _inside_flash(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    return None  # carried out inside the FLASH_BORROW step's transaction


async def _supply(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.supply(str(s.params["asset"]), _d(s, "amount"), ref)


async def _withdraw(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.withdraw(str(s.params["asset"]), _d(s, "amount"), ref)


async def _exit_lst(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> Decimal:
    lst = _d(s, "amount") if "amount" in s.params else _d(s, "amount_eth") / c.oracle_rate()
    exit_ = c.swap_lst_to_eth if s.action == "SWAP_LST_TO_ETH" else c.redeem_lst
    return await exit_(lst, ref)


async def _sell_eth(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.swap_eth_to_usdt(_amount(s, freed, "amount_eth"), ref)


CHAIN_STEPS: dict[str, ChainStep] = {
    "TRANSFER_USDT_TO_CEX": _transfer_usdt, "TRANSFER_ETH_TO_CEX": _transfer_eth,
    "WITHDRAW_USDT_TO_WALLET": _withdraw_usdt,
    "WITHDRAW_TO_WALLET": _withdraw_to_wallet, "STAKE": _stake, "ATOMIC_LEVERAGE_ENTRY": _leverage,
    "ATOMIC_DELEVERAGE_AAVE": _deleverage, "SEQUENTIAL_DELEVERAGE_AAVE": _sequential_deleverage,
    "SEQUENTIAL_LEVERAGE_ENTRY": _sequential_leverage,
    "FLASH_BORROW": _reduce_debt, **dict.fromkeys(ATOMIC_BUNDLE_TAIL, _inside_flash),
    "SUPPLY": _supply, "WITHDRAW": _withdraw, "SWAP_LST_TO_ETH": _exit_lst, "REDEEM_LST": _exit_lst,
    "SWAP_ETH_TO_USDT": _sell_eth,
}
