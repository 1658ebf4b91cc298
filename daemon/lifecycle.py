"""What an actor is, and the context the supervisor gives it.

An actor is anything with a `name` and an `async run(ctx)` that calls `ctx.started()` once it is ready and
`ctx.beat()` while it is alive. Most actors are an inbox and a handler; `serve` is that loop.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import structlog

from daemon.bus import ChannelClosed, ConflatingChannel, LosslessChannel, WouldBlock
from daemon.clock import Clock
from daemon.trading import TradingStateCell

T = TypeVar("T")

# Handler latency buckets, seconds: from 5 µs (a simple handler) to 5 s (a venue round-trip gone wrong).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)

# A message whose handler fails is retried once after the restart, then dead-lettered, so one poison
# message cannot exhaust the restart budget while every message queued behind it waits.
MAX_DELIVERY_ATTEMPTS = 2


class ActorState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class ActorRecord:
    """Everything the supervisor keeps about an actor across its restarts (it outlives each run)."""

    name: str
    state: ActorState = ActorState.STARTING
    handled: int = 0
    failures: int = 0
    restarts: int = 0
    dead_letters: int = 0
    last_beat_mono: float = 0.0
    last_error: str = ""
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    # inbox → (message, attempts): taken off that inbox, not handled — its handler raised, or was cancelled (a
    # sibling loop of the actor failed mid-message) — and offered again after the restart. One per inbox: an actor
    # with two loops can be mid-message on both.
    redelivery: dict[str, tuple[Any, int]] = field(default_factory=dict)
    waiting: int = 0  # receive loops parked on an empty inbox
    busy: int = 0  # handlers running

    def observe(self, seconds: float) -> None:
        self.handled += 1
        self.latency_sum_s += seconds
        self.latency_counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1

    def heartbeat_age_s(self, now_mono: float) -> float:
        # An actor parked on its inbox with no handler running is alive by construction: it will run the
        # moment a message comes. (Beating on a timer while parked would cost a timeout per wait.)
        if self.waiting and not self.busy:
            return 0.0
        return now_mono - self.last_beat_mono if self.last_beat_mono else float("inf")


class ActorContext:
    """Handed to `Actor.run`; a new one for every (re)start, bound to the actor's lasting record."""

    def __init__(
        self,
        record: ActorRecord,
        clock: Clock,
        trading: TradingStateCell,
        heartbeat_interval_s: float,
        on_started: Callable[[], None],
    ) -> None:
        self.record = record
        self.name = record.name
        self.clock = clock
        self.trading = trading
        self.heartbeat_interval_s = heartbeat_interval_s
        self.log = structlog.get_logger().bind(actor=record.name)
        self._on_started = on_started
        self._started = False

    def started(self) -> None:
        """Tell the supervisor this actor is ready; idempotent."""
        if not self._started:
            self._started = True
            self.record.state = ActorState.RUNNING
            self.beat()
            self._on_started()

    @property
    def is_started(self) -> bool:
        return self._started

    def beat(self) -> None:
        self.record.last_beat_mono = time.monotonic()


class Actor(Protocol):
    name: str

    async def run(self, ctx: ActorContext) -> None: ...


Inbox = LosslessChannel[T] | ConflatingChannel[T]


async def serve(ctx: ActorContext, inbox: Inbox[T], handle: Callable[[T], Awaitable[None]], *,
                redeliver_if_cancelled: bool = False) -> None:
    """The receive loop of an inbox actor: take a message, handle it, time it; beat while idle.

    A message whose handler raised is kept on the actor's record and offered again after the restart (it was already
    taken off the inbox); after `MAX_DELIVERY_ATTEMPTS` it is dead-lettered and logged. With `redeliver_if_cancelled`,
    so is one whose handler was cancelled (the actor's other loop failed mid-message): only for a handler that is
    idempotent — the positions actor's reports, booked once by key — since a cancelled handler may have acted partway
    (an instruction half-executed must not run again from its first step).
    """
    record = ctx.record
    if inbox.name in record.redelivery:
        message, attempts = record.redelivery.pop(inbox.name)
        if attempts >= MAX_DELIVERY_ATTEMPTS:
            record.dead_letters += 1
            ctx.log.error("message_dead_lettered", message_type=type(message).__name__, attempts=attempts)
        else:
            ctx.started()
            await _handle_one(ctx, inbox.name, handle, message, attempts, redeliver_if_cancelled)
    ctx.started()
    receive_nowait = inbox.receive_nowait
    while True:
        ctx.beat()
        try:
            item = receive_nowait()
        except WouldBlock:
            record.waiting += 1
            try:
                item = await inbox.receive()
            except ChannelClosed:
                return
            finally:
                record.waiting -= 1
            ctx.beat()
        except ChannelClosed:
            return
        await _handle_one(ctx, inbox.name, handle, item, 0, redeliver_if_cancelled)


async def _handle_one(
    ctx: ActorContext, inbox: str, handle: Callable[[T], Awaitable[None]], message: T, attempts: int,
    redeliver_if_cancelled: bool = False,
) -> None:
    started = time.perf_counter()
    record = ctx.record
    record.busy += 1
    try:
        await handle(message)
    except Exception:
        record.redelivery[inbox] = (message, attempts + 1)
        raise
    except BaseException:
        if redeliver_if_cancelled:
            # Cancelled mid-message (the actor's other loop failed): taken off the inbox and not handled, through no
            # fault of its own — kept for the next run, its attempts unchanged. (Lost here, a fill waiting in the
            # positions actor would never be booked.)
            record.redelivery[inbox] = (message, attempts)
        raise
    finally:
        record.busy -= 1
    record.observe(time.perf_counter() - started)
