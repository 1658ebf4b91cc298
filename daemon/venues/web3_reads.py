"""The chain adapter's reads: one typed `ChainSnapshot` of the wallet, its AAVE v3 position and the market around it,
read over `AsyncWeb3` (HTTP) in one JSON-RPC batch per cycle.

What one cycle reads: the wallet's ETH and ERC-20 balances; `Pool.getUserAccountData` (AAVE's own HF, collateral,
debt, LT, max LTV); per reserve `getReserveData` (the stored ray indexes and rates) and the live indexes
(`getReserveNormalizedIncome` / `getReserveNormalizedVariableDebt`: the stored ones move only when the reserve is
touched, so balances are valued with the live ones), the aToken and variable debt token `scaledBalanceOf` and
`balanceOf`; the user's e-mode category and its parameters; the LST's own rate (weETH `getRate`, wstETH
`stEthPerToken`); AAVE's oracle prices (one `getAssetsPrices`); gas from `eth_feeHistory`. Everything stays an exact
integer as the chain returns it (wei, ray, wad, bps, the oracle's base units); the Decimal views divide exactly.

One batch, one block: the batch opens with the latest block's header and closes with `eth_blockNumber`. When a
block landed in between, the batch is read again pinned to the header's block number, so a snapshot never mixes two
blocks (an HF from one block beside balances from the next would make the reconciler see drift that is not there).
`batched=False` sends the same requests one by one: the figure to compare the batch against.

Failures reach callers as the project's errors, never as web3's or aiohttp's, and never carry the RPC URL (it may
hold a provider's key): the node unreachable or timing out is a `RetryableVenueError`, an answer that cannot be
read (an RPC error, a revert, output that does not decode) is a `VenueBadPayload` (nothing is booked from it).

The ABIs are minimal fragments committed in `daemon/venues/abi/` (the daemon never needs node_modules); they are
the 3.0 line's (`@aave/core-v3` 1.19.3) — v3.2+ replaced `getEModeCategoryData`, see `shared/recipes/aave_anvil.md`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal

import aiohttp
from eth_typing import BlockNumber
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ProviderConnectionError, Web3Exception
from web3.types import BlockParams

from daemon.domain.aave import INFINITY, ReserveParams, index_from_ray, loan_to_value
from daemon.errors import RetryableVenueError, VenueBadPayload

ABI_DIR = Path(__file__).with_name("abi")
MAX_UINT256 = 2**256 - 1
BPS = Decimal(10_000)
LstRateFunction = Literal["getRate", "stEthPerToken"]
# The read every LST exposes for "ETH per token" (the exchange rate the protocol's oracle is built on).
LST_RATE_FUNCTIONS: dict[str, LstRateFunction] = {"weETH": "getRate", "wstETH": "stEthPerToken"}


@cache
def load_abi(name: str) -> list[dict[str, Any]]:
    abi: list[dict[str, Any]] = json.loads((ABI_DIR / f"{name}.json").read_text())
    return abi


def _units(value: int, decimals: int) -> Decimal:
    """An on-chain integer in a unit with `decimals` places, exactly (the string constructor never rounds)."""
    return Decimal(f"{value}e-{decimals}")


# --- what is read --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReserveAddresses:
    symbol: str
    underlying: str
    a_token: str
    variable_debt_token: str
    decimals: int


@dataclass(frozen=True, slots=True)
class ChainAddresses:
    """The market's contracts as the configuration (or the test world's address book) names them."""

    pool: str
    oracle: str
    reserves: tuple[ReserveAddresses, ...]
    lst: str  # the strategy's LST, one of the reserves' symbols
    emode_categories: tuple[int, ...] = (1,)  # read in the same batch; another category costs a second round trip
    base_currency_decimals: int = 8  # AaveOracle BASE_CURRENCY_UNIT = 1e8 (USD) on the markets we use

    def __post_init__(self) -> None:
        symbols = [r.symbol for r in self.reserves]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"reserve symbols repeat: {symbols}")
        if self.lst not in symbols:
            raise ValueError(f"the LST {self.lst!r} is not among the reserves {symbols}")
        if self.lst not in LST_RATE_FUNCTIONS:
            raise ValueError(f"no known rate read for the LST {self.lst!r} (known: {sorted(LST_RATE_FUNCTIONS)})")

    def reserve(self, symbol: str) -> ReserveAddresses:
        for r in self.reserves:
            if r.symbol == symbol:
                return r
        raise KeyError(symbol)


# --- what comes back -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountData:
    """`Pool.getUserAccountData`, as integers: values in the oracle's base currency units, LT and max LTV in bps
    (weighted over the collateral), HF in wad (2**256 − 1 with no debt)."""

    total_collateral_base: int
    total_debt_base: int
    available_borrows_base: int
    liquidation_threshold_bps: int
    max_ltv_bps: int
    health_factor_wad: int
    base_currency_decimals: int

    @property
    def collateral(self) -> Decimal:
        return _units(self.total_collateral_base, self.base_currency_decimals)

    @property
    def debt(self) -> Decimal:
        return _units(self.total_debt_base, self.base_currency_decimals)

    @property
    def available_borrows(self) -> Decimal:
        return _units(self.available_borrows_base, self.base_currency_decimals)

    @property
    def liquidation_threshold(self) -> Decimal:
        return self.liquidation_threshold_bps / BPS

    @property
    def max_ltv(self) -> Decimal:
        """AAVE's `ltv` field: the most the account may borrow against its collateral, not where it is now."""
        return self.max_ltv_bps / BPS

    @property
    def ltv(self) -> Decimal:
        """Where the account is: debt / collateral (0 with no debt)."""
        return loan_to_value(self.collateral, self.debt)

    @property
    def health_factor(self) -> Decimal:
        if self.health_factor_wad == MAX_UINT256:
            return INFINITY
        return _units(self.health_factor_wad, 18)


