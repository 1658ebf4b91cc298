"""`AaveChain`: one booted node of the test world and the levers a test pulls on it (over AsyncWeb3, HTTP).

Prices: `set_eth_price` moves the ETH/USD MockAggregator (WETH and, through their rate feeds, both LSTs);
`set_price` moves another asset's own MockAggregator (USDT); `set_lst_rate` moves an LST's exchange rate (and so
AAVE's price of it). MockAggregator has no setter: its only storage slot is overwritten (`anvil_setStorageAt`).
Time: `warp(seconds)` advances the clock and mines a block. Money: `mint` any reserve token, `supply`/`borrow`/...
from an unlocked dev account, so a test builds a position with the real Pool and no private key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.types import RPCEndpoint, TxReceipt

from daemon.venues.web3_chain import ChainContracts
from daemon.venues.web3_reads import ChainAddresses, ReserveAddresses

from .artifacts import aave_artifact
from .market import MAX_UINT, USD

MNEMONIC = "test test test test test test test test test test test junk"  # anvil's public dev mnemonic
USER_ACCOUNTS = range(1, 8)  # 0 is the admin, 8 the LP, 9 the treasury


def dev_key(index: int) -> str:
    """The private key of anvil's dev account `index` (public test keys, for tests that sign locally)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    key: str = Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key.hex()
    return key if key.startswith("0x") else "0x" + key


