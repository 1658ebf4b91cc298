"""Execution: carries out approved orders and instructions through the venue ports.

An instruction's steps run one at a time, in order (the tight loop of spec 06): each step's venue reports
are on the report channel before the next step starts. The trading state is checked before every step, so
a halt stops an instruction between steps; an instruction that reduces exposure may finish in REDUCING.
A step that fails stops the instruction and is reported: it is never retried blindly, because a network
error is not proof that nothing happened (the venue is asked, by client order id, when adapters are live).
Later steps never move more than the earlier steps produced (a swap fee makes a deleverage free a little
less than planned).

Seed 004's limits (`daemon.domain.limits`, the `risk:` settings, read afresh for each instruction so a SIGHUP
applies): before its first step, an instruction that adds exposure is refused whole if it would take a leg past
`max_position_usd`, and deferred to the next cycle (refused with no step done: the strategy decides again) while
the gas price is above `max_gas_price_gwei`; each of its orders goes out with a limit `max_slippage_bps` from
the venue's price, which the venue enforces (fill-or-kill). An instruction that reduces exposure is exempt from
all three. Every instruction has `instruction_timeout_s` to finish: past it, the step in flight is abandoned
(never resent: its client order id, or chain reference, is journaled and the venue is the one to ask), the
instruction is reported failed with the steps done and the step it was in, and trading halts — an outcome nobody
knows is a position nobody designed, and a human (or `basisd reconcile`) must look before anything else goes out.

The journal gets each instruction's plan before its first step and its end (completed or not, steps done) before
`InstructionFinished` goes out: a restart abandons only an instruction that really did not finish.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal

import anyio

from daemon.bus import LosslessChannel
from daemon.domain.booking import split_instrument
from daemon.domain.ids import InstructionId, InstrumentId, client_order_id
from daemon.domain.limits import ExecutionLimits, gas_refusal, limit_price, position_refusal
from daemon.domain.market import MarketBoard
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
from daemon.domain.strategy import Instruction, Step
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

# The books' legs in USD and the asset's price (`daemon.domain.limits.position_legs_usd`), None before the first
# valuation: what the position limit projects an instruction's steps onto.
Positions = Callable[[], tuple[Mapping[str, Decimal], Decimal] | None]


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
        limits: Callable[[], ExecutionLimits] | None = None,
        market: MarketBoard | None = None,
        positions: Positions | None = None,
        on_finished: Callable[[InstructionFinished], None] | None = None,
        lots: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.inbox = inbox
        # venue -> the coarsest lot of its markets: an order step capped by what an earlier step produced (a
        # deleverage frees a little less ETH than planned) is rounded down to it, so the venue takes it and the spot
        # sale and the perp reduction of one top-up stay equal.
        self._lots = dict(lots or {})
        # Seed 004's limits in force now (None: none applied); the market board gives the gas price and each order's
        # reference price (the venue's own mark or spot), `positions` the books' legs for the position limit.
        self._limits = limits
        self._market = market
        self._positions = positions
        self._on_finished = on_finished  # the risk gate follows what is in flight (actors.risk)
        self.refused = 0  # instructions refused or deferred by a limit
        self.timed_out = 0
        # The instructions this run has begun (kept across the actor's restarts: it is the same object). One whose
        # handler crashed comes back after the restart (`serve` redelivers it); run again, it would repeat steps
        # already done — a second deleverage, a second transfer — so it is reported failed instead.
        self._begun: set[str] = set()
        # The last line before the venue ports: nothing is sent while the start gate is closed (daemon.gate).
        self._gate = gate
        self._venues = venues
        self._events = events
        self._chain = chain
        # Each order's intent before it is sent and the venue's answer; each instruction's start and end.
        self._journal = journal
        self.sent = 0

    async def run(self, ctx: ActorContext) -> None:
        async def handle(command: SubmitOrder | ExecuteInstruction) -> None:
            if isinstance(command, ExecuteInstruction):
                if command.instruction_id in self._begun:
                    await self._interrupted(ctx, command)
                else:
                    await self._execute(ctx, command)
                return
            if not command.reduce_only:
                try:
                    command = self._capped(command)
                except NonRetryableVenueError as exc:
                    await self._reject(ctx, command, str(exc))
                    return
            reason = await self._submit(ctx, command)
            if reason is not None:
                await self._reject(ctx, command, reason)

        await serve(ctx, self.inbox, handle)

    async def _reject(self, ctx: ActorContext, order: SubmitOrder, reason: str) -> None:
        now = ctx.clock.now_ns()
        ctx.log.warning("order_rejected", client_order_id=order.client_order_id, reason=reason)
        await self._events.send(OrderRejected(order.client_order_id, order.instrument_id, reason, now, now))

    def _capped(self, order: SubmitOrder) -> SubmitOrder:
        """`order` with its slippage limit: `max_slippage_bps` from the venue's own price now."""
        if self._limits is None or self._market is None:
            return order
        venue, kind, symbol = split_instrument(order.instrument_id)
        asset = symbol[:-4]
        reference = self._market.marks.get((venue, asset)) if kind == "Perp" else self._market.prices.get(asset)
        if reference is None:
            raise NonRetryableVenueError(f"no reference price for {order.instrument_id}: the slippage cap cannot be "
                                         "set")
        return replace(order, limit_price=limit_price(order.side, reference, self._limits()))

    def _preflight(self, instruction: Instruction) -> str | None:
        """Why the instruction may not start (a limit it would break), or None."""
        if self._limits is None:
            return None
        limits = self._limits()
        if self._market is not None:
            refusal = gas_refusal(instruction, self._market.gas_gwei, limits)
            if refusal is not None:
                return refusal
        books = self._positions() if self._positions is not None else None
        if books is not None:
            return position_refusal(instruction, books[0], books[1], limits)
        return None

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
        self._begun.add(command.instruction_id)
        done = reports = 0
        freed: Decimal | None = None  # what an earlier step actually produced, caps what later steps move
        reason = ""
        flatten = command.operator_flatten and instruction.reduces_exposure
        refusal = None if instruction.reduces_exposure else self._preflight(instruction)
        if refusal is not None:
            self.refused += 1
            ctx.log.warning("instruction_refused_by_limit", instruction_id=command.instruction_id,
                            type=instruction.type, reason=refusal)
            await self._finish(InstructionFinished(command.instruction_id, False, 0, 0, refusal,
                                                   ctx.clock.now_ns(), ctx.clock.now_ns()))
            return
        limits = self._limits() if self._limits is not None else None
        timeout_s = limits.instruction_timeout_s if limits is not None else None
        journal = self._journal
        if journal is not None:
            # Its plan, before its first step: a restart tells the instruction a kill cut short (started, never
            # finished) from one that had finished, and names the steps it had left (daemon.recovery).
            journal.record_instruction(ctx.clock.now_ns(), command.instruction_id, "started", {
                "type": instruction.type, "steps": [{"step": s.step, "action": s.action, "venue": s.venue,
                                                     "order": s.action in ORDER_STEPS} for s in instruction.steps]})
        in_flight: Step | None = None
        with anyio.move_on_after(timeout_s) as deadline:
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
                in_flight = step
                try:
                    if step.action in ORDER_STEPS:
                        if await self._order_step(ctx, command.instruction_id, step, freed, flatten,
                                                  capped=not instruction.reduces_exposure):
                            reports += 1
                    else:
                        freed = await self._chain_step(command.instruction_id, step, freed)
                except VenueError as exc:
                    reason = f"step {step.step} {step.action} failed: {exc}"
                    break
                finally:
                    if self._chain is not None:
                        reports += self._chain.transactions - sent_before
                in_flight = None
                done += 1
        if deadline.cancelled_caught:
            reason = self._timed_out(ctx, command, in_flight, timeout_s)
        await self._ended(ctx, command, done, reports, reason)

    async def _interrupted(self, ctx: ActorContext, command: ExecuteInstruction) -> None:
        """An instruction whose run crashed the actor, offered again after its restart: never run again from its
        first step (what it had done stands, on the venues and in the books); reported failed, journaled as
        finished, so the strategy halts and plans afresh from the books once resumed."""
        await self._ended(ctx, command, 0, 0, "not run again: the execution actor failed during it and was "
                                              "restarted; the steps it had done stand, booked from the venues' reports")

    async def _ended(self, ctx: ActorContext, command: ExecuteInstruction, done: int, reports: int,
                     reason: str) -> None:
        """How the instruction ended: logged, journaled (durable before anyone hears of it), then reported."""
        now = ctx.clock.now_ns()
        steps = len(command.instruction.steps)
        completed = done == steps
        log = ctx.log.info if completed else ctx.log.error
        log("instruction_finished", instruction_id=command.instruction_id, type=command.instruction.type,
            completed=completed, steps_done=done, steps=steps, reason=reason)
        if self._journal is not None:
            self._journal.record_instruction(now, command.instruction_id, "finished", {
                "completed": completed, "steps_done": done, "steps": steps, "reports": reports, "reason": reason})
        await self._finish(InstructionFinished(command.instruction_id, completed, done, reports, reason, now, now))

    async def _finish(self, event: InstructionFinished) -> None:
        if self._on_finished is not None:
            self._on_finished(event)
        await self._events.send(event)

    def _timed_out(self, ctx: ActorContext, command: ExecuteInstruction, step: Step | None,
                   timeout_s: float | None) -> str:
        """Past the instruction's timeout: what was in flight is journaled and named, never resent, and trading
        halts until someone has looked (the venue's answer, if it comes, is booked like any report)."""
        self.timed_out += 1
        if step is None:
            reason = f"timed out after {timeout_s:g} s (risk.instruction_timeout_s) between steps"
        else:
            ref = client_order_id(command.instruction_id, step.step) if step.action in ORDER_STEPS else \
                f"{command.instruction_id}-{step.step}"
            reason = (f"timed out after {timeout_s:g} s (risk.instruction_timeout_s) in step {step.step} "
                      f"{step.action}: its outcome is unknown (ask the venue for {ref}); nothing is resent")
            if self._journal is not None:
                self._journal.record_order(ctx.clock.now_ns(), ref, command.instruction_id, "timeout",
                                           {"step": step.step, "action": step.action, "timeout_s": timeout_s})
        ctx.trading.halt(f"instruction {command.instruction_id} {reason}", source="execution")
        return reason

    async def _order_step(self, ctx: ActorContext, instruction_id: InstructionId, step: Step,
                          freed: Decimal | None, flatten: bool = False, capped: bool = False) -> bool:
        """Send the step's order; False if there was nothing to send (no report will come of it)."""
        kind, side, reduce_only = ORDER_STEPS[step.action]
        quantity = _amount(step, freed, "amount", "amount_eth").quantize(QTY, rounding=ROUND_DOWN)
        lot = self._lots.get(step.venue)
        if freed is not None and lot is not None and quantity % lot:
            quantity = (quantity / lot).to_integral_value(rounding=ROUND_DOWN) * lot
        if quantity <= 0 and freed is not None:
            # Less than one lot to trade (the dust of a top-up's ETH beyond its lots, or nothing freed for it): no
            # order can carry it, and refusing the instruction over it would stop a flatten half-way.
            ctx.log.warning("order_step_skipped", instruction_id=instruction_id, step=step.step, action=step.action,
                            venue=step.venue, planned=str(step.params.get("amount", step.params.get("amount_eth"))),
                            reason="less than one lot of it is left to trade")
            return False
        now = ctx.clock.now_ns()
        order = SubmitOrder(client_order_id(instruction_id, step.step), instruction_id,
                            InstrumentId(f"{step.venue}:{kind}:{step.params.get('asset', 'ETH')}USDT"), side, quantity,
                            reduce_only, step.action,
                            now, now)
        if capped:
            order = self._capped(order)
        reason = await self._submit(ctx, order, flatten)
        if reason is not None:
            raise NonRetryableVenueError(reason)
        return True

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


