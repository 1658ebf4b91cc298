"""The local world (`tests/fakes/local_world.py`): anvil with the real AAVE v3 market, the exchange fake and the
bridge, prepared for `basisd run` in live mode — the book the daemon reads, its wallet's opening balances, its
executor, one ETH price everywhere, a deposit from the wallet credited on a venue, and the command that runs it all
until SIGTERM, leaving no anvil behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from web3 import AsyncWeb3

from daemon.venues import web3_calls as calls
from daemon.venues.address_book import load_address_book
from daemon.venues.web3_tx import TxSender
from tests.fakes.chain.chain import dev_key
from tests.fakes.chain.world import BuiltWorld
from tests.fakes.chain_bridge import DEPOSIT_ACCOUNTS
from tests.fakes.local_world import DEPLOY_POLICY, ETH_MARKETS, WALLET_ACCOUNT, LocalWorld, ThreadedLocalWorld
from tests.integration.daemon_process import ROOT, DaemonProcess

pytestmark = [pytest.mark.anvil, pytest.mark.exchange_fake]

D = Decimal
EXECUTOR_ABI = json.loads(calls.EXECUTOR_ARTIFACT.read_text())["abi"]


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"}),
                                    timeout=1) as response:
            return "result" in json.loads(response.read())
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running either.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_world_writes_the_book_and_env_the_daemon_reads_with_the_wallet_funded_as_configured(
        local_world: ThreadedLocalWorld) -> None:
    world, fake, chain = local_world.world, local_world.world.fake, local_world.world.chain
    assert fake is not None and chain is not None
    book = load_address_book(world.book_path, "weETH", ("USDT",))
    assert book.chain_id == 31337 and book.executor == world.executor
    for path in (world.book_path, world.env_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = dict(line.split("=", 1) for line in world.env_path.read_text().splitlines())
    assert env == local_world.env
    assert env["BASISD_CHAIN__ADDRESS_BOOK"] == str(world.book_path) and world.book_path.is_absolute()
    assert env["BASISD_CREDENTIALS__WALLET_PRIVATE_KEY"] == dev_key(WALLET_ACCOUNT)
    assert env["BASISD_VENUE_REDIRECT__ADDRESS"] == f"127.0.0.1:{fake.port}"
    assert {f"BASISD_CREDENTIALS__{v}__API_KEY" for v in ("BINANCE", "BYBIT", "OKX")} <= env.keys()

    async def on_chain() -> dict[str, Any]:
        w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(env["BASISD_CREDENTIALS__RPC_URL"]))
        try:
            executor = w3.eth.contract(address=AsyncWeb3.to_checksum_address(world.executor), abi=EXECUTOR_ABI)
            return {"code": await w3.eth.get_code(executor.address), "owner": await executor.functions.owner().call(),
                    "pool": await executor.functions.pool().call(), "eth": await w3.eth.get_balance(world.wallet),
                    "chain_id": await w3.eth.chain_id}
        finally:
            await w3.provider.disconnect()

    seen = local_world.run(on_chain())
    assert len(seen["code"]) > 0 and seen["owner"] == world.wallet and seen["pool"] == book.market.pool
    assert seen["eth"] == 10**18 and seen["chain_id"] == 31337  # 1 ETH of gas, not anvil's 10,000
    usdt_units = local_world.run(chain.token("USDT").functions.balanceOf(world.wallet).call())
    assert usdt_units == 100_000 * 10**6
    accounts = local_world.run(chain.w3.eth.accounts)
    oracle = chain.contract("AaveOracle", chain.book["AaveOracle"])
    eth_usd = D(local_world.run(oracle.functions.getAssetPrice(chain.reserve("WETH")["underlying"]).call())) / 10**8
    assert world.eth_price == eth_usd == 3000  # the world's own feed; the fake's marks are set to it
    for venue in ETH_MARKETS:
        state = getattr(fake, venue)
        perp, spot = ETH_MARKETS[venue]
        assert (state.marks[perp], state.spot_prices[spot]) == (eth_usd, eth_usd), venue
        assert all(v == 0 for wallet in state.wallets.values() for v in wallet.values()), venue  # the daemon funds them
        assert state.deposit_address("USDT", "ETH") == accounts[DEPOSIT_ACCOUNTS[venue]]
    assert world.wallet == accounts[WALLET_ACCOUNT] and world.wallet not in {accounts[i] for i in (0, 5, 6, 7, 8, 9)}


def test_a_usdt_transfer_from_the_wallet_to_binances_deposit_address_is_credited_on_the_fake(
        local_world: ThreadedLocalWorld) -> None:
    world = local_world.world
    fake, chain = world.fake, world.chain
    assert fake is not None and chain is not None

    async def deposit() -> tuple[str, str]:
        client = await fake.client("binance")
        address = (await client.fetch_deposit_address("USDT", {"network": "ETH"}))["address"]
        w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(world.rpc_url))
        try:
            sender = TxSender(w3, world.wallet_key, DEPLOY_POLICY)
            usdt = chain.reserve("USDT")["underlying"]
            receipt = await sender.transact(calls.transfer(usdt, address, 250 * 10**6, "USDT"))
            assert receipt["status"] == 1
            return address, receipt["transactionHash"].to_0x_hex()
        finally:
            await w3.provider.disconnect()

    address, tx_hash = local_world.run(deposit())
    assert address == local_world.call(lambda: world.bridge.address("binance") if world.bridge else "")
    deadline = time.monotonic() + 10
    while not local_world.call(lambda: [t for t in fake.binance.transfers if t.kind == "deposit"]):
        assert time.monotonic() < deadline, "the bridge did not credit the deposit"
        time.sleep(0.02)
    (credited,) = local_world.call(lambda: [t for t in fake.binance.transfers if t.kind == "deposit"])
    assert (credited.asset, credited.amount, credited.tx_id) == ("USDT", D(250), tx_hash)
    assert local_world.call(lambda: fake.binance.balance("USDT", fake.binance.deposit_wallet)) == D(250)
    assert local_world.run(chain.token("USDT").functions.balanceOf(world.wallet).call()) == 99_750 * 10**6
    assert not local_world.call(lambda: list(world.bridge.errors) if world.bridge else ["no bridge"])


@pytest.mark.asyncio
async def test_one_eth_price_everywhere_the_oracle_the_dex_and_the_venues_and_stop_ends_the_node(
        tmp_path: Path, aave_world: BuiltWorld) -> None:
    world = LocalWorld(tmp_path / "w", built=aave_world, eth_price=2500, usdt=1_000, gas_eth=D("0.5"),
                       venue_usdt=D(2_000))
    (tmp_path / "w" / "state").mkdir(parents=True)
    (tmp_path / "w" / "state" / "journal.sqlite").write_text("a daemon's journal of an earlier world")
    await world.start()
    try:
        chain, fake = world.chain, world.fake
        assert chain is not None and fake is not None
        oracle = chain.contract("AaveOracle", chain.book["AaveOracle"])
        assert await oracle.functions.getAssetPrice(chain.reserve("WETH")["underlying"]).call() == 2500 * 10**8
        assert world.eth_price == 2500
        assert world.state_dir.is_dir() and not any(world.state_dir.iterdir())  # the earlier world's state is gone
        for venue, (perp, spot) in ETH_MARKETS.items():
            state = getattr(fake, venue)
            assert (state.marks[perp], state.spot_prices[spot]) == (2500, 2500), venue
            assert state.balance("USDT", "futures") == 2_000
        trader = chain.accounts[3]
        await chain.mint("USDT", trader, 5_000 * 10**6)
        assert await chain.swap("USDT", "WETH", trader, 2_500 * 10**6) == 10**18
        await chain.mint("WETH", trader, 10**18)
        assert await chain.swap("WETH", "USDT", trader, 10**18) == 2_500 * 10**6
        assert await chain.w3.eth.get_balance(world.wallet) == 5 * 10**17
        assert await chain.token("USDT").functions.balanceOf(world.wallet).call() == 1_000 * 10**6
        node = world.node
        assert node is not None
    finally:
        await world.stop()
    assert not node.running and not _answers(node.url)
    await world.stop()  # twice: nothing left to stop


def test_the_command_runs_the_world_until_sigterm_and_leaves_no_anvil_behind(tmp_path: Path) -> None:
    directory = tmp_path / "cli"
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.local_world", "--dir", str(directory),
                             "--chain-port", "0", "--fake-port", "0", "--usdt", "5000"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("run the daemon:"):
                break
        out = "".join(lines)
        assert f"env file: {directory / 'live.env'}" in out, out
        assert f". {directory / 'live.env'}; set +a; .venv/bin/python -m daemon run --config" in out
        assert "5000 USDT, 1 ETH" in out
        pid = int(out.split("anvil pid ")[1].split(",")[0])
        url = out.split("chain: ")[1].split(" ")[0]
        assert _alive(pid) and _answers(url)
        book = load_address_book(directory / "book.json", "weETH", ("USDT",))
        assert book.executor is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stdout.read()
        assert "local world stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert not _alive(pid) and not _answers(url)


@pytest.mark.subprocess
def test_the_live_daemon_opens_on_the_worlds_wallet_and_venues_and_stops_on_sigterm(
        local_world: ThreadedLocalWorld, tmp_path: Path) -> None:
    """What `live.env` and `book.json` hold is what `basisd run` reads: it opens the wallet on this chain with the
    executor the world deployed, the venues empty, and reconciles the books with all four before it trades."""
    world = local_world.world
    daemon = DaemonProcess(ROOT / "configs" / "local-world.yaml", tmp_path, env=local_world.env)
    try:
        opened = daemon.wait_for_event("live_chain_opened", 30)
        assert (opened["wallet"], opened["chain_id"], opened["executor"]) == (world.wallet, 31337, world.executor)
        assert {k: D(v) for k, v in opened["balances"].items()} == {"ETH": D(1), "USDT": D(100_000)}
        for venue in ETH_MARKETS:
            assert daemon.wait_for_event("live_account_opened", 5, venue=venue)["balances"] == {}
        reconciled = daemon.wait_for_event("reconciled", 30)
        assert set(reconciled["accounts"]) == {"binance", "bybit", "okx", "wallet"}
        daemon.wait_ready(30)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.output()[-3000:]
    finally:
        daemon.close()
