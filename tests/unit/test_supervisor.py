from __future__ import annotations

import random
import time

import anyio
import pytest

from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.messages import TradingState
from daemon.errors import ExitCode, MissingDataError, RestartBudgetExceeded
from daemon.lifecycle import ActorContext, serve
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell

FAST = RestartPolicy(initial_backoff_s=0.01, max_backoff_s=0.08, multiplier=2.0, jitter_fraction=0.2,
                     budget_count=5, budget_window_s=60.0)


def make_supervisor(actors: list[object], policy: RestartPolicy = FAST) -> tuple[Supervisor, TradingStateCell]:
    trading = TradingStateCell()
    sup = Supervisor(actors, clock=VirtualClock(0, None), trading=trading, policy=policy,  # type: ignore[arg-type]
                     heartbeat_interval_s=0.05, heartbeat_timeout_s=1.0, rng=random.Random(1))
    return sup, trading


class CrashOnce:
    """Consumes an inbox; fails on the first message of its first run, after which the inbox fills up."""

    name = "crash_once"

    def __init__(self, inbox: LosslessChannel[int]) -> None:
        self.inbox = inbox
        self.handled: list[int] = []
        self.runs = 0
        self.run_started_at: list[float] = []

    async def run(self, ctx: ActorContext) -> None:
        self.runs += 1
        self.run_started_at.append(time.monotonic())

        async def handle(message: int) -> None:
            if self.runs == 1:
                raise RuntimeError("boom")
            self.handled.append(message)

        await serve(ctx, self.inbox, handle)


@pytest.mark.asyncio
async def test_a_crashed_actor_is_restarted_and_gets_every_message_queued_while_it_was_down() -> None:
    inbox: LosslessChannel[int] = LosslessChannel("inbox", capacity=1000)
    actor = CrashOnce(inbox)
    sup, trading = make_supervisor([actor], RestartPolicy(initial_backoff_s=0.2, budget_count=5))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        await inbox.send(0)  # the poison for run 1
        while actor.runs < 2 and sup.records["crash_once"].failures == 0:
            await anyio.sleep(0.005)
        for i in range(1, 101):  # queued during the 0.2 s backoff, while nobody reads the inbox
            await inbox.send(i)
        assert len(inbox) == 100
        with anyio.fail_after(5):
            while len(actor.handled) < 101:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    # The failed message is redelivered first, then everything queued meanwhile, in order.
    assert actor.handled == list(range(101))
    record = sup.records["crash_once"]
    assert (record.failures, record.restarts) == (1, 1)
    assert actor.run_started_at[1] - actor.run_started_at[0] >= 0.2 * 0.8  # backoff (minus jitter) was honoured
    assert trading.state is TradingState.ACTIVE


class AlwaysFails:
    name = "always_fails"

    def __init__(self) -> None:
        self.starts: list[float] = []

    async def run(self, ctx: ActorContext) -> None:
        ctx.started()
        self.starts.append(time.monotonic())
        raise ConnectionError("venue unreachable")


@pytest.mark.asyncio
async def test_restarts_back_off_exponentially_then_the_budget_halts_trading_and_raises() -> None:
    actor = AlwaysFails()
    sup, trading = make_supervisor([actor])
    with pytest.raises(RestartBudgetExceeded) as caught:
        await sup.run()
    error = caught.value
    assert int(error.exit_code) == int(ExitCode.SOFTWARE) == 70
    assert "always_fails" in str(error) and "ConnectionError: venue unreachable" in str(error)
    assert trading.state is TradingState.HALTED
    assert "always_fails" in trading.reason
    # budget 5 ⇒ the 6th failure escalates; gaps grow roughly ×2 until the cap (jitter ±20 %).
    assert len(actor.starts) == 6
    gaps = [b - a for a, b in zip(actor.starts, actor.starts[1:], strict=False)]
    for attempt, gap in enumerate(gaps, start=1):
        expected = min(0.08, 0.01 * 2 ** (attempt - 1))
        assert expected * 0.8 <= gap <= expected * 1.2 + 0.05, (attempt, gap)


