from __future__ import annotations

import asyncio
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.bus import ChannelClosed, ConflatingChannel, Fanout, LosslessChannel, Policy, WouldBlock


@dataclass(frozen=True, slots=True)
class Tick:
    key: str
    value: int


@pytest.mark.asyncio
async def test_lossless_channel_delivers_everything_in_order_when_the_consumer_is_slower() -> None:
    channel: LosslessChannel[int] = LosslessChannel("fills", capacity=4)
    received: list[int] = []

    async def consume() -> None:
        for _ in range(500):
            received.append(await channel.receive())
            if len(received) % 7 == 0:
                await anyio.lowlevel.checkpoint()  # slower than the producer

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(500):
            await channel.send(i)

    assert received == list(range(500))
    stats = channel.statistics()
    assert stats.policy is Policy.LOSSLESS
    assert (stats.sent, stats.received, stats.dropped, stats.depth) == (500, 500, 0, 0)
    assert stats.high_water == 4  # the bound held
    assert stats.send_waits > 0  # the producer was made to wait rather than drop


@given(capacity=st.integers(1, 16), n=st.integers(0, 300), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_lossless_channel_never_drops_for_any_bound_and_pacing(capacity: int, n: int, seed: int) -> None:
    import random

    async def main() -> list[int]:
        rng = random.Random(seed)
        channel: LosslessChannel[int] = LosslessChannel("commands", capacity)
        out: list[int] = []

        async def consume() -> None:
            for _ in range(n):
                out.append(await channel.receive())
                if rng.random() < 0.3:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(n):
                await channel.send(i)
        return out

    assert anyio.run(main) == list(range(n))


def test_send_nowait_refuses_rather_than_drops_when_full() -> None:
    channel: LosslessChannel[int] = LosslessChannel("orders", capacity=2)
    channel.send_nowait(1)
    channel.send_nowait(2)
    with pytest.raises(WouldBlock):
        channel.send_nowait(3)
    assert [channel.receive_nowait(), channel.receive_nowait()] == [1, 2]
    with pytest.raises(WouldBlock):
        channel.receive_nowait()


def test_conflation_keeps_the_latest_value_per_key_without_a_consumer() -> None:
    channel: ConflatingChannel[Tick] = ConflatingChannel("market", capacity=100, key=lambda t: t.key)
    for i in range(10_000):  # synchronous: the producer can never block
        channel.publish(Tick(f"k{i % 10}", i))
    assert len(channel) == 10
    drained = [channel.receive_nowait() for _ in range(10)]
    assert {t.key: t.value for t in drained} == {f"k{j}": 9_990 + j for j in range(10)}
    stats = channel.statistics()
    assert stats.conflated == 10_000 - 10
    assert stats.dropped == 0
    assert stats.send_waits == 0


def test_conflated_value_keeps_its_place_in_the_queue() -> None:
    channel: ConflatingChannel[Tick] = ConflatingChannel("market", capacity=10, key=lambda t: t.key)
    channel.publish(Tick("a", 1))
    channel.publish(Tick("b", 1))
    channel.publish(Tick("a", 2))
    assert channel.receive_nowait() == Tick("a", 2)
    assert channel.receive_nowait() == Tick("b", 1)


def test_a_conflated_market_batch_keeps_the_latest_value_of_every_series() -> None:
    """A reader that falls behind must not lose a series that only the older batch carried (a funding report)."""
    from decimal import Decimal

    from daemon.app import _merge
    from daemon.domain.ids import InstrumentId
    from daemon.domain.messages import FundingRateReported, MarketUpdated, PriceTicked

    perp = InstrumentId("binance:Perp:ETHUSDT")
    funding = FundingRateReported(perp, Decimal("0.0001"), 9, 1, 1)
    first = MarketUpdated((PriceTicked(perp, Decimal(100), 1, 1), funding), 1, 1)
    second = MarketUpdated((PriceTicked(perp, Decimal(101), 2, 2),), 2, 2)
    channel: ConflatingChannel[MarketUpdated] = ConflatingChannel("market", 4, lambda m: m.key, _merge)
    channel.publish(first)
    channel.publish(second)
    merged = channel.receive_nowait()
    assert len(channel) == 0 and channel.statistics().conflated == 1
    assert merged.ts_event == 2
    assert {type(u).__name__: u for u in merged.updates} == {
        "PriceTicked": second.updates[0], "FundingRateReported": first.updates[1]}


def test_conflating_overflow_drops_the_oldest_key_and_counts_it() -> None:
    channel: ConflatingChannel[Tick] = ConflatingChannel("market", capacity=3, key=lambda t: t.key)
    for key in "abcd":
        channel.publish(Tick(key, 0))
    assert [channel.receive_nowait().key for _ in range(3)] == ["b", "c", "d"]
    assert channel.statistics().dropped == 1


@pytest.mark.asyncio
async def test_a_timed_out_receive_loses_no_message() -> None:
    channel: LosslessChannel[int] = LosslessChannel("fills", capacity=8)
    for attempt in range(300):
        with anyio.move_on_after(0):
            await channel.receive()
        channel.send_nowait(attempt)
        assert await channel.receive() == attempt


@pytest.mark.asyncio
async def test_close_lets_the_receiver_drain_then_signals_the_end() -> None:
    channel: LosslessChannel[int] = LosslessChannel("fills", capacity=8)
    await channel.send(1)
    channel.close()
    with pytest.raises(ChannelClosed):
        await channel.send(2)
    assert await channel.receive() == 1
    with pytest.raises(ChannelClosed):
        await channel.receive()


@pytest.mark.asyncio
async def test_fanout_gives_each_reader_its_own_conflation() -> None:
    fast: ConflatingChannel[Tick] = ConflatingChannel("fast", 10, key=lambda t: t.key)
    slow: ConflatingChannel[Tick] = ConflatingChannel("slow", 10, key=lambda t: t.key)
    out = Fanout([fast, slow])
    out.publish(Tick("x", 1))
    assert (await fast.receive()).value == 1
    out.publish(Tick("x", 2))
    assert (await fast.receive()).value == 2
    assert (await slow.receive()).value == 2  # slow only ever sees the latest
    assert slow.statistics().conflated == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LosslessChannel("x", 0)


@pytest.mark.asyncio
async def test_a_receiver_cancelled_after_being_woken_passes_the_message_on() -> None:
    channel: LosslessChannel[int] = LosslessChannel("inbox", capacity=4)
    first = asyncio.create_task(channel.receive())
    second = asyncio.create_task(channel.receive())
    await asyncio.sleep(0)  # both are parked, `first` at the head of the queue
    channel.send_nowait(1)  # picks `first`...
    first.cancel()  # ...which is cancelled before it runs: the wake-up must go to `second`
    with anyio.fail_after(2):
        assert await second == 1
    assert first.cancelled()
    assert len(channel) == 0


@pytest.mark.asyncio
async def test_a_cancel_scope_racing_a_delivery_never_loses_or_duplicates_the_message() -> None:
    for _ in range(50):
        channel: LosslessChannel[int] = LosslessChannel("inbox", capacity=4)
        got: list[int] = []
        scopes = [anyio.CancelScope(), anyio.CancelScope()]

        async def receive(scope: anyio.CancelScope, ch: LosslessChannel[int], out: list[int]) -> None:
            with scope:
                out.append(await ch.receive())

        async with anyio.create_task_group() as tg:
            for scope in scopes:
                tg.start_soon(receive, scope, channel, got)
            await anyio.wait_all_tasks_blocked()
            channel.send_nowait(7)
            scopes[0].cancel()
            await anyio.wait_all_tasks_blocked()
            scopes[1].cancel()
        assert got + [channel.receive_nowait() for _ in range(len(channel))] == [7]


@pytest.mark.asyncio
async def test_many_blocked_producers_all_get_through_in_order_of_arrival() -> None:
    channel: LosslessChannel[tuple[int, int]] = LosslessChannel("commands", capacity=1)
    async with anyio.create_task_group() as tg:
        for producer in range(5):
            async def produce(p: int = producer) -> None:
                for i in range(20):
                    await channel.send((p, i))
            tg.start_soon(produce)
        received = [await channel.receive() for _ in range(100)]
    for producer in range(5):
        assert [i for p, i in received if p == producer] == list(range(20))
    assert channel.statistics().send_waits > 0
