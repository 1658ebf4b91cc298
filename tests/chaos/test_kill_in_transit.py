"""kill -9 with funds between our accounts: the places the seeded runner found the books opening short (issue 14).

Two fixed trials of the kill -9 runner (tests/chaos/kill9.py), each a fresh local world and a real daemon child:
- killed the instant the entry's first transaction is journaled — the wallet's USDT transfer to a venue, mined by
  the restart's recovery of the transaction journal, never handed to the transfer desk by the run that died;
- killed with a transfer in flight in the desk's store while the bridge holds the venue's credit back — mined and
  debited, not credited at the kill.
Each restart must open its books with the transfer in transit (or landed, if the venue credited it meanwhile): no
drawdown breaker at start-up, the landing booked once as a landing, not as a deposit from outside; and the trial's
usual invariants (books equal truth, nothing sent twice, no fill lost)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chaos.kill9 import KillPoint, Trial
from tests.fakes.chain.world import BuiltWorld

pytestmark = [pytest.mark.chaos, pytest.mark.anvil, pytest.mark.exchange_fake, pytest.mark.subprocess,
              pytest.mark.timeout(180)]  # a fresh world and two lives of the daemon per test

STEPS = ("entry", "flatten")
STEP_TIMEOUT_S = 25  # the runner's default: a restart with funds in transit waits for them to land before it re-plans


@pytest.mark.parametrize("point", [KillPoint("entry", "tx", 1), KillPoint("entry", "transfer")],
                         ids=["first-tx", "transfer"])
def test_a_kill_with_funds_in_transit_restarts_on_the_whole_book(point: KillPoint, aave_world: BuiltWorld,
                                                                tmp_path: Any) -> None:
    trial = Trial(0, 0, 0, aave_world, tmp_path, STEPS, STEP_TIMEOUT_S)
    trial.points = [point]
    trial.result.plan = [str(point)]
    result = trial.run()
    summary = result.summary()
    assert [k.point for k in result.kills] == [str(point)], summary  # the kill happened where it was meant to
    assert result.ok and result.books_equal_truth and not result.self_halts, json.dumps(summary, indent=1, default=str)
    assert result.duplicate_orders == result.duplicate_txs == result.lost_fills == 0, summary
    events = [json.loads(line) for p in sorted(trial.dir.glob("life*/daemon.log"))
              for line in p.read_text().splitlines() if line.startswith("{")]
    names = {e.get("event") for e in events}
    assert "deposits_booked" not in names, "a landing of ours was booked as a deposit from outside"
    assert "drawdown_breaker_tripped" not in names and "balance_drifted" not in names, summary
