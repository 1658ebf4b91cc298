"""The trading state (ACTIVE / REDUCING / HALTED), shared by every actor that could place an order.

It is a single cell rather than a message because a halt must take effect at once: the signal handler, the
supervisor's escalation and the risk actor all write it synchronously, and the execution actor reads it
immediately before every order it sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.domain.messages import TradingState

Listener = Callable[["StateTransition"], None]


@dataclass(frozen=True, slots=True)
class StateTransition:
    previous: TradingState
    current: TradingState
    reason: str
    source: str


class TradingStateCell:
    def __init__(self, initial: TradingState = TradingState.ACTIVE) -> None:
        self._state = initial
        self._reason = "start-up"
        self._listeners: list[Listener] = []
        self.transitions = 0

    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set(self, state: TradingState, reason: str, source: str) -> bool:
        """Move to `state`; returns whether anything changed. Listeners run synchronously."""
        if state is self._state:
            return False
        transition = StateTransition(self._state, state, reason, source)
        self._state = state
        self._reason = reason
        self.transitions += 1
        for listener in self._listeners:
            listener(transition)
        return True

    def halt(self, reason: str, source: str) -> bool:
        return self.set(TradingState.HALTED, reason, source)

    def allows_new_exposure(self) -> bool:
        return self._state is TradingState.ACTIVE

    def allows_orders(self) -> bool:
        return self._state is not TradingState.HALTED
