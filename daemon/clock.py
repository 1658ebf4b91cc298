"""The injected clock. No actor reads the system time itself.

* `WallClock` — live and paper trading: real time.
* `VirtualClock` — replay and backtest: market time starts at `start_ns` and runs `speed` times faster than
  real time (`speed=3600` replays an hour a second); with `speed=None` it runs flat out, jumping to the
  instant the market driver asks for as soon as every other task is idle.

Heartbeats, restart backoff and the status line are process concerns and always use real (monotonic)
time; only market time is virtual.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import anyio
from anyio.lowlevel import checkpoint

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    def now_ns(self) -> int:
        """Market time, integer nanoseconds since the Unix epoch."""
        ...

    async def sleep_until(self, t_ns: int) -> None:
        """Return once market time has reached `t_ns`."""
        ...


async def wait_until_idle() -> None:
    """Return once every other task of the event loop is parked, waiting on something.

    (anyio's `wait_all_tasks_blocked` polls every 0.1 s; a flat-out replay needs this at every bar, so it
    yields with `sleep(0)` instead. The daemon runs on anyio's asyncio backend.)
    """
    this = asyncio.current_task()
    while True:
        await asyncio.sleep(0)
        for task in asyncio.all_tasks():
            if task is this:
                continue
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                break
        else:
            return


class WallClock:
    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep_until(self, t_ns: int) -> None:
        delay_s = (t_ns - time.time_ns()) / NS_PER_S
        await anyio.sleep(max(0.0, delay_s))


class VirtualClock:
    """Market time for replays; accelerated (`speed` > 0) or flat out (`speed=None`)."""

    def __init__(self, start_ns: int, speed: float | None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive or None (flat out), was {speed}")
        self._speed = speed
        self._origin_ns = start_ns
        self._now_ns = start_ns
        self._mono_origin = time.monotonic_ns()

    @property
    def speed(self) -> float | None:
        return self._speed

    def now_ns(self) -> int:
        if self._speed is None:
            return self._now_ns
        elapsed = time.monotonic_ns() - self._mono_origin
        return self._origin_ns + int(elapsed * self._speed)

    async def sleep_until(self, t_ns: int) -> None:
        if self._speed is None:
            # Flat out, time jumps only once every other task is idle (trio's autojump clock): each instant is
            # fully processed — fills booked, decisions taken — before the next one begins, which is what
            # makes a flat-out run both faithful and deterministic.
            await wait_until_idle()
            if t_ns > self._now_ns:
                self._now_ns = t_ns
            await checkpoint()
            return
        delay_ns = t_ns - self.now_ns()
        await anyio.sleep(max(0.0, delay_ns / self._speed / NS_PER_S))
