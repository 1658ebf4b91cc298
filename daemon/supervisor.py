"""One task tree for every actor, with restarts on a budget.

Each actor runs in its own supervision loop inside a single anyio task group. When an actor raises, it is
restarted after an exponential backoff with jitter (so actors that failed together do not retry in
lockstep). Its inbox belongs to the composition root, not to the actor, so everything queued while it was
down is delivered after the restart. If an actor fails more than `budget_count` times within
`budget_window_s`, restarting is evidently not helping: trading is halted, the reason is reported, and the
supervisor raises `RestartBudgetExceeded`, which the CLI turns into a non-zero exit so systemd can restart
the whole process (or give up, per its own start limit).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskStatus

from daemon.clock import Clock
from daemon.errors import FatalError, RestartBudgetExceeded
from daemon.failures import describe, leaves
from daemon.lifecycle import Actor, ActorContext, ActorRecord, ActorState
from daemon.trading import TradingStateCell

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    multiplier: float = 2.0
    jitter_fraction: float = 0.2
    budget_count: int = 5
    budget_window_s: float = 60.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before restart number `attempt` (1-based): exponential, capped, then jittered ±fraction."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        jitter = 1.0 + self.jitter_fraction * (2.0 * rng.random() - 1.0)
        return base * jitter


Escalation = Callable[[RestartBudgetExceeded], None]


class Supervisor:
    def __init__(
        self,
        actors: Sequence[Actor],
        *,
        clock: Clock,
        trading: TradingStateCell,
        policy: RestartPolicy,
        heartbeat_interval_s: float,
        heartbeat_timeout_s: float,
        on_escalation: Escalation | None = None,
        rng: random.Random | None = None,
    ) -> None:
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique, were {names}")
        self._actors = list(actors)
        self._clock = clock
        self._trading = trading
        self._policy = policy
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._on_escalation = on_escalation
        self._rng = rng or random.Random()
        self.records: dict[str, ActorRecord] = {a.name: ActorRecord(a.name) for a in actors}
        self._started = 0
        self.all_started = anyio.Event()

    @property
    def policy(self) -> RestartPolicy:
        return self._policy

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every actor until all return or one exhausts its budget; `started` once all are ready."""
        try:
            async with anyio.create_task_group() as tg:
                for actor in self._actors:
                    await tg.start(self._supervise, actor)
                task_status.started()
        except* (RestartBudgetExceeded, FatalError) as group:
            # Surface the escalation itself, not a task-group wrapper, so callers can map it to an exit code.
            raise group.exceptions[0] from None

    def heartbeats_fresh(self) -> bool:
        """True while every live actor has beaten within the timeout (the condition for WATCHDOG=1)."""
        now = time.monotonic()
        return all(
            r.heartbeat_age_s(now) <= self._heartbeat_timeout_s
            for r in self.records.values()
            if r.state is not ActorState.STOPPED
        )

    def stale_actors(self) -> list[str]:
        now = time.monotonic()
        return [
            r.name for r in self.records.values()
            if r.state is not ActorState.STOPPED and r.heartbeat_age_s(now) > self._heartbeat_timeout_s
        ]

    async def _supervise(self, actor: Actor, *, task_status: TaskStatus[None]) -> None:
        record = self.records[actor.name]
        failures: deque[float] = deque()
        reported_started = False

        def on_started() -> None:
            nonlocal reported_started
            if not reported_started:
                reported_started = True
                self._started += 1
                task_status.started()
                if self._started == len(self._actors):
                    self.all_started.set()

        while True:
            ctx = ActorContext(record, self._clock, self._trading, self._heartbeat_interval_s, on_started)
            try:
                await actor.run(ctx)
            except Exception as exc:  # an actor failure is data for the supervisor, never fatal by itself
                fatal = _fatal(exc)
                if fatal is not None:
                    # Restarting cannot help (bad data, a venue that refuses us): halt, and end the run with it.
                    record.state = ActorState.FAILED
                    record.last_error = describe(fatal)
                    self._trading.halt(str(fatal), source="supervisor")
                    log.critical("actor_failed_fatally", actor=actor.name, error=record.last_error)
                    raise fatal from None
                self._after_failure(actor.name, record, failures, exc)
                delay = self._policy.backoff_s(len(failures), self._rng)
                record.state = ActorState.BACKING_OFF
                log.warning(
                    "actor_restarting", actor=actor.name, error=record.last_error,
                    failures_in_window=len(failures), backoff_s=round(delay, 4),
                )
                await anyio.sleep(delay)
                record.restarts += 1
                continue
            record.state = ActorState.STOPPED
            log.info("actor_stopped", actor=actor.name)
            on_started()  # an actor that finished without announcing readiness must not block start-up
            return

    def _after_failure(
        self, name: str, record: ActorRecord, failures: deque[float], exc: Exception
    ) -> None:
        now = time.monotonic()
        record.failures += 1
        record.last_error = describe(exc)
        failures.append(now)
        while failures and now - failures[0] > self._policy.budget_window_s:
            failures.popleft()
        if len(failures) > self._policy.budget_count:
            record.state = ActorState.FAILED
            error = RestartBudgetExceeded(name, len(failures), self._policy.budget_window_s, record.last_error)
            self._trading.halt(str(error), source="supervisor")
            log.critical("restart_budget_exceeded", actor=name, failures=len(failures),
                         window_s=self._policy.budget_window_s, error=record.last_error)
            if self._on_escalation is not None:
                self._on_escalation(error)
            raise error from exc


def _fatal(exc: BaseException) -> FatalError | None:
    """The FatalError in `exc`, also when an actor's own task group wrapped it in an exception group."""
    return next((e for e in leaves(exc) if isinstance(e, FatalError)), None)
