"""The trading state (ACTIVE / REDUCING / HALTED), shared by every actor that could place an order.

It is a single cell rather than a message because a halt must take effect at once: the signal handler, the
supervisor's escalation and the risk actor all write it synchronously, and the execution actor reads it
immediately before every order it sends.

A reason is free text (an operator's words, an error's message) that reaches the log, the API, the control
socket, the journal and the persisted halt: it is redacted of every registered secret once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.domain.messages import TradingState
from daemon.redaction import redact_text

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
        reason = redact_text(reason)
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
