"""The short CI version of the kill -9 runner (tests/chaos/kill9.py): two trials of a fixed seed, each a fresh local
world in which the daemon enters, tops up its venues' margin (ETH up until a short is in the warning band: ETH freed
from AAVE, sent to the venue, sold there, the short reduced), deleverages its AAVE loop (the LST's rate down past the
LTV band: REDUCE_LTV, a flash-loan transaction) and flattens while being killed with SIGKILL at seeded points and
restarted on the same state directory; at the end the books are checked against the world's own state.

The 30-trial run of the whole script (entry, rebalance, margin top-up, deleverage, halt and resume, flatten) is by
hand: `python -m tests.chaos.kill9 --trials 30 --seed 30` (BENCHMARKS.md, "Reliability")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.kill9 import KINDS, STEPS, clean, plan, run_trials
from tests.fakes.chain.world import BuiltWorld

pytestmark = [pytest.mark.chaos, pytest.mark.anvil, pytest.mark.exchange_fake, pytest.mark.subprocess,
              pytest.mark.timeout(300)]  # two trials of four steps, each a fresh world and a daemon per life

SEED = 3
TRIALS = 2
CI_STEPS = ("entry", "margin_topup", "deleverage", "flatten")  # where the orders, the transfers and the flash loans are
STEP_TIMEOUT_S = 12  # four decisions (3 s each): what a restarted daemon gets to finish a step


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory, aave_world: BuiltWorld) -> dict[str, Any]:
    lines: list[str] = []
    result = run_trials(TRIALS, SEED, 2, tmp_path_factory.mktemp("kill9"), out=lines.append, steps=CI_STEPS,
                        step_timeout_s=STEP_TIMEOUT_S)
    result["lines"] = lines
    return result


def test_the_plan_is_the_seeds_own() -> None:
    """Same seed and trial, same kill points; another trial, other points; every point names a step and a kind."""
    first = [plan(7, t, 3) for t in range(5)]
    assert first == [plan(7, t, 3) for t in range(5)]
    assert first != [plan(8, t, 3) for t in range(5)]
    assert all(p.step in STEPS and p.kind in KINDS and 1 <= len(points) <= 3 for points in first for p in points)
    assert all(p.step in CI_STEPS for t in range(5) for p in plan(7, t, 3, CI_STEPS))
    for t in range(5):  # an opt-in kind adds its point and leaves the seed's others as they were
        with_fill = plan(7, t, 3, extra=("fill",))
        assert [p for p in with_fill if p.kind != "fill"] == first[t]
        assert [p.kind for p in with_fill].count("fill") == 1


def test_kill9_loses_no_fill_and_repeats_no_order_or_transaction(summary: dict[str, Any]) -> None:
    report = "\n".join(summary["lines"])
    assert summary["trials"] == TRIALS and summary["kills"] >= TRIALS, report
    assert summary["duplicate_orders"] == 0 and summary["unintended_orders"] == 0, report
    assert summary["duplicate_txs"] == 0 and summary["unjournaled_txs"] == 0, report
    assert summary["lost_fills"] == 0 and summary["fills_booked_twice"] == 0, report
    assert summary["books_equal_truth"] == TRIALS, report


def test_kill9_every_trial_finishes_its_script_without_the_daemon_halting_itself(summary: dict[str, Any]) -> None:
    assert clean(summary), "\n".join(summary["lines"])
