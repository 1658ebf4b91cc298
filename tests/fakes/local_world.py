"""The local world: everything `basisd run` in live mode talks to, on this machine — the real AAVE v3 market on anvil
(`tests/fakes/chain`), the exchange fake for Binance, Bybit and OKX (`tests/fakes/exchange`), and the bridge between
them (`tests/fakes/chain_bridge.py`: the venues' deposit addresses are anvil accounts 5/6/7, a deposit is credited
when mined, a withdrawal is paid with a real transaction).

`LocalWorld.start()` boots a node of the built world, then prepares the wallet the daemon trades with — anvil dev
account 2 (0, 8, 9 are the world's admin, LP and treasury; 5, 6, 7 the venues): its opening USDT minted to it, the
FlashLeverage executor deployed for it (owner = the wallet, through the CREATE2 factory, signed with its key by the
daemon's own `TxSender`), and its native ETH set last to a small gas amount (1 ETH), so the daemon sees the capital
configured and not anvil's 10,000 ETH. The venues' accounts start with `venue_usdt` each (0: the daemon moves its
capital there itself; the fake alone would give 10,000 USDT per account).

Prices: the chain is the reference. The fake's ETH marks and spot prices on the three venues are set to AAVE's
oracle price of WETH (the world's ETH/USD feed, which the DEX's WETH↔USDT rates follow); `eth_price` moves the feed
and the DEX's rates first, then the fake follows.

Written to `dir`: `book.json` (the world's address book plus `"FlashLeverage"`, the format `chain.address_book`
reads) and `live.env` (mode 0600: the fake's venue redirect and keys, the RPC URL and the wallet's key, the book's
path, and `dir/state` as the daemon's state directory, emptied at each start since the world is new each time);
`set -a; . DIR/live.env; set +a` before `basisd run`. Every key is a public anvil dev key or a throwaway key of the
fake.

`LocalWorld` runs on the caller's event loop; `ThreadedLocalWorld` runs it on a loop of its own in a thread, for a
test that waits on a daemon subprocess with blocking calls (the `local_world` fixture). `python -m
tests.fakes.local_world --dir DIR` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from eth_account import Account
from web3 import AsyncWeb3

from daemon.venues import web3_calls as calls
from daemon.venues.web3_tx import TxPolicy, TxSender
from tests.fakes.chain.chain import AaveChain, dev_key
from tests.fakes.chain.node import AnvilNode
from tests.fakes.chain.world import BuiltWorld, build_world
from tests.fakes.chain_bridge import ChainBridge
from tests.fakes.exchange.__main__ import fake_env
from tests.fakes.exchange.server import FakeExchange

T = TypeVar("T")

WALLET_ACCOUNT = 2  # anvil dev account: not the admin (0), the LP (8), the treasury (9) nor a venue (5, 6, 7)
GWEI = 10**9
# The wallet's own deployment: anvil's fees are far below this; a receipt within seconds (automine).
DEPLOY_POLICY = TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01, receipt_timeout_s=30)
# Each venue's ETH market ids in the fake: (perp, spot).
ETH_MARKETS = {"binance": ("ETHUSDT", "ETHUSDT"), "bybit": ("ETHUSDT", "ETHUSDT"),
               "okx": ("ETH-USDT-SWAP", "ETH-USDT")}
CONFIG = Path("configs") / "local-world.yaml"  # the daemon's configuration for this world (the lead's)


class LocalWorld:
    def __init__(self, directory: Path, *, chain_port: int | None = None, fake_port: int = 0,
                 usdt: Decimal | int = 100_000, gas_eth: Decimal | int = 1, venue_usdt: Decimal | int = 0,
                 eth_price: Decimal | int | None = None, funding_every_s: float | None = None,
                 stream_heartbeat_s: float | None = 1.0, built: BuiltWorld | None = None) -> None:
        """`chain_port` / `fake_port`: None / 0 for any free port. `usdt`: the wallet's opening USDT; `gas_eth`: its
        native ETH; `venue_usdt`: each venue account's USDT; `eth_price`: ETH/USD for the whole world (None: the
        world's own, 3000); `stream_heartbeat_s`: the fake's public streams re-send every quote this often, as the
        venues do (None: only on a change)."""
        self.dir = Path(directory).resolve()
        self._chain_port = chain_port
        self._fake_port = fake_port
        self.usdt = Decimal(usdt)
        self.gas_eth = Decimal(gas_eth)
        self.venue_usdt = Decimal(venue_usdt)
        self._eth_price = None if eth_price is None else Decimal(eth_price)
        self._funding_every_s = funding_every_s
        self._heartbeat_s = stream_heartbeat_s
        self._built = built
        self.wallet_key = dev_key(WALLET_ACCOUNT)
        self.wallet = AsyncWeb3.to_checksum_address(Account.from_key(self.wallet_key).address)
        self.node: AnvilNode | None = None
        self.chain: AaveChain | None = None
        self.fake: FakeExchange | None = None
        self.bridge: ChainBridge | None = None
        self.executor = ""
        self.eth_price = Decimal(0)
        self.book_path = self.dir / "book.json"
        self.env_path = self.dir / "live.env"
        self.state_dir = self.dir / "state"
        self.env: dict[str, str] = {}

    @property
    def rpc_url(self) -> str:
        if self.node is None:
            raise RuntimeError("the local world is not started")
        return self.node.url

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> LocalWorld:
        """Boot the node, prepare the wallet, start the fake and the bridge, write book.json and live.env. A failure
        part-way stops what was started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        built: BuiltWorld = self._built if self._built is not None else await asyncio.to_thread(build_world)
        self.dir.mkdir(parents=True, exist_ok=True)
        # A fresh chain and fresh venues: a journal or a halt left by a daemon run against an earlier world would
        # describe transactions and orders this one never saw.
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir()
        node = self.node = await asyncio.to_thread(AnvilNode, built.state, built.boot_timestamp, (), self._chain_port)
        self.chain = AaveChain(node.url, built.book, built.contracts)
        await self.chain.start()
        self.eth_price = await self._align_prices()
        self.executor = await self._prepare_wallet(built.book)
        fake = self.fake = FakeExchange(port=self._fake_port, cert_dir=self.dir / "tls",
                                        funding_every_s=self._funding_every_s)
        if self._heartbeat_s is not None:
            fake.market_streams.heartbeat_s = self._heartbeat_s
        self._set_venues(fake, self.eth_price)
        await fake.start()
        # Attached after the wallet's own transactions: what the bridge credits from here on is a deposit.
        self.bridge = await ChainBridge(node.url, built.book, {
            "binance": fake.binance, "bybit": fake.bybit, "okx": fake.okx}).start()
        self._write(built.book)

    async def stop(self) -> None:
        """Stops the bridge, the fake and the node (by its PID); safe to call twice, or after a failed start."""
        bridge, fake, chain, node = self.bridge, self.fake, self.chain, self.node
        self.bridge = self.fake = self.chain = None
        try:
            if bridge is not None:
                await bridge.stop()
            if fake is not None:
                await fake.stop()
            if chain is not None:
                await chain.close()
        finally:
            if node is not None:
                node.stop()

    # --- the chain -------------------------------------------------------------------------------------------

    async def _align_prices(self) -> Decimal:
        """ETH/USD for the whole world: `eth_price` set on the feed and the DEX's WETH↔USDT rates, or the feed's own.
        Returned as AAVE's oracle prices WETH (8 decimals, USD base), which the fake is then set to."""
        chain = self._need(self.chain)
        if self._eth_price is not None:
            await chain.set_eth_price(self._eth_price)
            await chain.set_swap_rate("WETH", "USDT", self._eth_price)
            # The reverse rate rounded down to the router's wad (18 + 18 − 6 places), as the world's build sets it.
            await chain.set_swap_rate("USDT", "WETH", Decimal(int(Decimal(10**30) / self._eth_price)).scaleb(-30))
        oracle = chain.contract("AaveOracle", chain.book["AaveOracle"])
        answer = await oracle.functions.getAssetPrice(chain.reserve("WETH")["underlying"]).call()
        return Decimal(answer).scaleb(-8)

    async def _prepare_wallet(self, book: dict[str, Any]) -> str:
        chain = self._need(self.chain)
        admin = chain.accounts[0]
        token = chain.token("USDT")
        units = chain.units("USDT", self.usdt)
        held = int(await token.functions.balanceOf(self.wallet).call())
        if held > units:
            raise RuntimeError(f"the wallet already holds {held} USDT units, more than the {self.usdt} asked")
        if units > held:  # minted by the admin (the token's mint is public): the wallet's nonce stays its own
            await chain.send(token.get_function_by_signature("mint(address,uint256)")(self.wallet, units - held), admin)
        executor = await self._deploy_executor(chain, book)
        # Last: what the deployment's gas took is not left to chance; the daemon opens on exactly this.
        await chain.rpc("anvil_setBalance", [self.wallet, hex(chain.units("WETH", self.gas_eth))])
        return executor

    async def _deploy_executor(self, chain: AaveChain, book: dict[str, Any]) -> str:
        """FlashLeverage for the wallet through the CREATE2 factory, as `Web3Chain.deploy_executor` does it (same init
        code and salt: the daemon finds it there and does not deploy again)."""
        init = calls.executor_init_code(self.wallet, book["Pool"], book["reserves"]["WETH"]["underlying"],
                                        book["SwapRouter"])
        salt = bytes(32)
        address = calls.create2_address(init, salt)
        if not await chain.w3.eth.get_code(AsyncWeb3.to_checksum_address(calls.CREATE2_FACTORY)):
            raise RuntimeError("no CREATE2 factory on the node: cannot deploy the executor")
        w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(chain.url, request_kwargs={"timeout": 30}))
        try:
            receipt = await TxSender(w3, self.wallet_key, DEPLOY_POLICY).transact(calls.create2_deploy(init, salt))
        finally:
            await w3.provider.disconnect()
        if receipt["status"] != 1 or not await chain.w3.eth.get_code(AsyncWeb3.to_checksum_address(address)):
            raise RuntimeError(f"the executor's deployment created no code at {address}")
        return address

    # --- the venues ------------------------------------------------------------------------------------------

    def _set_venues(self, fake: FakeExchange, eth_price: Decimal) -> None:
        for venue, (perp, spot) in ETH_MARKETS.items():
            state = getattr(fake, venue)
            state.set_mark(perp, eth_price)
            state.set_spot_price(spot, eth_price)
            for wallet in state.wallets.values():
                wallet.clear()
            state.set_balance("USDT", self.venue_usdt, "futures")

    # --- what the daemon reads -------------------------------------------------------------------------------

    def _write(self, book: dict[str, Any]) -> None:
        fake = self._need(self.fake)
        self._private_file(self.book_path, json.dumps(dict(book, FlashLeverage=self.executor), indent=2) + "\n")
        self.env = {**fake_env(fake),
                    "BASISD_CREDENTIALS__RPC_URL": self.rpc_url,
                    "BASISD_CREDENTIALS__WALLET_PRIVATE_KEY": self.wallet_key,
                    "BASISD_CHAIN__ADDRESS_BOOK": str(self.book_path),
                    "BASISD_RUNTIME__STATE_DIR": str(self.state_dir)}
        self._private_file(self.env_path, "".join(f"{k}={v}\n" for k, v in self.env.items()))

    @staticmethod
    def _private_file(path: Path, text: str) -> None:
        # Created 0600 (not chmod-ed after writing): the wallet's key is never readable by others, even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT

    def command(self, config: Path = CONFIG) -> str:
        return f"set -a; . {self.env_path}; set +a; .venv/bin/python -m daemon run --config {config}"

    def summary(self) -> str:
        fake, node, bridge = self._need(self.fake), self._need(self.node), self._need(self.bridge)
        lines = [f"chain: {node.url} (anvil pid {node.pid}, chain id 31337)",
                 f"exchange fake: https://127.0.0.1:{fake.port} (TLS; certificate {fake.tls.cert_path})",
                 f"wallet: {self.wallet} (anvil dev account {WALLET_ACCOUNT}): {self.usdt} USDT, {self.gas_eth} ETH",
                 f"FlashLeverage executor: {self.executor} (owner: the wallet)",
                 "deposit addresses: " + ", ".join(f"{v} {a}" for v, a in bridge.addresses.items()),
                 f"venue accounts: {self.venue_usdt} USDT each; ETH/USD {self.eth_price.normalize():f} on the "
                 "oracle, the DEX and the venues",
                 f"address book: {self.book_path}",
                 f"env file: {self.env_path}",
                 f"run the daemon: {self.command()}"]
        return "\n".join(lines)

    @staticmethod
    def _need(part: T | None) -> T:
        if part is None:
            raise RuntimeError("the local world is not started")
        return part


