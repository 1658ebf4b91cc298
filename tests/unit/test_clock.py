from __future__ import annotations

import time

import anyio
import pytest

from daemon.clock import NS_PER_S, VirtualClock, WallClock

HOUR_NS = 3600 * NS_PER_S


@pytest.mark.asyncio
async def test_flat_out_virtual_clock_jumps_to_the_requested_instant_without_sleeping() -> None:
    clock = VirtualClock(start_ns=0, speed=None)
    started = time.monotonic()
    for hour in range(1, 10_001):
        await clock.sleep_until(hour * HOUR_NS)
        assert clock.now_ns() == hour * HOUR_NS
    assert time.monotonic() - started < 5  # 10,000 market hours: no real waiting at all
    await clock.sleep_until(5)  # the past: time never runs backwards
    assert clock.now_ns() == 10_000 * HOUR_NS


@pytest.mark.asyncio
async def test_accelerated_virtual_clock_runs_speed_times_faster_than_real_time() -> None:
    clock = VirtualClock(start_ns=1_000 * HOUR_NS, speed=36_000.0)  # ten market hours per real second
    before = time.monotonic()
    await clock.sleep_until(1_000 * HOUR_NS + HOUR_NS)  # one market hour ≈ 0.1 s
    elapsed = time.monotonic() - before
    assert 0.08 <= elapsed <= 0.5
    assert clock.now_ns() >= 1_001 * HOUR_NS


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed"):
        VirtualClock(0, 0.0)


@pytest.mark.asyncio
async def test_wall_clock_is_real_time() -> None:
    clock = WallClock()
    assert abs(clock.now_ns() - time.time_ns()) < NS_PER_S
    target = clock.now_ns() + 50_000_000
    await clock.sleep_until(target)
    assert clock.now_ns() >= target
    with anyio.fail_after(1):
        await clock.sleep_until(0)
