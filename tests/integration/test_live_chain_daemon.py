"""`basisd run --config configs/local-world.yaml` in a child process against the local world: `usdt_market_neutral`
in live mode with real ccxt against the exchange fake (Binance, Bybit, OKX over TLS) and real web3 against the
real AAVE v3 market on anvil, the fake's deposit addresses being anvil accounts (tests/fakes/local_world.py).

What the world holds at the end — the Pool's account data, the tokens on chain, the fake's positions — is the truth
the daemon's books must equal: the reconciler says so (`basisd reconcile`), and the test reads it itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest

from daemon.config import load_config
from daemon.mode_spec import mode_spec
from tests.fakes.exchange.server import FakeExchange
from tests.fakes.local_world import CONFIG, ETH_MARKETS, ThreadedLocalWorld
from tests.integration.daemon_process import ROOT, DaemonProcess

pytestmark = [pytest.mark.anvil, pytest.mark.exchange_fake, pytest.mark.subprocess]

D = Decimal


def basisd(env: dict[str, str], *args: str) -> dict[str, Any]:
    """A control command to the running daemon (its socket from the world's state directory), its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(CONFIG), "--json"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def shorts(fake: FakeExchange) -> dict[str, Decimal]:
    out = {}
    for venue, (perp, _) in ETH_MARKETS.items():
        position = getattr(fake, venue).position(perp)
        out[venue] = position.amount if position is not None else D(0)
    return out


def test_usdt_market_neutral_enters_on_chain_and_venues_reconciles_and_flattens(
        local_world: ThreadedLocalWorld, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    world = local_world.world
    for key, value in local_world.env.items():  # the config as the daemon loads it (for the target LTV)
        monkeypatch.setenv(key, value)
    spec = mode_spec(load_config(ROOT / CONFIG))
    chain, fake = world.chain, world.fake
    assert chain is not None and fake is not None
    daemon = DaemonProcess(ROOT / CONFIG, tmp_path, env=local_world.env)
    try:
        entry = daemon.wait_for_event("instruction_finished", 90, type="ENTRY")
        assert entry["completed"], entry["reason"]

        # On chain: levered on the real Pool at the strategy's target LTV, the executor left holding nothing.
        collateral, debt, *_, hf = local_world.run(chain.pool.functions.getUserAccountData(world.wallet).call())
        assert abs(D(debt) / D(collateral) - spec.target_ltv) < D("0.002"), (debt, collateral, spec.target_ltv)
        assert D(hf) / D(10**18) > 1
        weth = chain.token("WETH")
        assert local_world.run(weth.functions.balanceOf(world.executor).call()) == 0
        # On the venues: short what the wallet holds in ETH — the AAVE position's net, and once the strategy's next
        # decision has seen the book's delta (the wallet's gas ETH is ETH too: ~6 % of this hedge), that as well.
        held = shorts(fake)
        assert all(s < 0 for s in held.values()), held
        lst_eth = D(collateral - debt) / D(world.eth_price) / D(10**8)  # AAVE's base currency is USD, 8 decimals
        gas_eth = D(local_world.run(chain.w3.eth.get_balance(world.wallet))) / D(10**18)
        short = -sum(held.values())
        assert any(abs(short - long) / long < D("0.02") for long in (lst_eth, lst_eth + gas_eth)), \
            (held, lst_eth, gas_eth)

        # The reconciler reads all four accounts — the chain's too — and the books equal them.
        answer = basisd(local_world.env, "reconcile")
        assert answer["clean"] and set(answer["accounts"]) == {"binance", "bybit", "okx", "wallet"}, answer

        # Flatten: trading halts, AAVE is unwound through the executor, the ETH sold, the shorts closed.
        basisd(local_world.env, "flatten", "--reason", "test")
        unwind = daemon.wait_for_event("instruction_finished", 60, type="UNWIND")
        assert unwind["completed"], unwind["reason"]
        collateral, debt, *_ = local_world.run(chain.pool.functions.getUserAccountData(world.wallet).call())
        assert debt == 0 and collateral == 0
        assert shorts(fake) == dict.fromkeys(ETH_MARKETS, D(0))
        answer = basisd(local_world.env, "reconcile")
        assert answer["clean"] and set(answer["accounts"]) == {"binance", "bybit", "okx", "wallet"}, answer

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()


def test_a_liquidation_on_chain_is_booked_as_one_and_halts_trading_and_the_books_still_equal_the_chain(
        local_world: ThreadedLocalWorld, tmp_path: Any) -> None:
    """After the entry, the LST's rate falls 7 % and, in the same block (nothing can act in between), a liquidator
    calls the real `Pool.liquidationCall` on the wallet: the daemon finds the event, books exactly what the chain
    took as a LIQUIDATION, halts, and its books still reconcile with the chain."""
    world = local_world.world
    chain = world.chain
    assert chain is not None
    daemon = DaemonProcess(ROOT / CONFIG, tmp_path, env=local_world.env)
    try:
        entry = daemon.wait_for_event("instruction_finished", 90, type="ENTRY")
        assert entry["completed"], entry["reason"]
        lst, weth = chain.token("weETH"), chain.token("WETH")
        liquidator = chain.accounts[3]

        async def liquidate() -> int:
            await chain.mint("WETH", liquidator, 100 * 10**18)
            await chain.send(weth.functions.approve(chain.book["Pool"], 2**256 - 1), liquidator)
            rate = await lst.functions.getRate().call()
            await chain.rpc("evm_setAutomine", [False])
            try:
                await lst.functions.setRate(rate * 93 // 100).transact({"from": chain.book["admin"]})
                call = chain.pool.functions.liquidationCall(lst.address, weth.address, world.wallet, 2**256 - 1, False)
                tx = await call.transact({"from": liquidator, "gas": 1_500_000})
                await chain.rpc("evm_mine", [])
            finally:
                await chain.rpc("evm_setAutomine", [True])
            receipt = await chain.w3.eth.get_transaction_receipt(tx)
            assert receipt["status"] == 1
            return int(receipt["blockNumber"])

        block = local_world.run(liquidate())
        # The positions actor books the LIQUIDATION and halts. (The drawdown breaker sees the same 7 % fall on a
        # levered book and may halt first, flattening what is left: either way trading ends HALTED.)
        booked = daemon.wait_for_event("liquidated", 30)
        assert booked["venue"] == "chain" and booked["report"].startswith("chain:0x"), booked
        assert any(t.startswith("wallet:aWeETH -") for t in booked["tokens"]), booked
        assert any(t.startswith("wallet:variableDebtWETH -") for t in booked["tokens"]), booked
        assert block > 0 and daemon.wait_for_event("trading_state_changed", 5, current="HALTED")
        # The breaker acts on the next market update (1 s polls): wait out its unwind, so that the reconciliation
        # below does not read the chain between a transaction and its booking (a live reconciliation compares at
        # once: the venues cannot count their reports — see the closing note on issue 13).
        time.sleep(3)
        daemon.wait_for(lambda: not _unwinding(daemon), 60, "the breaker's unwind to finish")
        status = basisd(local_world.env, "status")
        assert status["trading"] == "HALTED", status
        answer = basisd(local_world.env, "reconcile")
        assert answer["clean"], answer
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()


def _unwinding(daemon: DaemonProcess) -> bool:
    """An UNWIND issued (the breaker's flatten) and not finished yet."""
    events = daemon.events()
    issued = {e["instruction_id"] for e in events
              if e.get("event") == "instruction_issued" and e.get("type") == "UNWIND"}
    done = {e["instruction_id"] for e in events if e.get("event") == "instruction_finished"}
    return bool(issued - done)
