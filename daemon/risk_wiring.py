"""How the composition root connects the drawdown breaker and seed 004's limits to the books (`daemon.app`).

Kept apart from `daemon.app` so that the root only names them: the breaker's unwind is the strategy's own recipe
(`decide(Change.WITHDRAWAL | Change.UNWIND, …)`, as `basisd halt --flatten` uses), sized from the positions
actor's latest valued books; the position limit reads the same books as legs in USD.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from actors.risk import Unwind
from daemon.domain.ids import InstructionId
from daemon.domain.ledger import LedgerSnapshot
from daemon.domain.limits import ExecutionLimits, position_legs_usd
from daemon.domain.market import MarketBoard, MissingMarketData
from daemon.domain.messages import ExecuteInstruction, PortfolioSnapshotted, TradingState
from daemon.domain.pnl import nav
from daemon.domain.risk import BreakerAction, DrawdownAction
from daemon.domain.strategy import Change, ModeSpec, decide
from daemon.domain.view import strategy_view
from daemon.settings import RiskSettings


class Books(Protocol):
    """What the positions actor offers: the latest valued snapshot and the market board it valued it with."""

    @property
    def latest(self) -> PortfolioSnapshotted | None: ...

    @property
    def board(self) -> MarketBoard: ...


def _d(value: float) -> Decimal:
    return Decimal(str(value))


def breaker_settings(r: RiskSettings) -> tuple[Decimal, ...]:
    """In `daemon.domain.risk.BREAKER_SETTINGS` order."""
    return tuple(_d(v) for v in (r.drawdown_reduce_fraction, r.drawdown_close_fraction, r.drawdown_halt_fraction,
                                 r.drawdown_reduce_unwind_fraction, r.drawdown_close_unwind_fraction,
                                 r.daily_loss_limit_fraction))


def execution_limits(r: RiskSettings) -> ExecutionLimits:
    return ExecutionLimits(_d(r.max_position_usd), _d(r.max_gas_price_gwei), _d(r.max_slippage_bps),
                           r.instruction_timeout_s)


def _view_inputs(books: Books) -> LedgerSnapshot | None:
    snap = books.latest
    return snap.ledger if snap is not None else None


class BreakerPlanner:
    """The breaker's unwinds: level 1 and 2 a WITHDRAWAL of their fraction of the equity (every leg pro rata),
    level 3 the UNWIND."""

    def __init__(self, books: Callable[[], Books], spec: ModeSpec, venues: Sequence[str]) -> None:
        # `books` is asked when needed: the composition root builds the positions actor after its readers.
        self._books, self._spec, self._venues = books, spec, tuple(venues)

    def __call__(self, action: BreakerAction) -> Unwind:
        books = self._books()
        before = _view_inputs(books)
        if before is None:
            return Unwind(())
        market = books.board.state()
        try:
            view = strategy_view(before, market, self._spec, self._venues, TradingState.REDUCING)
        except MissingMarketData:
            return Unwind(())
        flatten = action.level is DrawdownAction.FLATTEN_AND_HALT or action.unwind_fraction >= 1
        if view.equity <= 0:
            return Unwind(())
        decision = decide(Change.UNWIND, self._spec, view) if flatten else \
            decide(Change.WITHDRAWAL, self._spec, view, view.equity * action.unwind_fraction)
        # Sent as emergency unwinds (`operator_flatten`): carried out in any trading state, HALTED included, as
        # `basisd halt --flatten` is — they only take exposure down (actors.risk).
        commands = [ExecuteInstruction(InstructionId(f"breaker{int(action.level)}-{action.ts_ns}-{n}"), instruction,
                                       action.ts_ns, action.ts_ns, operator_flatten=True)
                    for n, instruction in enumerate(decision.instructions, start=1)]
        currency = self._spec.share_class
        start = nav(before, market, currency)
        return Unwind(commands, lambda after: start - nav(after, market, currency))


class PositionLegs:
    """The books' legs in USD and the asset's price, for the position limit (None before the first valuation)."""

    def __init__(self, books: Callable[[], Books], spec: ModeSpec, venues: Sequence[str]) -> None:
        # `books` is asked when needed: the composition root builds the positions actor after its readers.
        self._books, self._spec, self._venues = books, spec, tuple(venues)

    def __call__(self) -> tuple[Mapping[str, Decimal], Decimal] | None:
        books = self._books()
        ledger = _view_inputs(books)
        if ledger is None:
            return None
        try:
            view = strategy_view(ledger, books.board.state(), self._spec, self._venues)
        except MissingMarketData:
            return None
        return position_legs_usd(self._spec, view), view.price_usd
