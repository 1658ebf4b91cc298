"""Issue 14 §3: the RPC node restarted mid-session. The live daemon trades `usdt_market_neutral` against the local
world (tests/fakes/local_world.py); after its entry the anvil node goes away for a few seconds and comes back on the
same URL with the same state — what an operator's node restart or a provider's outage looks like. The daemon must
say the chain degraded, keep its books, recover by itself, and then act on the chain again (a flatten: the unwind's
transactions sent and booked after the restart), reconciled clean against the venues and the chain."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.fakes.local_world import CONFIG, ThreadedLocalWorld
from tests.integration.daemon_process import ROOT, DaemonProcess
from tests.integration.test_live_chain_daemon import basisd

pytestmark = [pytest.mark.chaos, pytest.mark.anvil, pytest.mark.exchange_fake, pytest.mark.subprocess]


def test_the_chain_s_node_restarted_mid_session_is_survived_and_the_chain_traded_again(
        local_world: ThreadedLocalWorld, tmp_path: Path) -> None:
    world = local_world.world
    node, chain = world.node, world.chain
    assert node is not None and chain is not None
    daemon = DaemonProcess(ROOT / CONFIG, tmp_path, env=local_world.env)
    try:
        entry = daemon.wait_for_event("instruction_finished", 90, type="ENTRY")
        assert entry["completed"], entry["reason"]
        node.save_state()
        node.stop()
        degraded = daemon.wait_for_event("market_venue_degraded", 20, venue="chain")
        assert "127.0.0.1" not in json.dumps(degraded), degraded  # the RPC URL (it may hold a key) is never logged
        time.sleep(2)  # a few more polls against a dead node: nothing but the chain's own series may suffer
        node.start_again()
        daemon.wait_for_event("market_venue_recovered", 20, venue="chain")
        status = basisd(local_world.env, "status")
        assert status["trading"] == "ACTIVE", status
        assert basisd(local_world.env, "reconcile")["clean"]

        # The chain is traded again after the restart: the flatten's unwind is sent, mined and booked.
        basisd(local_world.env, "flatten", "--reason", "after the node restart")
        unwind = daemon.wait_for_event("instruction_finished", 60, type="UNWIND")
        assert unwind["completed"], unwind["reason"]
        collateral, debt, *_ = local_world.run(chain.pool.functions.getUserAccountData(world.wallet).call())
        assert debt == 0 and collateral == 0
        assert basisd(local_world.env, "reconcile")["clean"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()
