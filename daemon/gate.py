"""The start gate: nothing reaches a venue until the daemon can be stopped and knows what it holds.

A daemon that trades before its operator can reach it (the control socket, the metrics, the API) cannot be
watched or halted while it does; one that trades before its books have been checked against the venues
trades on books that may be wrong. So the gate opens once, after every listener is bound and the start-up
reconciliation has run, and until then:

- the strategy does not decide (a decision made on unchecked books would be stale once they are checked);
- risk refuses any instruction or order that reaches it anyway;
- execution refuses to send anything — the last line, right before the venue port.

Cancelling open orders (the emergency stop) is not trading and is never gated. The gate never closes again:
after start-up, the trading state (ACTIVE, REDUCING, HALTED) is what decides.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import structlog

log = structlog.get_logger()

LISTENERS = "listeners"
RECONCILIATION = "reconciliation"

_WHAT = {
    LISTENERS: "the control socket, metrics and API listeners to be bound",
    RECONCILIATION: "the start-up reconciliation of the books with the venues",
}


class StartGate:
    """Open once every condition it waits for has passed. Build inside the event loop (it holds an Event)."""

    def __init__(self, waiting_for: Iterable[str] = (LISTENERS, RECONCILIATION)) -> None:
        self._waiting = list(dict.fromkeys(waiting_for))
        self._opened = anyio.Event()
        if not self._waiting:
            self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    @property
    def waiting_for(self) -> tuple[str, ...]:
        return tuple(self._waiting)

    @property
    def reason(self) -> str:
        """Why trading waits ('' once open): what `basisd status` and the API show."""
        if self.is_open:
            return ""
        return "start-up: waiting for " + " and ".join(_WHAT.get(w, w) for w in self._waiting)

    def passed(self, condition: str) -> None:
        """`condition` holds now; the gate opens when the last one does."""
        if condition in self._waiting:
            self._waiting.remove(condition)
            log.info("start_gate_passed", condition=condition, waiting_for=self._waiting)
        if not self._waiting and not self._opened.is_set():
            self._opened.set()
            log.info("start_gate_opened")

    async def wait(self) -> None:
        await self._opened.wait()
