"""Fault injection for drills and chaos tests: makes a named actor fail on a schedule.

Off unless `chaos.fail_actor` is set. It wraps the real actor, so the failure goes through exactly the
supervision path a real crash would: backoff, inbox kept, budget, escalation.
"""

from __future__ import annotations

import anyio

from daemon.lifecycle import Actor, ActorContext


class InjectedFault(RuntimeError):
    """Raised on purpose by the chaos wrapper."""


class FailingActor:
    def __init__(self, inner: Actor, fail_after_s: float, fault: str = "raise") -> None:
        self.name = inner.name
        self._inner = inner
        self._fail_after_s = fail_after_s
        self._fault = fault

    async def run(self, ctx: ActorContext) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._inner.run, ctx)
            await anyio.sleep(self._fail_after_s)
            if self._fault != "hang":
                raise InjectedFault(f"chaos: injected failure of {self.name} after {self._fail_after_s:g}s")
            tg.cancel_scope.cancel()
        # A hung actor: still in the task tree (a stop cancels it as usual) but doing nothing, so it never
        # beats again.
        ctx.log.warning("chaos_hang", after_s=self._fail_after_s)
        await anyio.sleep_forever()
