"""The chain's market data for the live feed: each poll, one `ChainReader.read()` turned into the replay's
market-data messages (`daemon.domain.messages`), so the positions, risk and strategy actors see the chain exactly
as they see a replayed bar.

One poll gives:
- `OracleRateReported(f"{lst}/ETH")`: **AAVE's oracle price of the LST in WETH**, not the LST's own `getRate` /
  `stEthPerToken`. The health factor AAVE liquidates on values the collateral at its oracle (on mainnet a feed built
  from the LST's rate × ETH/USD, capped and updated on its own schedule, so it can lag or cap the LST's rate); the
  books' HF must be the one AAVE computes, or a liquidation comes as a surprise. The LST's own rate (what a
  redemption pays) is kept beside it as `lst_rate`, with the gap as `oracle_discount`, for the operator.
- `ReserveIndexesReported` per reserve with the live indexes (`getReserveNormalizedIncome` /
  `getReserveNormalizedVariableDebt`, ray / 1e27): the stored ones in `getReserveData` move only when the reserve is
  touched, and the books' scaled balances are worth scaled × the live index.
- `GasPriceReported`: what the next block costs — its base fee plus the tip the sender would add (the median tip
  paid at the 50th percentile over the fee history, with the sender's 0.001 gwei floor: `web3_tx.TxPolicy`), in gwei.
- `PriceTicked("uniswap:Dex:ETHUSDT")`: the pool price a swap executes at before its fee (`MarketBoard.dex_prices`).
  A clean pool read exists for the test world's DEX (`FixedRateDex`: `FixedRateSwapRouter.rate(WETH, USDT)`, the
  price it swaps at less its own fee); a real Uniswap pool would be read from its `slot0` or a quoter, which is not
  written yet. Without a DEX read the tick carries **AAVE's oracle ETH price** instead, and the source says so once
  at start (`dex_price_from_oracle`): swap costs against the reference are then not seen.

Market time: every message is stamped with the wall clock of the poll (`now_ns`), not the block's timestamp. The live
feed's market time is the wall clock (its gas tick keeps the board moving; `MarketBoard.ages_s` measures every series
against the freshest one), and a block timestamp is behind it by up to a slot on mainnet and anywhere after anvil's
time travel: mixed in, it would age every exchange's series (or the chain's) by the difference. The block the values
come from is kept as `snapshot.block_number` / `block_timestamp`.

The snapshot's health factor (AAVE's own) is kept as a reading for the metrics: the latest, and the worst seen with
its time (`daemon.venues.book.worse`, as the simulated chain keeps it; only while there is debt).

Failures are the reader's (`RetryableVenueError` when the node is unreachable, `VenueBadPayload` for an answer that
cannot be read) and end the poll: the live feed degrades the source and logs it once. A DEX read failing after the
snapshot is the DEX's alone: the tick is left out (its series ages), logged once, and the rest is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import structlog
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ProviderConnectionError, Web3Exception

from daemon.domain.ids import InstrumentId
from daemon.domain.messages import (
    GasPriceReported,
    MarketData,
    OracleRateReported,
    PriceTicked,
    ReserveIndexesReported,
)
from daemon.errors import RetryableVenueError, VenueBadPayload
from daemon.failures import describe
from daemon.venues.book import Reading, worse
from daemon.venues.web3_reads import ChainAddresses, ChainReader, ChainSnapshot, _without_urls

log = structlog.get_logger()

DEX_INSTRUMENT = InstrumentId("uniswap:Dex:ETHUSDT")  # the replay's (daemon.replay.feed)
CHAIN_VENUE = "chain"
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError)
# FixedRateSwapRouter's public `rate(tokenIn, tokenOut)` getter (deploy/contracts/artifacts/test/), as compiled.
FIXED_RATE_ABI: list[dict[str, Any]] = [{
    "inputs": [{"internalType": "address", "name": "", "type": "address"},
               {"internalType": "address", "name": "", "type": "address"}],
    "name": "rate", "outputs": [{"internalType": "uint256", "name": "", "type": "uint256"}],
    "stateMutability": "view", "type": "function",
}]


def _gwei(wei: int) -> Decimal:
    return Decimal(f"{wei}e-9")


@dataclass(frozen=True, slots=True)
class FixedRateDex:
    """The test world's DEX (`FixedRateSwapRouter`, Uniswap SwapRouter02's `exactInputSingle` at a set rate): its
    pool price is `rate(WETH, USDT)`, a wad of USDT base units per WETH base unit, before the router's fee."""

    router: str
    base: str = "WETH"
    quote: str = "USDT"


