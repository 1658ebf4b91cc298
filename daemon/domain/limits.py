"""Seed 004's execution limits: maximum position size, gas price cap, slippage cap per order (the timeout per
instruction is the execution actor's, it is about time). Pure: the execution actor asks before it acts.

One rule decides where they apply: they bound what the book pays, and how large it grows, when it takes on or
adjusts exposure. None of them stands between the book and less risk, so an instruction that reduces exposure
(a deleverage, a margin top-up, an unwind, the drawdown breaker's own) is exempt: waiting an hour for cheaper gas
while the health factor falls, or refusing a flatten for its slippage, costs more than either saves.

* Position size: one leg on one venue — a perp, a spot holding, the AAVE long net of its debt (the exposure;
  the gross collateral is leverage, which LTV and health factor bound), free LST — in USD. An instruction
  that would take a leg past the limit is **refused whole**, before its first step, never clipped: its legs are
  sized together (the hedge matches the long, a flash loan balances to the wei), so clipping one leg unhedges the
  book and clipping all of them is re-sizing, which is the strategy's to do.
* Gas price: an instruction with an on-chain transaction is refused before its first step while gas is above
  the cap (or not yet known), so nothing is half done; the strategy decides again next cycle, which is the retry.
  Once an instruction has started it finishes: gas rising mid-way is cheaper than a half-built position.
* Slippage: every order goes out with a limit price `cap` away from the venue's own price when it is sent (the
  perp's mark, the spot price) — a marketable limit, fill-or-kill: the venue refuses a fill beyond it. A
  partial fill of one leg would unhedge the book, so the order is refused whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.messages import Side
from daemon.domain.strategy import Executor, Instruction, ModeSpec, Step, StrategyView

ZERO = Decimal(0)
ONE = Decimal(1)
BPS = Decimal("0.0001")

# Wallet-side steps that send no wallet transaction: an exchange withdrawal is the exchange's to pay.
GAS_FREE_STEPS = frozenset({"WITHDRAW_TO_WALLET", "WITHDRAW_USDT_TO_WALLET"})
AAVE_LEG = "aave_v3"
LST_LEG = "wallet:lst"


@dataclass(frozen=True, slots=True)
class ExecutionLimits:
    max_position_usd: Decimal = Decimal(1_000_000)  # seed 004's max_position_size_usd
    max_gas_price_gwei: Decimal = Decimal(100)  # seed 004's max_gas_price_gwei
    max_slippage_bps: Decimal = Decimal(50)  # seed 004's 0.5 %, Instadapp's max_slippage_bps
    instruction_timeout_s: float = 300.0  # seed 004's execution_timeout_seconds


def sends_transaction(step: Step) -> bool:
    """Whether the step is a wallet transaction, paying gas (orders and exchange withdrawals are not)."""
    return step.executor is not Executor.CEX and step.action not in GAS_FREE_STEPS


def gas_refusal(instruction: Instruction, gas_gwei: Decimal | None, limits: ExecutionLimits) -> str | None:
    """Why `instruction` may not start at this gas price, or None."""
    if instruction.reduces_exposure or not any(sends_transaction(s) for s in instruction.steps):
        return None
    if gas_gwei is None:
        return f"no gas price yet: {instruction.type} waits for the next cycle"
    if gas_gwei > limits.max_gas_price_gwei:
        return (f"gas price {gas_gwei} gwei is above risk.max_gas_price_gwei {limits.max_gas_price_gwei}: "
                f"{instruction.type} waits for the next cycle")
    return None


def position_legs_usd(spec: ModeSpec, view: StrategyView) -> dict[str, Decimal]:
    """Each leg the book holds, in USD (see the module's docstring for what a leg is)."""
    price = view.price_usd
    legs: dict[str, Decimal] = {}
    for venue, v in view.venues.items():
        legs[f"{venue}:perp"] = abs(v.perp_size) * v.mark
        legs[f"{venue}:spot"] = abs(v.spot) * price
    lending_usd = spec.name == "pure_lending" and spec.share_class == "USDT"  # collateral counted in USD
    legs[AAVE_LEG] = (view.aave_collateral - view.aave_debt) * (ONE if lending_usd else price)
    legs[LST_LEG] = view.wallet_lst * view.lst_rate * price
    return legs


def _amount(step: Step, *keys: str) -> Decimal:
    for key in keys:
        if key in step.params:
            return Decimal(str(step.params[key]))
    return ZERO


def leg_change_usd(step: Step, price: Decimal) -> tuple[str, Decimal] | None:
    """The leg `step` moves and by how much (USD, + grows); None for a step that moves no leg (a transfer)."""
    action = step.action
    if action in ("OPEN_PERP_SHORT", "INCREASE_PERP_SHORT"):
        return f"{step.venue}:perp", _amount(step, "amount", "amount_eth") * price
    if action in ("REDUCE_PERP_SHORT", "REDUCE_PERP_LONG"):
        return f"{step.venue}:perp", -_amount(step, "amount", "amount_eth") * price
    if action == "BUY_SPOT":
        return f"{step.venue}:spot", _amount(step, "amount", "amount_eth") * price
    if action in ("SELL_SPOT", "SELL_ETH_SPOT", "WITHDRAW_TO_WALLET"):
        return f"{step.venue}:spot", -_amount(step, "amount", "amount_eth") * price
    if action in ("ATOMIC_LEVERAGE_ENTRY", "SEQUENTIAL_LEVERAGE_ENTRY"):
        return AAVE_LEG, _amount(step, "equity_eth") * price  # re-levering (equity 0) leaves the net unchanged
    if action == "SUPPLY":
        return AAVE_LEG, _amount(step, "amount") * (ONE if step.params.get("asset") == "USDT" else price)
    if action == "STAKE":
        return LST_LEG, _amount(step, "amount_eth") * price
    return None


def position_refusal(instruction: Instruction, legs: Mapping[str, Decimal], price: Decimal,
                     limits: ExecutionLimits) -> str | None:
    """Why `instruction` would take a leg past the position limit (naming the step and the leg), or None.
    Legs are followed step by step (a spot buy withdrawn to the wallet frees the venue's leg again); a leg the
    instruction only shrinks, or does not touch, is never the reason, whatever its size."""
    if instruction.reduces_exposure:
        return None
    projected = dict(legs)
    for step in instruction.steps:
        change = leg_change_usd(step, price)
        if change is None:
            continue
        leg, usd = change
        projected[leg] = projected.get(leg, ZERO) + usd
        if usd > 0 and projected[leg] > limits.max_position_usd:
            return (f"step {step.step} {step.action} would take {leg} to {projected[leg]:.0f} USD, above "
                    f"risk.max_position_usd {limits.max_position_usd:.0f}: {instruction.type} refused whole (not "
                    "clipped: its legs are sized together)")
    return None


def limit_price(side: Side, reference: Decimal, limits: ExecutionLimits) -> Decimal:
    """The worst price an order may fill at: `max_slippage_bps` above the reference for a buy, below for a sell."""
    return reference * (ONE + side.sign * limits.max_slippage_bps * BPS)


def slippage_fraction(side: Side, reference: Decimal, fill: Decimal) -> Decimal:
    """How much worse than the reference a fill is, as a fraction (negative: better)."""
    return side.sign * (fill - reference) / reference
