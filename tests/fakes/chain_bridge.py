"""The local world's money bridge: the exchange fake's deposits and withdrawals happen on the anvil chain.

Each fake venue's deposit address on the EVM chain (network ETH, every asset) becomes one anvil dev account of the
world's mnemonic (`DEPOSIT_ACCOUNTS`: 5, 6, 7), so a transfer the wallet sends there is a real transaction. The bridge
watches the chain block by block and credits what arrives, as a venue does once it sees a deposit confirmed:

- native ETH sent to a venue's address by a successful transaction (a plain value transfer: ETH a contract sends on
  internally leaves no trace the bridge reads, as on a venue that credits only top-level transfers);
- the world's USDT `Transfer` events to a venue's address (a mint is not a deposit: the bridge mints to pay).

Each is credited once (`credit_deposit(asset, amount, "ETH", tx_id=<the transaction hash>)`), so the desk finds it by
the hash. A withdrawal the venue accepted on network ETH is paid by the bridge with a real transaction from the
venue's deposit account, signed with its dev key (USDT minted to it first where it holds too little: the world's
tokens have a public mint), and completed on the fake with that transaction's hash once mined. A withdrawal to another
venue's address is then credited there like any deposit (the fake's direct peer credit is off: `chain_settles`).

`ChainBridge.step()` does one round (tests may drive it); `start()` runs rounds every `poll_s` until `stop()`;
`paused` holds the rounds (a test looking at a transfer in flight). Signing keys are anvil's public test keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from eth_account import Account
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import AsyncWeb3

from tests.fakes.chain.chain import dev_key
from tests.fakes.exchange.binance_model import BinanceState, Transfer

log = logging.getLogger(__name__)

DEPOSIT_ACCOUNTS = {"binance": 5, "bybit": 6, "okx": 7}  # anvil dev accounts of the world's mnemonic
NETWORK = "ETH"  # the fake's (Binance's) name of the chain
TRANSFER_TOPIC = "0x" + AsyncWeb3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
ZERO_ADDRESS = "0x" + "00" * 20
ERC20_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "a", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "mint", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
]


@dataclass(frozen=True, slots=True)
class _Venue:
    name: str
    state: BinanceState
    address: ChecksumAddress
    key: str


class ChainBridge:
    def __init__(self, url: str, book: Mapping[str, Any], venues: Mapping[str, BinanceState], *,
                 accounts: Mapping[str, int] = DEPOSIT_ACCOUNTS, poll_s: float = 0.05) -> None:
        """`book`: the world's address book (its USDT: `book["reserves"]["USDT"]`); `venues`: the fake's states by
        venue name; `accounts`: the dev account index of each venue's deposit address."""
        self.w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(url, request_kwargs={"timeout": 30}))
        usdt = book["reserves"]["USDT"]
        self._usdt = self.w3.eth.contract(address=AsyncWeb3.to_checksum_address(usdt["underlying"]), abi=ERC20_ABI)
        self._usdt_decimals = int(usdt["decimals"])
        self._venues: dict[str, _Venue] = {}
        for name, state in venues.items():
            key = dev_key(accounts[name])
            self._venues[name] = _Venue(name, state, Account.from_key(key).address, key)
        self._by_address = {v.address.lower(): v for v in self._venues.values()}
        self.poll_s = poll_s
        self.paused = False
        self._next_block: int | None = None
        self._credited: set[str] = set()  # "<tx hash>:<log index or 'eth'>"
        self._paying: dict[str, str] = {}  # withdrawal id → its payment's transaction hash (sent, maybe not mined)
        self._task: asyncio.Task[None] | None = None
        self.errors: list[str] = []  # what went wrong in background rounds (a test may assert it stays empty)

    def address(self, venue: str) -> str:
        return self._venues[venue].address

    @property
    def addresses(self) -> dict[str, str]:
        return {name: v.address for name, v in self._venues.items()}

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def attach(self) -> ChainBridge:
        """Point the fake's deposit addresses at the chain and start watching from the next block (what came
        before is not a deposit of this run)."""
        for v in self._venues.values():
            v.state.chain_address = v.address
            v.state.chain_settles = True
        self._next_block = await self.w3.eth.block_number + 1
        return self

    async def start(self) -> ChainBridge:
        if self._next_block is None:
            await self.attach()
        self._task = asyncio.create_task(self._run(), name="chain-bridge")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.w3.provider.disconnect()

    async def _run(self) -> None:
        while True:
            if not self.paused:
                try:
                    await self.step()
                except Exception as exc:  # a round that failed is done again next time; it must not end the bridge
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    log.warning("chain bridge round failed: %s", exc)
            await asyncio.sleep(self.poll_s)

    # --- one round -------------------------------------------------------------------------------------------

    async def step(self) -> int:
        """Credit the deposits mined since the last round, pay the withdrawals waiting; how many events."""
        if self._next_block is None:
            await self.attach()
        return await self._pay_withdrawals() + await self._credit_deposits()

    async def _credit_deposits(self) -> int:
        assert self._next_block is not None
        latest = await self.w3.eth.block_number
        if latest < self._next_block:
            return 0
        first, self._next_block = self._next_block, latest + 1
        credited = 0
        for number in range(first, latest + 1):
            block = await self.w3.eth.get_block(number, full_transactions=True)
            for tx in block["transactions"]:
                if not isinstance(tx, Mapping):
                    continue
                to = str(tx.get("to") or "").lower()
                if to not in self._by_address or int(tx["value"]) <= 0:
                    continue
                receipt = await self.w3.eth.get_transaction_receipt(tx["hash"])
                if receipt["status"] == 1:
                    tx_hash = HexBytes(tx["hash"]).to_0x_hex()
                    credited += self._credit(self._by_address[to], "ETH", Decimal(int(tx["value"])).scaleb(-18),
                                             tx_hash, "eth")
        topics: list[Any] = [TRANSFER_TOPIC, None, ["0x" + "00" * 12 + a.removeprefix("0x") for a in self._by_address]]
        logs = await self.w3.eth.get_logs({"fromBlock": first, "toBlock": latest, "address": self._usdt.address,
                                           "topics": topics})
        for entry in logs:
            sender = "0x" + HexBytes(entry["topics"][1]).hex()[-40:]
            recipient = "0x" + HexBytes(entry["topics"][2]).hex()[-40:]
            if sender in (ZERO_ADDRESS, recipient):
                continue  # minted (the bridge funding a payment), or a venue paying itself: not a deposit
            amount = Decimal(int.from_bytes(HexBytes(entry["data"]), "big")).scaleb(-self._usdt_decimals)
            credited += self._credit(self._by_address[recipient], "USDT", amount,
                                     HexBytes(entry["transactionHash"]).to_0x_hex(), str(entry["logIndex"]))
        return credited

    def _credit(self, venue: _Venue, asset: str, amount: Decimal, tx_hash: str, part: str) -> int:
        key = f"{tx_hash}:{part}"
        if key in self._credited or amount <= 0:
            return 0
        self._credited.add(key)
        venue.state.credit_deposit(asset, amount, NETWORK, tx_id=tx_hash)
        return 1

    async def _pay_withdrawals(self) -> int:
        paid = 0
        for v in self._venues.values():
            for t in list(v.state.transfers):
                if t.kind == "withdrawal" and t.status == "4" and t.network == NETWORK:
                    paid += await self._pay(v, t)
        return paid

    async def _pay(self, venue: _Venue, t: Transfer) -> int:
        tx_hash = self._paying.get(t.id)
        if tx_hash is None:
            amount = venue.state.withdrawal_received(t)
            if t.asset == "ETH":
                tx: dict[str, Any] = {"to": AsyncWeb3.to_checksum_address(t.address), "value": self._units(amount, 18)}
            elif t.asset == "USDT":
                units = self._units(amount, self._usdt_decimals)
                held = await self._usdt.functions.balanceOf(venue.address).call()
                if held < units:  # the venue's hot wallet is topped up: the world's USDT has a public mint
                    mint = self._usdt.functions.mint(venue.address, units - held)
                    await self._mined(await self._sign_and_send(
                        venue, dict(await mint.build_transaction({"from": venue.address}))))
                transfer = self._usdt.functions.transfer(AsyncWeb3.to_checksum_address(t.address), units)
                tx = dict(await transfer.build_transaction({"from": venue.address}))
            else:
                return 0  # not an asset of this chain's world
            tx_hash = await self._sign_and_send(venue, tx)
            self._paying[t.id] = tx_hash  # from here the payment is followed by its hash, never sent again
        receipt = await self._mined(tx_hash)
        if receipt is None:
            return 0
        if receipt["status"] != 1:
            self._paying.pop(t.id)  # reverted: nothing was paid; the next round tries again
            raise RuntimeError(f"{venue.name}: the payment of withdrawal {t.id} reverted in {tx_hash}")
        venue.state.complete_withdrawal(t.id, tx_id=tx_hash)
        return 1

    async def _sign_and_send(self, venue: _Venue, tx: dict[str, Any]) -> str:
        tx = dict(tx, **{"from": venue.address})
        tx["nonce"] = await self.w3.eth.get_transaction_count(venue.address, "pending")
        tx["chainId"] = await self.w3.eth.chain_id
        if "gas" not in tx:
            tx["gas"] = await self.w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        if "maxFeePerGas" not in tx:
            base = (await self.w3.eth.get_block("latest")).get("baseFeePerGas") or 0
            tx["maxPriorityFeePerGas"] = 1_000_000_000
            tx["maxFeePerGas"] = 2 * int(base) + tx["maxPriorityFeePerGas"]
        tx.pop("from")
        signed = Account.sign_transaction(tx, venue.key)
        return HexBytes(await self.w3.eth.send_raw_transaction(signed.raw_transaction)).to_0x_hex()

    async def _mined(self, tx_hash: str) -> Any:
        with contextlib.suppress(Exception):
            return await self.w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash), timeout=10, poll_latency=0.01)
        return None

    @staticmethod
    def _units(amount: Decimal, decimals: int) -> int:
        # A venue pays what its precision allows: any dust below one base unit stays with it.
        return int(amount.scaleb(decimals).to_integral_value(rounding=ROUND_DOWN))