def test_backoff_is_exponential_capped_and_jittered_within_bounds() -> None:
    policy = RestartPolicy(initial_backoff_s=1.0, max_backoff_s=10.0, multiplier=2.0, jitter_fraction=0.25)
    rng = random.Random(3)
    for attempt in range(1, 12):
        base = min(10.0, 2.0 ** (attempt - 1))
        samples = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(base * 0.75 <= s <= base * 1.25 for s in samples)
        assert max(samples) - min(samples) > base * 0.2  # jitter is really applied


class Poison:
    name = "poison"

    def __init__(self, inbox: LosslessChannel[str]) -> None:
        self.inbox = inbox
        self.handled: list[str] = []

    async def run(self, ctx: ActorContext) -> None:
        async def handle(message: str) -> None:
            if message == "bad":
                raise ValueError("cannot parse")
            self.handled.append(message)

        await serve(ctx, self.inbox, handle)


@pytest.mark.asyncio
async def test_a_poison_message_is_retried_once_then_dead_lettered_and_the_rest_flow() -> None:
    inbox: LosslessChannel[str] = LosslessChannel("inbox", capacity=10)
    actor = Poison(inbox)
    sup, trading = make_supervisor([actor])
    for m in ("a", "bad", "b", "c"):
        inbox.send_nowait(m)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with anyio.fail_after(5):
            while len(actor.handled) < 3:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert actor.handled == ["a", "b", "c"]
    record = sup.records["poison"]
    assert (record.failures, record.dead_letters) == (2, 1)
    assert trading.state is TradingState.ACTIVE


class Idle:
    name = "idle"

    def __init__(self) -> None:
        self.inbox: LosslessChannel[int] = LosslessChannel("idle", 1)

    async def run(self, ctx: ActorContext) -> None:
        async def handle(_: int) -> None:
            return None

        await serve(ctx, self.inbox, handle)


class Hangs:
    name = "hangs"

    async def run(self, ctx: ActorContext) -> None:
        ctx.started()
        await anyio.sleep_forever()  # never beats again


@pytest.mark.asyncio
async def test_heartbeats_stay_fresh_for_an_idle_actor_and_go_stale_for_a_hung_one() -> None:
    idle, hung = Idle(), Hangs()
    trading = TradingStateCell()
    sup = Supervisor([idle, hung], clock=VirtualClock(0, None), trading=trading, policy=FAST,
                     heartbeat_interval_s=0.02, heartbeat_timeout_s=0.15)
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        assert sup.all_started.is_set()
        assert sup.heartbeats_fresh()
        await anyio.sleep(0.4)
        assert not sup.heartbeats_fresh()
        assert sup.stale_actors() == ["hangs"]
        tg.cancel_scope.cancel()


def test_duplicate_actor_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        make_supervisor([Hangs(), Hangs()])


class FailsInsideItsTaskGroup:
    """An actor whose failure reaches the supervisor wrapped in its own task group's ExceptionGroup."""

    name = "grouped"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.runs = 0

    async def run(self, ctx: ActorContext) -> None:
        self.runs += 1
        ctx.started()

        async def fail() -> None:
            raise self.error

        async with anyio.create_task_group() as tg:
            tg.start_soon(fail)
            tg.start_soon(anyio.sleep_forever)


@pytest.mark.asyncio
async def test_a_failure_wrapped_in_a_task_group_is_recorded_as_the_real_exception_and_where_it_was_raised() -> None:
    actor = FailsInsideItsTaskGroup(ValueError("bad price '1e400'"))
    sup, _ = make_supervisor([actor])
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        with anyio.fail_after(5):
            while sup.records["grouped"].failures == 0:
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    error = sup.records["grouped"].last_error
    assert "ExceptionGroup" not in error and "sub-exception" not in error
    assert error.startswith("ValueError: bad price '1e400' (at tests/unit/test_supervisor.py:")
    assert "in fail" in error


@pytest.mark.asyncio
async def test_a_fatal_error_inside_an_actors_task_group_ends_the_run_instead_of_restarting() -> None:
    actor = FailsInsideItsTaskGroup(MissingDataError("history lacks funding"))
    sup, trading = make_supervisor([actor])
    with anyio.fail_after(5), pytest.raises(MissingDataError, match="history lacks funding"):
        await sup.run()
    assert actor.runs == 1
    assert trading.state is TradingState.HALTED
    assert sup.records["grouped"].last_error.startswith("MissingDataError: history lacks funding (at ")
