"""Fault injection for drills and chaos tests: makes a named actor, or every actor, fail on a schedule.

Off unless `chaos.fail_actor` or `chaos.storm` is set. It wraps the real actor, so the failure goes through
exactly the supervision path a real crash would: backoff, inbox kept, budget, escalation. A crash lands wherever
the actor happens to be (mid-message, mid-send, mid-journal-write): the cancellation of a real failure, which is
what a storm tests the lossless channels against. With `chaos.crash_count` the actor crashes that many times and
then runs undisturbed, so a drill can end in a steady state whose books can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import structlog

from daemon.lifecycle import Actor, ActorContext
from daemon.settings import ChaosSettings

log = structlog.get_logger()


class InjectedFault(RuntimeError):
    """Raised on purpose by the chaos wrapper."""


class FailingActor:
    def __init__(self, inner: Actor, fail_after_s: float, fault: str = "raise", crash_count: int | None = None) -> None:
        self.name = inner.name
        self._inner = inner
        self._fail_after_s = fail_after_s
        self._fault = fault
        self._crash_count = crash_count
        self.faults = 0  # the supervisor runs this same object again after each crash: the count survives it

    async def run(self, ctx: ActorContext) -> None:
        if self._crash_count is not None and self.faults >= self._crash_count:
            await self._inner.run(ctx)  # the storm is over for this actor: the real thing, undisturbed
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._inner.run, ctx)
            await anyio.sleep(self._fail_after_s)
            self.faults += 1
            if self._fault != "hang":
                if self.faults == self._crash_count:
                    ctx.log.warning("chaos_storm_over", crashes=self.faults)
                raise InjectedFault(f"chaos: injected failure {self.faults} of {self.name} after "
                                    f"{self._fail_after_s:g}s")
            tg.cancel_scope.cancel()
        # A hung actor: still in the task tree (a stop cancels it as usual) but doing nothing, so it never
        # beats again.
        ctx.log.warning("chaos_hang", after_s=self._fail_after_s)
        await anyio.sleep_forever()


def with_chaos(actors: Sequence[Actor], chaos: ChaosSettings) -> list[Actor]:
    """The actors, each one `chaos` breaks wrapped in a FailingActor (all of them for a storm). The caller has
    checked that a named actor runs (a ConfigError naming the setting is the composition root's to raise)."""
    doomed = {a.name for a in actors} if chaos.storm else {chaos.fail_actor}
    if not doomed - {None}:
        return list(actors)
    log.warning("chaos_enabled", actors=sorted(str(n) for n in doomed), fail_after_s=chaos.fail_after_s,
                fault=chaos.fault, crash_count=chaos.crash_count)
    return [FailingActor(a, chaos.fail_after_s, chaos.fault, chaos.crash_count) if a.name in doomed else a
            for a in actors]