async def _withdraw_to_wallet(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> Decimal | None:
    # A live venue says what reached the wallet (its fee, a spot fee taken in ETH): the steps after size on it.
    return await c.withdraw_eth_from_cex(s.venue, _amount(s, freed, "amount_eth"), ref)


async def _stake(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    await c.stake(_amount(s, freed, "amount_eth"), ref)


async def _leverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    equity, supply, borrow = _d(s, "equity_eth"), _d(s, "supply_eth"), _d(s, "borrow_eth")
    if freed is not None and 0 < freed < equity:
        # Less ETH arrived than planned (fees): the same leverage on what did, so the flash loan still balances.
        scale = freed / equity
        equity, supply, borrow = freed, supply * scale, borrow * scale
    await c.atomic_leverage_entry(equity, supply, borrow, ref)


async def _sequential_leverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> None:
    cap = str(s.params.get("max_iterations", ""))
    await c.sequential_leverage_entry(_d(s, "equity_eth"), _d(s, "target_ltv"), _d(s, "min_borrow_eth"),
                                      int(cap) if cap else None, ref)


async def _deleverage(c: ChainVenue, s: Step, freed: Decimal | None, ref: str) -> Decimal:
    # A top-up names the ETH that must land (`free_eth`); an exit takes what its slice frees.
    free = _d(s, "free_eth") if "free_eth" in s.params else None
    return await c.atomic_deleverage(_d(s, "repay_eth"), _d(s, "withdraw_eth"), ref, free)


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
