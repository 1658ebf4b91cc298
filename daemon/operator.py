"""The emergency stop and what goes with it: halt, resume, status — from SIGUSR1 or the control socket.

With `--flatten` (or `control.flatten_on_halt`), an operator's halt also sends the strategy's unwind as an
operator flatten: execution carries it out although trading is HALTED (it only takes exposure down), while
nothing else — no strategy instruction, no order — goes out until `basisd resume`. One flatten per halt.

A halt takes effect synchronously (the trading cell is written before anything else happens, and execution
reads it before every order), then every open order is cancelled through the venue ports. HALTED is written
to the state directory on the way in and cleared only by `basisd resume`, so a daemon that restarts — by
systemd after a crash, or by hand — comes back halted and says why. Any halt persists, not just an operator's:
a liquidation or a half-executed instruction also needs a human before trading starts again.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from daemon.domain.messages import TradingState
from daemon.ports import ExchangeVenue
from daemon.redaction import redact_text
from daemon.state_store import StateStore
from daemon.trading import StateTransition, TradingStateCell

log = structlog.get_logger()

HALT_KEY = "trading_halt"
PERSISTED = "persisted"  # the source of a halt restored from the state directory at start-up
# How an older daemon wrapped a restored reason, once per restart: "halted before the restart (<since>): <reason>;
# `basisd resume` lifts it", with the source "persisted".
_LEGACY_WRAP = re.compile(r"halted before the restart \((?P<since>[^)]*)\): (?P<reason>.*); `basisd resume` lifts it",
                          re.DOTALL)


Flatten = Callable[[str], Awaitable[str]]  # reason -> what was sent (raises FlattenRefused when nothing can be)


def _record(t: StateTransition) -> dict[str, Any]:
    """What survives a restart: the state, why, who, and since when (wall clock)."""
    return {"state": t.current.value, "reason": redact_text(t.reason), "source": t.source,
            "since": datetime.now(UTC).isoformat(timespec="seconds")}


def original_halt(saved: dict[str, Any]) -> dict[str, Any]:
    """The persisted halt as it was first recorded: a reason an older daemon re-wrapped on every restart is
    unwrapped to the innermost (the original reason and time; its source, which those records lost, is
    "unknown"), and free text is redacted of registered secrets."""
    reason, since, source = str(saved.get("reason", "?")), str(saved.get("since", "?")), str(saved.get("source", "?"))
    while source == PERSISTED and (wrapped := _LEGACY_WRAP.fullmatch(reason)):
        reason, since = wrapped["reason"], wrapped["since"]
        source = PERSISTED if _LEGACY_WRAP.fullmatch(reason) else "unknown"
    return {"state": TradingState.HALTED.value, "reason": redact_text(reason), "source": source, "since": since}


class FlattenRefused(RuntimeError):
    """The flatten could not be sent (no books yet, nothing held, one already sent); the message says which."""


class Operator:
    def __init__(self, trading: TradingStateCell, exchanges: Mapping[str, ExchangeVenue], store: StateStore | None,
                 status: Callable[[], dict[str, Any]], flatten: Flatten | None = None,
                 flatten_on_halt: bool = False, on_resume: Callable[[], None] | None = None,
                 reconcile: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
        self._trading = trading
        self._exchanges = exchanges
        self._store = store
        self._status = status
        self._flatten = flatten
        self._flatten_on_halt = flatten_on_halt
        self._reconcile = reconcile  # `basisd reconcile`: one reconciliation now, its findings
        self._on_resume = on_resume  # re-arms the drawdown breaker: resuming accepts the loss taken so far
        self._flattened = False  # one flatten per halt: a second would be sized from books the first is changing
        self.flattens = 0
        self._sweep_due = anyio.Event()
        self.cancelled_orders = 0
        self.sweeps = 0
        trading.subscribe(self._on_transition)

    def restore(self, warn_if_not_persistent: bool = True) -> None:
        """Come back HALTED if the last run was halted and nobody has resumed since.

        The record on disk is the original halt's (reason, source, time) and stays as it is across restarts:
        the restored state's reason is built from it, never saved back, so it does not grow with each restart.
        A record that cannot be read restores a halt too: a daemon that cannot tell whether it was stopped
        must not trade until someone has looked."""
        if self._store is None:
            if warn_if_not_persistent:
                log.warning("halt_not_persistent",
                            detail="runtime.state_dir is not set: a halt will not survive a restart")
            return
        try:
            saved = self._store.load(HALT_KEY)
        except (OSError, ValueError) as exc:
            log.critical("halt_record_unreadable", error=str(exc))
            self._trading.halt(f"the persisted halt record cannot be read ({exc}); `basisd resume` lifts the halt "
                               "and rewrites it", source="persisted")
            return
        if not saved or saved.get("state") != TradingState.HALTED.value:
            return
        record = original_halt(saved)
        if record != saved:
            self._save(record)  # an older daemon's nested (or unredacted) record, written once in its original form
        self._trading.halt(f"halted since {record['since']} by {record['source']}: {record['reason']}; "
                           "`basisd resume` lifts it", source=PERSISTED)

    def halt(self, reason: str, source: str = "operator") -> bool:
        return self._trading.halt(reason, source=source)

    async def halt_and_maybe_flatten(self, reason: str, flatten: bool | None = None) -> str:
        """The operator's halt (socket or SIGUSR1): HALTED at once, then, if asked for or configured, the
        strategy's unwind sent as an operator flatten. Returns what happened to the flatten ("" if none)."""
        self.halt(reason)
        if not (self._flatten_on_halt if flatten is None else flatten):
            return ""
        if self._flatten is None:
            return "flatten is not available in this runtime"
        if self._flattened:
            return "a flatten was already sent during this halt: resume and halt again to flatten what is left"
        try:
            sent = await self._flatten(reason)
        except FlattenRefused as exc:
            log.error("flatten_refused", reason=str(exc))
            return f"flatten refused: {exc}"
        self._flattened = True
        self.flattens += 1
        log.warning("flatten_sent", detail=sent)
        return sent

    def resume(self, reason: str) -> bool:
        """Lift a halt (or a REDUCING state): the operator has looked. The drawdown breaker re-arms from the NAV
        of the next snapshot; margin and data staleness are judged afresh, so risk may reduce again at once."""
        if self._on_resume is not None:
            self._on_resume()
        return self._trading.set(TradingState.ACTIVE, reason, source="operator")

    def _on_transition(self, t: StateTransition) -> None:
        if t.current is TradingState.HALTED:
            if t.source != PERSISTED:  # a restored halt is already on disk, as it was first recorded
                self._save(_record(t))
            self._sweep_due.set()
        elif t.previous is TradingState.HALTED:
            self._flattened = False
            self._save(_record(t))

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
        if command == "reconcile":
            if self._reconcile is None:
                return {"ok": False, "error": "the reconciler is disabled (reconcile.enabled: false)"}
            return {"trading": self._trading.state.value, "reason": self._trading.reason, **await self._reconcile()}
        reason = args.get("reason") or "no reason given"
        flattened = ""
        if command == "halt":
            flattened = await self.halt_and_maybe_flatten(f"operator: {reason}", args.get("flatten"))
        elif command == "resume":
            if self._trading.state is TradingState.ACTIVE:
                return {"ok": True, "trading": self._trading.state.value, "changed": False}
            self.resume(f"operator: {reason}")
        return {"ok": True, "trading": self._trading.state.value, "reason": self._trading.reason,
                **({"flatten": flattened} if flattened else {}),
                **({"status": self._status()} if command == "status" else {})}
