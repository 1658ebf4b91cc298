"""The emergency stop and what goes with it: halt, resume, status — from SIGUSR1 or the control socket.

A halt takes effect synchronously (the trading cell is written before anything else happens, and execution
reads it before every order), then every open order is cancelled through the venue ports. HALTED is written
to the state directory on the way in and cleared only by `basisd resume`, so a daemon that restarts — by
systemd after a crash, or by hand — comes back halted and says why. Any halt persists, not just an operator's:
a liquidation or a half-executed instruction also needs a human before trading starts again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from daemon.clock import Clock
from daemon.domain.messages import TradingState
from daemon.ports import ExchangeVenue
from daemon.state_store import StateStore
from daemon.trading import StateTransition, TradingStateCell

log = structlog.get_logger()

HALT_KEY = "trading_halt"


class Operator:
    def __init__(self, trading: TradingStateCell, exchanges: Mapping[str, ExchangeVenue], store: StateStore | None,
                 clock: Clock, status: Callable[[], dict[str, Any]]) -> None:
        self._trading = trading
        self._exchanges = exchanges
        self._store = store
        self._clock = clock
        self._status = status
        self._sweep_due = anyio.Event()
        self.cancelled_orders = 0
        self.sweeps = 0
        trading.subscribe(self._on_transition)

    def restore(self) -> None:
        """Come back HALTED if the last run was halted and nobody has resumed since."""
        if self._store is None:
            log.warning("halt_not_persistent", detail="runtime.state_dir is not set: a halt will not survive a restart")
            return
        saved = self._store.load(HALT_KEY)
        if saved and saved.get("state") == TradingState.HALTED.value:
            self._trading.halt(f"halted before the restart ({saved.get('since', '?')}): {saved.get('reason', '?')}; "
                               "`basisd resume` lifts it", source="persisted")

    def halt(self, reason: str, source: str = "operator") -> bool:
        return self._trading.halt(reason, source=source)

    def resume(self, reason: str) -> bool:
        """Lift a halt (or a REDUCING state): the operator has looked. Risk may reduce again at once."""
        return self._trading.set(TradingState.ACTIVE, reason, source="operator")

    def _on_transition(self, t: StateTransition) -> None:
        if t.current is TradingState.HALTED:
            self._save({"state": t.current.value, "reason": t.reason, "source": t.source,
                        "since": datetime.now(UTC).isoformat(timespec="seconds")})
            self._sweep_due.set()
        elif t.previous is TradingState.HALTED:
            self._save({"state": t.current.value, "reason": t.reason, "source": t.source,
                        "since": datetime.now(UTC).isoformat(timespec="seconds")})

    def _save(self, record: dict[str, Any]) -> None:
        if self._store is None:
            return
        try:
            self._store.save(HALT_KEY, record)
        except OSError as exc:
            # The halt itself stands; only its survival across a restart is lost, and the operator must know.
            log.critical("halt_not_persisted", error=str(exc))

    async def cancel_on_halt(self) -> None:
        """Runs for the daemon's life: after every halt, cancel every open order on every exchange."""
        while True:
            await self._sweep_due.wait()
            self._sweep_due = anyio.Event()
            await self.cancel_open_orders()

    async def cancel_open_orders(self) -> int:
        self.sweeps += 1
        total = 0
        for name, exchange in self._exchanges.items():
            try:
                cancelled = await exchange.cancel_all_orders()
            except Exception as exc:
                log.error("cancel_all_failed", venue=name, error=str(exc), error_type=type(exc).__name__)
                continue
            total += cancelled
            log.warning("open_orders_cancelled", venue=name, count=cancelled)
        self.cancelled_orders += total
        return total

    async def handle(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request (already parsed and permitted)."""
        reason = args.get("reason") or "no reason given"
        if command == "halt":
            self.halt(f"operator: {reason}")
        elif command == "resume":
            if self._trading.state is TradingState.ACTIVE:
                return {"ok": True, "trading": self._trading.state.value, "changed": False}
            self.resume(f"operator: {reason}")
        return {"ok": True, "trading": self._trading.state.value, "reason": self._trading.reason,
                **({"status": self._status()} if command == "status" else {})}
