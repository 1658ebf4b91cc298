"""Bounded channels between actors, each with a written delivery policy.

Two policies, chosen per edge in `daemon.app`:

* `LosslessChannel` — fills, order events and commands. Nothing is ever dropped: when the buffer is full
  the producer waits (backpressure), and the wait is counted.
* `ConflatingChannel` — market data and snapshots. The producer never waits: a newer value for a key that
  is still queued replaces the old one in place (a conflation). If the number of distinct pending keys
  would exceed the capacity, the oldest pending key is dropped and counted.

Channels outlive the actors that read them: the supervisor restarts a failed actor with the same inbox, so
whatever was queued while it was down is delivered afterwards.

Speed: an `await` that yields to the event loop costs far more than moving a message, so both ends take the
non-blocking path whenever they can and only suspend when they must. A task that never has to wait would
starve its peers, so every `CHECKPOINT_EVERY` operations each end yields once on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from anyio.lowlevel import checkpoint

T = TypeVar("T")

CHECKPOINT_EVERY = 256


class Policy(StrEnum):
    LOSSLESS = "lossless"
    CONFLATING = "conflating"


class ChannelClosed(Exception):
    """Raised by `send` on a closed channel, and by `receive` once a closed channel is drained."""


class WouldBlock(Exception):
    """Raised by `send_nowait` on a full lossless channel and by `receive_nowait` on an empty channel."""


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A point-in-time record of one channel, fed into the metrics."""

    name: str
    policy: Policy
    capacity: int
    depth: int
    high_water: int
    sent: int
    received: int
    send_waits: int  # times a producer had to wait for room (lossless only)
    dropped: int  # messages discarded (conflating only, on key overflow)
    conflated: int  # messages replaced by a newer value for the same key (conflating only)


Waiters = deque["asyncio.Future[None]"]


def _wake_one(waiters: Waiters) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


async def _wait(waiters: Waiters) -> None:
    """Park the calling task until `_wake_one` picks it.

    A bare future per waiter, as `asyncio.Queue` does it: the daemon runs on anyio's asyncio backend, and
    this keeps a wake-up to one future and one task step, without the coroutine layers of an Event, on the
    latency-critical path of an idle pipeline. A waiter cancelled (by an anyio cancel scope) after being
    picked passes its wake-up on, so no other waiter is left sleeping.
    """
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except BaseException:
        waiter.cancel()
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiter.cancelled():
            _wake_one(waiters)
        raise


class LosslessChannel(Generic[T]):
    """A bounded FIFO: the producer waits when it is full, nothing is ever dropped."""

    __slots__ = (
        "_buffer", "_capacity", "_closed", "_getters", "_high_water", "_putters", "_received",
        "_recv_ops", "_send_ops", "_send_waits", "_sent", "name",
    )

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be at least 1, was {capacity}")
        self.name = name
        self._capacity = capacity
        self._buffer: deque[T] = deque()
        self._getters: Waiters = deque()
        self._putters: Waiters = deque()
        self._closed = False
        self._sent = 0
        self._received = 0
        self._send_waits = 0
        self._high_water = 0
        self._send_ops = 0
        self._recv_ops = 0

    def send_nowait(self, item: T) -> None:
        if self._closed:
            raise ChannelClosed(self.name)
        buffer = self._buffer
        if len(buffer) >= self._capacity:
            raise WouldBlock(self.name)
        buffer.append(item)
        self._sent += 1
        depth = len(buffer)
        if depth > self._high_water:
            self._high_water = depth
        if self._getters:
            _wake_one(self._getters)

    async def send(self, item: T) -> None:
        """Enqueue `item`, waiting for room if the channel is full."""
        if len(self._buffer) >= self._capacity and not self._closed:
            self._send_waits += 1
            while len(self._buffer) >= self._capacity and not self._closed:
                await _wait(self._putters)
            self._send_ops = 0  # it just yielded: no fairness checkpoint due
            self.send_nowait(item)
            return
        # The fairness checkpoint comes before the enqueue: a cancellation there leaves nothing half-sent.
        self._send_ops += 1
        if self._send_ops >= CHECKPOINT_EVERY:
            self._send_ops = 0
            await checkpoint()
            if len(self._buffer) >= self._capacity:
                await self.send(item)
                return
        self.send_nowait(item)

    def receive_nowait(self) -> T:
        buffer = self._buffer
        if not buffer:
            if self._closed:
                raise ChannelClosed(self.name)
            raise WouldBlock(self.name)
        item = buffer.popleft()
        self._received += 1
        if self._putters:
            _wake_one(self._putters)
        return item

    async def receive(self) -> T:
        """Take the oldest item, waiting until one arrives."""
        # Every await comes before the item is taken, so a cancellation (a timeout, a restart) can never
        # lose a message that was already dequeued.
        self._recv_ops += 1
        if self._recv_ops >= CHECKPOINT_EVERY:
            self._recv_ops = 0
            await checkpoint()
        while not self._buffer:
            if self._closed:
                raise ChannelClosed(self.name)
            await _wait(self._getters)
            # It just yielded. Resetting also keeps the ends of a pipeline from all checkpointing on the
            # same message, which showed up as the p99 tail.
            self._recv_ops = 0
        return self.receive_nowait()

    def close(self) -> None:
        """Refuse new items; the receiver still gets everything queued, then `ChannelClosed`."""
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                _wake_one(waiters)

    def __len__(self) -> int:
        return len(self._buffer)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            name=self.name, policy=Policy.LOSSLESS, capacity=self._capacity, depth=len(self._buffer),
            high_water=self._high_water, sent=self._sent, received=self._received,
            send_waits=self._send_waits, dropped=0, conflated=0,
        )