@dataclass(frozen=True, slots=True)
class ReserveState:
    """One reserve's indexes and rates, in ray. `liquidity_index` / `variable_borrow_index` are the stored ones
    (as of `last_update_timestamp`); `normalized_*` are the live ones this block, which value the balances."""

    symbol: str
    liquidity_index_ray: int
    variable_borrow_index_ray: int
    normalized_income_ray: int
    normalized_variable_debt_ray: int
    liquidity_rate_ray: int
    variable_borrow_rate_ray: int
    last_update_timestamp: int

    @property
    def liquidity_index(self) -> Decimal:
        return index_from_ray(self.normalized_income_ray)

    @property
    def borrow_index(self) -> Decimal:
        return index_from_ray(self.normalized_variable_debt_ray)

    @property
    def liquidity_rate(self) -> Decimal:
        return _units(self.liquidity_rate_ray, 27)

    @property
    def variable_borrow_rate(self) -> Decimal:
        return _units(self.variable_borrow_rate_ray, 27)


@dataclass(frozen=True, slots=True)
class Holding:
    """The wallet's position in one reserve, in the token's smallest unit: free ERC-20, supplied (aToken) and
    borrowed (variable debt), each scaled (constant between actions) and as worth now (`balanceOf`)."""

    symbol: str
    decimals: int
    wallet: int
    a_token_scaled: int
    a_token_balance: int
    variable_debt_scaled: int
    variable_debt_balance: int

    @property
    def free(self) -> Decimal:
        return _units(self.wallet, self.decimals)

    @property
    def supplied(self) -> Decimal:
        return _units(self.a_token_balance, self.decimals)

    @property
    def supplied_scaled(self) -> Decimal:
        return _units(self.a_token_scaled, self.decimals)

    @property
    def borrowed(self) -> Decimal:
        return _units(self.variable_debt_balance, self.decimals)

    @property
    def borrowed_scaled(self) -> Decimal:
        return _units(self.variable_debt_scaled, self.decimals)


@dataclass(frozen=True, slots=True)
class EModeCategory:
    id: int
    ltv_bps: int
    liquidation_threshold_bps: int
    liquidation_bonus_bps: int  # 10100 = a 1 % bonus
    price_source: str  # 0x0: the reserves' own oracle prices
    label: str

    @property
    def params(self) -> ReserveParams:
        return ReserveParams(self.ltv_bps / BPS, self.liquidation_threshold_bps / BPS,
                             (self.liquidation_bonus_bps - 10_000) / BPS)