class ChainMarketSource:
    """`await source.poll(now_ns)` → the chain's market-data messages of one `ChainReader.read()`."""

    venue = CHAIN_VENUE

    def __init__(self, reader: ChainReader, addresses: ChainAddresses, *, dex: FixedRateDex | None = None,
                 w3: AsyncWeb3[Any] | None = None, priority_fee_percentile: int = 50,
                 min_priority_fee_wei: int = 10**6) -> None:
        self._reader = reader
        self._addresses = addresses
        self._percentile = priority_fee_percentile
        self._min_tip = min_priority_fee_wei
        self._dex = dex
        self._dex_contract: AsyncContract | None = None
        if dex is not None:
            if w3 is None:
                raise ValueError("a DEX read needs the web3 session (w3=...)")
            self._dex_contract = w3.eth.contract(address=AsyncWeb3.to_checksum_address(dex.router),
                                                 abi=FIXED_RATE_ABI)
            self._dex_pair = (AsyncWeb3.to_checksum_address(addresses.reserve(dex.base).underlying),
                              AsyncWeb3.to_checksum_address(addresses.reserve(dex.quote).underlying))
            self._dex_scale = addresses.reserve(dex.base).decimals - addresses.reserve(dex.quote).decimals - 18
        else:
            log.info("dex_price_from_oracle", reason="no DEX price read configured: the DEX tick is AAVE's oracle "
                     "ETH price, so swap costs against the reference are not seen")
        self._dex_failing = False
        self.snapshot: ChainSnapshot | None = None  # the last one read
        self.health_factor: Reading | None = None  # the latest, with debt
        self.worst_health_factor: Reading | None = None
        self.polls = 0

    @property
    def lst_rate(self) -> Decimal | None:
        """The LST's own rate (ETH per token, weETH `getRate` / wstETH `stEthPerToken`): what a redemption pays."""
        return self.snapshot.lst_rate if self.snapshot is not None else None

    @property
    def oracle_rate(self) -> Decimal | None:
        """AAVE's oracle price of the LST in WETH: what the health factor values the collateral at."""
        return self.snapshot.oracle_rate(self.snapshot.lst) if self.snapshot is not None else None

    @property
    def oracle_discount(self) -> Decimal | None:
        """1 − oracle / own rate: how far AAVE's valuation of the LST is below what it redeems for."""
        s = self.snapshot
        return 1 - s.oracle_rate(s.lst) / s.lst_rate if s is not None and s.lst_rate else None

    def gas_gwei(self, snapshot: ChainSnapshot) -> Decimal:
        """The next block's base fee + the tip the sender would add, in gwei."""
        tip = max(snapshot.gas.priority_fee_wei(self._percentile), self._min_tip)
        return _gwei(snapshot.gas.next_base_fee_wei + tip)

    async def poll(self, now_ns: int) -> list[MarketData]:
        snapshot = await self._reader.read()
        self.snapshot = snapshot
        self.polls += 1
        lst = snapshot.lst
        out: list[MarketData] = [OracleRateReported(f"{lst}/ETH", snapshot.oracle_rate(lst), now_ns, now_ns)]
        out += [ReserveIndexesReported(symbol, r.liquidity_index, r.borrow_index, now_ns, now_ns)
                for symbol, r in snapshot.reserves.items()]
        out.append(GasPriceReported(self.gas_gwei(snapshot), now_ns, now_ns))
        dex = await self._dex_price(snapshot)
        if dex is not None:
            out.append(PriceTicked(DEX_INSTRUMENT, dex, now_ns, now_ns))
        if snapshot.account.total_debt_base:
            self.health_factor = Reading(snapshot.account.health_factor, now_ns)
            self.worst_health_factor = worse(self.worst_health_factor, snapshot.account.health_factor, now_ns)
        return out

    async def close(self) -> None:
        """Nothing to close: the web3 session is the caller's (the reader and the transaction sender share it)."""

    async def _dex_price(self, snapshot: ChainSnapshot) -> Decimal | None:
        if self._dex_contract is None:
            return snapshot.price("WETH")  # no pool read: AAVE's oracle ETH price (said at start)
        try:
            wad = await self._read_dex(snapshot.block_number)
        except (RetryableVenueError, VenueBadPayload) as exc:
            if not self._dex_failing:
                log.warning("dex_price_unavailable", error=describe(exc))
            self._dex_failing = True
            return None
        if self._dex_failing:
            log.info("dex_price_recovered")
        self._dex_failing = False
        return Decimal(wad).scaleb(self._dex_scale)

    async def _read_dex(self, block: int) -> int:
        """The router's rate at the snapshot's block (one more round trip; the reader's batch is fixed)."""
        assert self._dex_contract is not None
        try:
            wad = int(await self._dex_contract.functions.rate(*self._dex_pair).call(block_identifier=block))
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"DEX price read failed: {type(e).__name__}: {_without_urls(str(e))}") from None
        if wad <= 0:
            raise VenueBadPayload(f"the DEX has no {self._dex_label} rate set")
        return wad

    @property
    def _dex_label(self) -> str:
        return f"{self._dex.base}/{self._dex.quote}" if self._dex is not None else ""