class ConflatingChannel(Generic[T]):
    """Keeps only the latest pending value per key; the producer never waits.

    A conflated value keeps its place in the queue (the key was already waiting), so a busy key cannot
    push the others back indefinitely.
    """

    __slots__ = (
        "_capacity", "_closed", "_conflated", "_dropped", "_getters", "_high_water", "_key", "_merge", "_pending",
        "_received", "_recv_ops", "_sent", "name",
    )

    def __init__(self, name: str, capacity: int, key: Callable[[T], Hashable],
                 merge: Callable[[T, T], T] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be at least 1, was {capacity}")
        self.name = name
        self._capacity = capacity
        self._key = key
        self._merge = merge  # (pending, newer) -> the value to keep; default: the newer one
        self._pending: dict[Hashable, T] = {}
        self._getters: Waiters = deque()
        self._closed = False
        self._sent = 0
        self._received = 0
        self._conflated = 0
        self._dropped = 0
        self._high_water = 0
        self._recv_ops = 0

    def publish(self, item: T) -> None:
        """Offer `item`; never blocks. Replaces (or merges into) a pending value with the same key."""
        if self._closed:
            raise ChannelClosed(self.name)
        pending = self._pending
        key = self._key(item)
        self._sent += 1
        if key in pending:
            pending[key] = item if self._merge is None else self._merge(pending[key], item)
            self._conflated += 1
            return
        if len(pending) >= self._capacity:
            del pending[next(iter(pending))]
            self._dropped += 1
        pending[key] = item
        depth = len(pending)
        if depth > self._high_water:
            self._high_water = depth
        if self._getters:
            _wake_one(self._getters)

    # `send_nowait`/`send` exist so a producer can be written against either policy.
    send_nowait = publish

    async def send(self, item: T) -> None:
        self.publish(item)

    def receive_nowait(self) -> T:
        pending = self._pending
        if not pending:
            if self._closed:
                raise ChannelClosed(self.name)
            raise WouldBlock(self.name)
        item = pending.pop(next(iter(pending)))
        self._received += 1
        return item

    async def receive(self) -> T:
        self._recv_ops += 1
        if self._recv_ops >= CHECKPOINT_EVERY:
            self._recv_ops = 0
            await checkpoint()
        while not self._pending:
            if self._closed:
                raise ChannelClosed(self.name)
            await _wait(self._getters)
            self._recv_ops = 0
        return self.receive_nowait()

    def close(self) -> None:
        self._closed = True
        while self._getters:
            _wake_one(self._getters)

    def __len__(self) -> int:
        return len(self._pending)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            name=self.name, policy=Policy.CONFLATING, capacity=self._capacity, depth=len(self._pending),
            high_water=self._high_water, sent=self._sent, received=self._received, send_waits=0,
            dropped=self._dropped, conflated=self._conflated,
        )


Channel = LosslessChannel[T] | ConflatingChannel[T]


class Fanout(Generic[T]):
    """Publishes one conflating stream to several subscribers, each with its own channel.

    Used for market data and snapshots, which several actors read; each reader conflates on its own, so
    a slow reader never delays another one.
    """

    def __init__(self, channels: list[ConflatingChannel[T]]) -> None:
        self._channels = channels

    def publish(self, item: T) -> None:
        for channel in self._channels:
            channel.publish(item)

    send_nowait = publish

    async def send(self, item: T) -> None:
        self.publish(item)