class ThreadedLocalWorld:
    """A `LocalWorld` on its own event loop in a daemon thread: the caller may block (waiting on a daemon
    subprocess) while the fake answers and the bridge settles. `run(coro)` runs a coroutine on that loop."""

    def __init__(self, world: LocalWorld) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="local-world", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        """What `live.env` holds, for a daemon subprocess's environment."""
        return dict(self.world.env)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the world's loop (the fake's state is not thread-safe)."""
        async def run() -> T:
            return fn()

        return self.run(run())

    def start(self) -> ThreadedLocalWorld:
        try:
            self.run(self.world.start(), 60)
        except BaseException:
            self._end_loop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.run(self.world.stop())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


# --- the command -------------------------------------------------------------------------------------------------


async def serve(world: LocalWorld) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await world.start()
        print(world.summary(), flush=True)
        await stop.wait()
    finally:
        await world.stop()
        print("local world stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.local_world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path, help="where book.json, live.env, the certificate and the "
                                                                "daemon's state directory go")
    parser.add_argument("--chain-port", type=int, default=8545, help="anvil's port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--fake-port", type=int, default=8443, help="the exchange fake's TLS port (0: any free port)")
    parser.add_argument("--usdt", type=Decimal, default=Decimal(100_000), help="the wallet's opening USDT")
    parser.add_argument("--gas-eth", type=Decimal, default=Decimal(1), help="the wallet's native ETH (gas)")
    parser.add_argument("--venue-usdt", type=Decimal, default=Decimal(0), help="each venue account's opening USDT")
    parser.add_argument("--eth-price", type=Decimal, default=None, help="ETH/USD on the oracle, the DEX and the "
                                                                        "venues (default: the world's, 3000)")
    parser.add_argument("--funding-every", type=float, default=None, metavar="SECONDS",
                        help="settle funding on the venues' open positions at this period (a compressed 8 h)")
    args = parser.parse_args(argv)
    world = LocalWorld(args.dir, chain_port=args.chain_port or None, fake_port=args.fake_port, usdt=args.usdt,
                       gas_eth=args.gas_eth, venue_usdt=args.venue_usdt, eth_price=args.eth_price,
                       funding_every_s=args.funding_every)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(world))
    return 0


if __name__ == "__main__":
    sys.exit(main())