@dataclass(frozen=True, slots=True)
class Gas:
    """`eth_feeHistory` over the last blocks: base fees (the last one is the next block's) and the priority fees
    paid at the requested percentiles, all in wei."""

    oldest_block: int
    base_fees_wei: tuple[int, ...]
    gas_used_ratios: tuple[float, ...]  # informational only (the node sends floats)
    reward_percentiles: tuple[int, ...]
    rewards_wei: tuple[tuple[int, ...], ...]  # per block, one per percentile

    @property
    def next_base_fee_wei(self) -> int:
        return self.base_fees_wei[-1]

    def priority_fee_wei(self, percentile: int) -> int:
        """The median over the blocks of the priority fee paid at `percentile` (0 with no blocks)."""
        column = self.reward_percentiles.index(percentile)
        paid = sorted(block[column] for block in self.rewards_wei)
        return paid[len(paid) // 2] if paid else 0


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    block_number: int
    block_timestamp: int
    wallet: str
    eth_balance_wei: int
    holdings: Mapping[str, Holding]
    reserves: Mapping[str, ReserveState]
    account: AccountData
    emode_category_id: int
    emode: EModeCategory | None  # None outside e-mode
    lst: str
    lst_rate_wad: int  # ETH per LST, 1e18
    prices_base: Mapping[str, int]  # AAVE oracle, base currency units (1e8 = $1)
    base_currency_decimals: int
    gas: Gas
    round_trips: int  # JSON-RPC round trips this snapshot took

    @property
    def eth_balance(self) -> Decimal:
        return _units(self.eth_balance_wei, 18)

    @property
    def lst_rate(self) -> Decimal:
        return _units(self.lst_rate_wad, 18)

    def price(self, symbol: str) -> Decimal:
        return _units(self.prices_base[symbol], self.base_currency_decimals)

    def oracle_rate(self, symbol: str, quote: str = "WETH") -> Decimal:
        """AAVE's price of `symbol` in `quote` (the LST in ETH: what its collateral is worth per token)."""
        return Decimal(self.prices_base[symbol]) / Decimal(self.prices_base[quote])


# --- the reader ----------------------------------------------------------------------------------------------------

Block = BlockParams | BlockNumber
Read = Callable[[Block], Awaitable[Any]]


class ChainReader:
    """`await reader.read()` → a `ChainSnapshot` of `wallet`. `round_trips` counts every JSON-RPC round trip made."""

    def __init__(self, w3: AsyncWeb3[Any], addresses: ChainAddresses, wallet: str, *, batched: bool = True,
                 fee_history_blocks: int = 10, reward_percentiles: Sequence[int] = (10, 50, 90)) -> None:
        self._w3 = w3
        self._addresses = addresses
        self._wallet = AsyncWeb3.to_checksum_address(wallet)
        self._batched = batched
        self._fee_blocks = fee_history_blocks
        self._percentiles = tuple(reward_percentiles)
        self.round_trips = 0
        contract = w3.eth.contract
        self._pool = contract(address=_checksum(addresses.pool), abi=load_abi("aave_pool"), decode_tuples=True)
        self._oracle = contract(address=_checksum(addresses.oracle), abi=load_abi("aave_oracle"))
        self._erc20: dict[str, AsyncContract] = {}
        self._a_token: dict[str, AsyncContract] = {}
        self._debt_token: dict[str, AsyncContract] = {}
        for r in addresses.reserves:
            self._erc20[r.symbol] = contract(address=_checksum(r.underlying), abi=load_abi("erc20"))
            self._a_token[r.symbol] = contract(address=_checksum(r.a_token), abi=load_abi("aave_scaled_token"))
            self._debt_token[r.symbol] = contract(address=_checksum(r.variable_debt_token),
                                                  abi=load_abi("aave_scaled_token"))
        self._lst = contract(address=_checksum(addresses.reserve(addresses.lst).underlying), abi=load_abi("lst_rate"))
        self._requests = self._reads()  # the same requests every cycle: built once

    @property
    def wallet(self) -> str:
        return self._wallet

    async def read(self, block: int | None = None) -> ChainSnapshot:
        """The snapshot at the latest block, or at `block` (a transaction's effect is the difference between the
        snapshots at its block and the one before; the node must still hold that state: recent blocks do)."""
        before = self.round_trips
        try:
            if block is not None:
                values = await self._run(BlockNumber(block))
                header = values[0]
            else:
                values = await self._run("latest")
                header, last = values[0], values[-1]
                if int(last) != int(header["number"]):  # a block landed mid-batch: read again, pinned to one block
                    values = await self._run(BlockNumber(int(header["number"])))
            snapshot = self._decode(values, self.round_trips - before)
            if snapshot.emode_category_id and snapshot.emode is None:
                category = await self._single(self._emode_read(snapshot.emode_category_id),
                                              BlockNumber(int(header["number"])))
                snapshot = _with_emode(snapshot, _emode(snapshot.emode_category_id, category),
                                       self.round_trips - before)
            return snapshot
        except (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError) as e:
            # str(e) of a connection error names the URL, which may carry a provider's key: the type only.
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"chain read failed: {type(e).__name__}: {_without_urls(str(e))}") from None

    # --- the requests, in a fixed order --------------------------------------------------------------------------

    def _reads(self) -> list[Read]:
        eth, pool, wallet = self._w3.eth, self._pool.functions, self._wallet
        reads: list[Read] = [
            lambda b: eth.get_block(b),
            lambda b: eth.get_balance(wallet, b),
            _call(pool.getUserAccountData(wallet)),
            _call(pool.getUserEMode(wallet)),
        ]
        reads += [self._emode_read(category) for category in self._addresses.emode_categories]
        for r in self._addresses.reserves:
            asset = _checksum(r.underlying)
            a_token, debt_token = self._a_token[r.symbol].functions, self._debt_token[r.symbol].functions
            reads += [
                _call(self._erc20[r.symbol].functions.balanceOf(wallet)),
                _call(a_token.scaledBalanceOf(wallet)),
                _call(a_token.balanceOf(wallet)),
                _call(debt_token.scaledBalanceOf(wallet)),
                _call(debt_token.balanceOf(wallet)),
                _call(pool.getReserveData(asset)),
                _call(pool.getReserveNormalizedIncome(asset)),
                _call(pool.getReserveNormalizedVariableDebt(asset)),
            ]
        assets = [_checksum(r.underlying) for r in self._addresses.reserves]
        reads += [
            _call(getattr(self._lst.functions, LST_RATE_FUNCTIONS[self._addresses.lst])()),
            _call(self._oracle.functions.getAssetsPrices(assets)),
            lambda b: eth.fee_history(self._fee_blocks, b, list(self._percentiles)),
            lambda b: eth.block_number,
        ]
        return reads

    def _emode_read(self, category: int) -> Read:
        return _call(self._pool.functions.getEModeCategoryData(category))

    async def _run(self, block: Block) -> list[Any]:
        reads = self._requests
        if not self._batched:
            values = []
            for read in reads:
                values.append(await read(block))
                self.round_trips += 1
            return values
        async with self._w3.batch_requests() as batch:
            for read in reads:
                batch.add(read(block))
            self.round_trips += 1
            responses = await batch.async_execute()
        return list(responses)

    async def _single(self, read: Read, block: Block) -> Any:
        self.round_trips += 1
        return await read(block)

    # --- decoding ------------------------------------------------------------------------------------------------

    def _decode(self, values: list[Any], round_trips: int) -> ChainSnapshot:
        it = iter(values)
        header, eth_balance, account_raw, emode_id = next(it), next(it), next(it), int(next(it))
        categories = {c: next(it) for c in self._addresses.emode_categories}
        holdings: dict[str, Holding] = {}
        reserves: dict[str, ReserveState] = {}
        for r in self._addresses.reserves:
            wallet, a_scaled, a_balance, d_scaled, d_balance, data, income, debt = (next(it) for _ in range(8))
            holdings[r.symbol] = Holding(r.symbol, r.decimals, int(wallet), int(a_scaled), int(a_balance),
                                         int(d_scaled), int(d_balance))
            reserves[r.symbol] = ReserveState(
                r.symbol, int(data.liquidityIndex), int(data.variableBorrowIndex), int(income), int(debt),
                int(data.currentLiquidityRate), int(data.currentVariableBorrowRate), int(data.lastUpdateTimestamp))
        lst_rate, prices, fee_history, _last_block = next(it), next(it), next(it), next(it)
        base = self._addresses.base_currency_decimals
        account = AccountData(
            total_collateral_base=int(account_raw.totalCollateralBase), total_debt_base=int(account_raw.totalDebtBase),
            available_borrows_base=int(account_raw.availableBorrowsBase),
            liquidation_threshold_bps=int(account_raw.currentLiquidationThreshold), max_ltv_bps=int(account_raw.ltv),
            health_factor_wad=int(account_raw.healthFactor), base_currency_decimals=base)
        return ChainSnapshot(
            block_number=int(header["number"]), block_timestamp=int(header["timestamp"]), wallet=self._wallet,
            eth_balance_wei=int(eth_balance), holdings=holdings, reserves=reserves, account=account,
            emode_category_id=emode_id,
            emode=_emode(emode_id, categories[emode_id]) if emode_id in categories else None,
            lst=self._addresses.lst, lst_rate_wad=int(lst_rate),
            prices_base={r.symbol: int(p) for r, p in zip(self._addresses.reserves, prices, strict=True)},
            base_currency_decimals=base, gas=self._gas(fee_history), round_trips=round_trips)

    def _gas(self, history: Any) -> Gas:
        rewards = tuple(tuple(int(x) for x in block) for block in (history.get("reward") or ()))
        return Gas(int(history["oldestBlock"]), tuple(int(x) for x in history["baseFeePerGas"]),
                   tuple(float(x) for x in history["gasUsedRatio"]), self._percentiles, rewards)


def _call(fn: Any) -> Read:
    """A contract read as a request at a given block (batched: added unsent; unbatched: sent when awaited)."""
    return lambda block: fn.call(block_identifier=block)


def _checksum(address: str) -> Any:
    return AsyncWeb3.to_checksum_address(address)


def _emode(category_id: int, data: Any) -> EModeCategory:
    return EModeCategory(category_id, int(data.ltv), int(data.liquidationThreshold), int(data.liquidationBonus),
                         str(data.priceSource), str(data.label))


def _with_emode(s: ChainSnapshot, emode: EModeCategory, round_trips: int) -> ChainSnapshot:
    return replace(s, emode=emode, round_trips=round_trips)


def _without_urls(text: str) -> str:
    """web3's messages can quote the endpoint; anything that looks like a URL is cut out."""
    return re.sub(r"\b(?:https?|wss?)://\S+", "<rpc>", text)