@dataclass
class AaveChain:
    url: str
    book: dict[str, Any]
    contracts: dict[str, Any]  # the test contracts' ABIs (the rated LSTs, their feeds)
    w3: AsyncWeb3[Any] = field(init=False)
    accounts: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(self.url, request_kwargs={"timeout": 30}))

    async def start(self) -> None:
        self.accounts = list(await self.w3.eth.accounts)

    async def close(self) -> None:
        await self.w3.provider.disconnect()

    # --- raw RPC and contracts -------------------------------------------------------------------------------

    async def rpc(self, method: str, params: list[Any]) -> Any:
        response = await self.w3.provider.make_request(RPCEndpoint(method), params)
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response["result"]

    def contract(self, name: str, address: str) -> AsyncContract:
        abi = self.contracts[name]["abi"] if name in self.contracts else aave_artifact(name)["abi"]
        return self.w3.eth.contract(address=AsyncWeb3.to_checksum_address(address), abi=abi, decode_tuples=True)

    @property
    def pool(self) -> AsyncContract:
        return self.contract("Pool", self.book["Pool"])

    def reserve(self, symbol: str) -> dict[str, Any]:
        reserve: dict[str, Any] = self.book["reserves"][symbol]
        return reserve

    def token(self, symbol: str) -> AsyncContract:
        r = self.reserve(symbol)
        return self.contract(r["contract"], r["underlying"])

    async def send(self, fn: Any, sender: str, value: int = 0) -> TxReceipt:
        """Transact from an unlocked dev account; a revert raises (web3's ContractLogicError names AAVE's code)."""
        tx_hash = await fn.transact({"from": sender, "value": value})
        receipt: TxReceipt = await self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        if receipt["status"] != 1:
            raise RuntimeError(f"{fn.fn_name} failed in transaction {tx_hash.hex()}")
        return receipt

    # --- money -----------------------------------------------------------------------------------------------

    def units(self, symbol: str, amount: Decimal | int | str) -> int:
        """`amount` tokens in the token's smallest unit (exact; refuses a fraction below one unit)."""
        scaled = Decimal(amount).scaleb(self.reserve(symbol)["decimals"])
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} {symbol} is not a whole number of base units")
        return int(scaled)

    async def mint(self, symbol: str, to: str, amount: int) -> None:
        await self.send(self.token(symbol).get_function_by_signature("mint(address,uint256)")(to, amount), to)

    async def supply(self, symbol: str, who: str, amount: int, mint: bool = True) -> None:
        token = self.token(symbol)
        if mint:
            await self.mint(symbol, who, amount)
        await self.send(token.functions.approve(self.book["Pool"], MAX_UINT), who)
        await self.send(self.pool.functions.supply(token.address, amount, who, 0), who)

    async def borrow(self, symbol: str, who: str, amount: int) -> None:
        await self.send(self.pool.functions.borrow(self.reserve(symbol)["underlying"], amount, 2, 0, who), who)

    async def repay(self, symbol: str, who: str, amount: int = MAX_UINT) -> None:
        token = self.token(symbol)
        await self.send(token.functions.approve(self.book["Pool"], MAX_UINT), who)
        await self.send(self.pool.functions.repay(token.address, amount, 2, who), who)

    async def withdraw(self, symbol: str, who: str, amount: int = MAX_UINT) -> None:
        await self.send(self.pool.functions.withdraw(self.reserve(symbol)["underlying"], amount, who), who)

    async def set_user_emode(self, who: str, category: int) -> None:
        await self.send(self.pool.functions.setUserEMode(category), who)

    # --- the DEX (FixedRateSwapRouter: Uniswap V3 SwapRouter02's exactInputSingle at a rate the test sets) -------

    @property
    def swap_router(self) -> AsyncContract:
        return self.contract("FixedRateSwapRouter", self.book["SwapRouter"])

    async def set_swap_rate(self, token_in: str, token_out: str, rate: Decimal | str) -> None:
        """`rate` tokens out per token in (e.g. "0.995" weETH → WETH for a discount to the LST's rate)."""
        dec_in, dec_out = self.reserve(token_in)["decimals"], self.reserve(token_out)["decimals"]
        wad = Decimal(rate).scaleb(18 + dec_out - dec_in)
        await self.send(self.swap_router.functions.setRate(self.reserve(token_in)["underlying"],
                                                           self.reserve(token_out)["underlying"], int(wad)),
                        self.book["admin"])

    async def set_swap_fee_bps(self, bps: int) -> None:
        await self.send(self.swap_router.functions.setFeeBps(bps), self.book["admin"])

    async def swap(self, token_in: str, token_out: str, who: str, amount_in: int, min_out: int = 0) -> int:
        """Swap through the DEX from `who` (approves it first); returns what arrived."""
        out_token = self.token(token_out)
        before = await out_token.functions.balanceOf(who).call()
        await self.send(self.token(token_in).functions.approve(self.book["SwapRouter"], amount_in), who)
        params = (self.reserve(token_in)["underlying"], self.reserve(token_out)["underlying"], 100, who, amount_in,
                  min_out, 0)
        await self.send(self.swap_router.functions.exactInputSingle(params), who)
        arrived: int = await out_token.functions.balanceOf(who).call() - before
        return arrived

    # --- prices, rates, time ---------------------------------------------------------------------------------

    async def _set_aggregator(self, aggregator: str, answer: int) -> None:
        await self.rpc("anvil_setStorageAt", [aggregator, "0x0", "0x" + answer.to_bytes(32, "big", signed=True).hex()])

    async def set_eth_price(self, usd: Decimal | int | str) -> None:
        """ETH/USD (WETH's price; the LSTs' follow through their rate feeds)."""
        await self._set_aggregator(self.book["EthUsdAggregator"], self._usd(usd))

    async def set_price(self, symbol: str, usd: Decimal | int | str) -> None:
        """A non-ETH asset's own feed (USDT). The LSTs are priced from the ETH feed and their rate instead."""
        if self.reserve(symbol)["kind"] != "stable":
            raise ValueError(f"{symbol} is priced from ETH/USD: use set_eth_price or set_lst_rate")
        await self._set_aggregator(self.reserve(symbol)["aggregator"], self._usd(usd))

    async def set_lst_rate(self, symbol: str, rate: Decimal | str) -> None:
        """ETH per LST (weETH getRate(), wstETH stEthPerToken()), e.g. Decimal("1.05")."""
        wad = Decimal(rate).scaleb(18)
        if wad != wad.to_integral_value() or wad <= 0:
            raise ValueError(f"rate {rate} is not a positive 18-decimal number")
        await self.send(self.token(symbol).functions.setRate(int(wad)), self.book["admin"])

    @staticmethod
    def _usd(usd: Decimal | int | str) -> int:
        answer = Decimal(usd) * USD
        if answer != answer.to_integral_value():
            raise ValueError(f"{usd} has more than 8 decimals")
        return int(answer)

    async def timestamp(self) -> int:
        block = await self.w3.eth.get_block("latest")
        return int(block["timestamp"])

    async def warp(self, seconds: int) -> None:
        """Move the clock forward and mine one block: interest accrues (balanceOf, normalized indexes move; the
        stored indexes in getReserveData move only when the reserve is next touched)."""
        await self.rpc("evm_increaseTime", [seconds])
        await self.rpc("evm_mine", [])

    async def snapshot(self) -> str:
        sid: str = await self.rpc("evm_snapshot", [])
        return sid

    async def revert(self, snapshot_id: str) -> None:
        if await self.rpc("evm_revert", [snapshot_id]) is not True:
            raise RuntimeError(f"evm_revert({snapshot_id}) refused")


def chain_addresses(book: dict[str, Any], lst: str = "weETH") -> ChainAddresses:
    """The adapter's view of the world's market (what the daemon's configuration will name)."""
    reserves = tuple(
        ReserveAddresses(sym, r["underlying"], r["aToken"], r["variableDebtToken"], r["decimals"])
        for sym, r in book["reserves"].items()
    )
    return ChainAddresses(pool=book["Pool"], oracle=book["AaveOracle"], reserves=reserves, lst=lst,
                          emode_categories=(book["emode"]["id"],))


def chain_contracts(book: dict[str, Any], lst: str = "weETH") -> ChainContracts:
    """The contracts outside AAVE the live adapter calls, in this world: the DEX, and the LST as its own staking
    entry (TestWeETH has EtherFi's `depositETHForWeETH`, TestWstETH stakes ETH sent to it, as wstETH does)."""
    return ChainContracts(swap_router=book["SwapRouter"], lst_staking=book["reserves"][lst]["underlying"])
