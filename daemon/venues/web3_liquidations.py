"""Liquidations of the wallet's AAVE position, found on chain and booked: the one balance change nobody in the
daemon sent, so nothing else would ever book it.

`LiquidationWatch.scan()` asks the Pool for its `LiquidationCall` events whose indexed `user` is the wallet
(`eth_getLogs`, in block ranges of at most `max_block_range`: providers cap a query's range or its result) from the
block after the last one scanned to the latest. Each is booked as one `BalancesChanged(VenueId("chain"),
report_id=f"{tx_hash}:{log_index}", change=ChangeSet(Reason.LIQUIDATION, ...))` on the venue report channel, where
the positions actor books it and halts trading (`actors.positions`).

What a liquidation changed is measured, not computed from the event: the wallet read at the block before
(`ChainReader.read(block=N-1)`) against the wallet at its block (`read(block=N)`), as the books' tokens
(`web3_wallet.changes_between`: scaled aToken and debt balances, which interest never moves). The event's
`liquidatedCollateralAmount` leaves out AAVE's liquidation protocol fee, which is taken from the user's aTokens too;
the difference has it. Two liquidations in one block cannot be told apart that way: the block's whole difference is
booked once, on the first (by log index); the others are counted but book nothing.

When the node no longer holds those blocks' state (a full node keeps about 128 blocks; a watch restarted after a
long outage asks for older ones), the change booked is the events' own amounts scaled at the latest live indexes:
an estimate (no protocol fee, the indexes moved on) that the reconciler's comparison with the chain corrects, logged
as `liquidation_booked_from_event`, its HF before unknown (NaN). Booked late and approximately beats never booked:
the halt is what matters.

Kept for the metrics, as the simulated chain keeps them: `liquidations` (calls), `liquidation_events`
(`daemon.venues.book.LiquidationEvent`: the HF before, the debt repaid — the event's `debtToCover` — and the loss,
the collateral seized beyond it, both in ETH at the block's oracle prices) and `worst_health_factor` (the HF at the
block before each liquidation, and after it, with the block's time).

Restart: the caller persists `last_scanned_block` (it advances only past whole ranges that were read and booked)
and starts the next watch from the block after it. A range is scanned again only when asked (`scan(from_block=)`)
or after a failure mid-range; what was booked is not booked again (report ids are remembered, and the positions actor
ignores a report id it has booked). The watch scans to the latest block by default: a liquidation must halt trading
at once, and the halt is the safe side of a reorganisation (`confirmations` waits longer where that is wanted).

Failures are the project's errors, without the RPC URL: the node unreachable is a `RetryableVenueError`, an answer
that cannot be read a `VenueBadPayload`; nothing of a failed range is marked scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import Any

import aiohttp
import structlog
from web3 import AsyncWeb3
from web3.exceptions import ProviderConnectionError, Web3Exception
from web3.types import FilterParams

from daemon.bus import LosslessChannel
from daemon.clock import NS_PER_S, Clock
from daemon.domain.ids import VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.errors import RetryableVenueError, VenueBadPayload
from daemon.venues.book import LiquidationEvent, Reading, worse
from daemon.venues.web3_reads import (
    ChainAddresses,
    ChainReader,
    ChainSnapshot,
    ReserveAddresses,
    _units,
    _without_urls,
    load_abi,
)
from daemon.venues.web3_wallet import BOOK_TOKENS, changes_between

log = structlog.get_logger()

CHAIN = VenueId("chain")
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ProviderConnectionError)
ZERO = Decimal(0)
UNKNOWN = Decimal("NaN")  # the HF before a liquidation whose block's state the node no longer holds


@dataclass(frozen=True, slots=True)
class LiquidationLog:
    """One `LiquidationCall` event of the Pool, as integers and checksummed addresses."""

    block_number: int
    tx_hash: str  # 0x-prefixed
    log_index: int
    collateral_asset: str
    debt_asset: str
    debt_to_cover: int  # debt asset base units
    liquidated_collateral: int  # collateral base units, AAVE's protocol fee not included
    liquidator: str
    receive_a_token: bool

    @property
    def report_id(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"


class LiquidationWatch:
    venue = CHAIN

    def __init__(self, w3: AsyncWeb3[Any], addresses: ChainAddresses, wallet: str,
                 reports: LosslessChannel[VenueReport], clock: Clock, *, from_block: int,
                 max_block_range: int = 1_000, confirmations: int = 1, reader: ChainReader | None = None,
                 count: ReportCount | None = None) -> None:
        """`count`: the run's count of published reports per account, shared with the chain adapter (its wallet
        report then counts the liquidations this watch published under the same venue)."""
        if from_block < 1 or max_block_range < 1 or confirmations < 1:
            raise ValueError("from_block, max_block_range and confirmations are at least 1 (a liquidation is "
                             "measured against the block before it)")
        self._w3 = w3
        self._wallet = AsyncWeb3.to_checksum_address(wallet)
        self._reader = reader if reader is not None else ChainReader(w3, addresses, self._wallet)
        if self._reader.wallet != self._wallet:
            raise ValueError("the reader reads another wallet")
        self._reports = reports
        self._clock = clock
        self._range = max_block_range
        self._confirmations = confirmations
        self._pool = w3.eth.contract(address=AsyncWeb3.to_checksum_address(addresses.pool),
                                     abi=load_abi("aave_pool_events"))
        self._event = self._pool.events.LiquidationCall()
        self._symbols: dict[str, ReserveAddresses] = {_checksum(r.underlying): r for r in addresses.reserves}
        self._topics: list[Any] = [self._event.topic, None, None, "0x" + "00" * 12 + self._wallet[2:].lower()]
        self.last_scanned_block = from_block - 1
        self.liquidations = 0
        self.liquidation_events: list[LiquidationEvent] = []
        self.worst_health_factor: Reading | None = None
        self._booked: set[str] = set()
        self._count = count

    async def scan(self, from_block: int | None = None) -> int:
        """Scan from the block after the last one scanned (or from `from_block`) to the latest; book every new
        liquidation of the wallet. Returns how many were newly counted."""
        latest = await self._latest() - (self._confirmations - 1)
        start = self.last_scanned_block + 1 if from_block is None else max(from_block, 1)
        found = 0
        while start <= latest:
            end = min(start + self._range - 1, latest)
            logs = await self._logs(start, end)
            for _, in_block in groupby(logs, key=lambda e: e.block_number):
                found += await self._book_block(list(in_block))
            self.last_scanned_block = max(self.last_scanned_block, end)
            start = end + 1
        return found

    # --- booking -------------------------------------------------------------------------------------------------

    async def _book_block(self, logs: Sequence[LiquidationLog]) -> int:
        """The block's liquidations: its whole difference booked on the first, each counted."""
        new = [e for e in logs if e.report_id not in self._booked]
        if not new:
            return 0
        first = logs[0]
        try:
            before: ChainSnapshot | None = await self._reader.read(block=first.block_number - 1)
            after = await self._reader.read(block=first.block_number)
        except VenueBadPayload as exc:
            # The node no longer holds the state of those blocks (a full node keeps ~128; a restart may keep none):
            # book the events' own amounts rather than never booking — the halt is what matters most.
            log.warning("liquidation_booked_from_event", report=first.report_id, block=first.block_number,
                        error=str(exc))
            before, after = None, await self._reader.read()
        at_ns = NS_PER_S * (after.block_timestamp if before is not None else await self._block_time(first.block_number))
        if first.report_id not in self._booked:  # else the block's difference is in the books already
            now = self._clock.now_ns()
            tokens = changes_between(before, after) if before is not None else _event_changes(logs, after,
                                                                                               self._symbols)
            change = ChangeSet(Reason.LIQUIDATION, now, tokens, ref=first.report_id)
            report = BalancesChanged(self.venue, first.report_id, change, at_ns, now)
            if self._count is not None:
                self._count.count(report)  # before the send: the reconciler waits for it to be booked
            await self._reports.send(report)
        loss = _position_loss_eth(before, after) if before is not None else self._event_loss_eth(logs, after)
        hf_before = before.account.health_factor if before is not None else UNKNOWN
        for entry in new:
            self._booked.add(entry.report_id)
            self.liquidations += 1
            self.liquidation_events.append(LiquidationEvent(
                "aave_v3", at_ns, "health_factor", hf_before,
                self._closed_eth(entry, after), loss if entry is first else ZERO, "ETH"))
        if before is not None:
            self.worst_health_factor = worse(self.worst_health_factor, hf_before, before.block_timestamp * NS_PER_S)
        self.worst_health_factor = worse(self.worst_health_factor, after.account.health_factor,
                                         after.block_timestamp * NS_PER_S)  # the latest block's, if estimated
        return len(new)

    def _event_loss_eth(self, logs: Sequence[LiquidationLog], at: ChainSnapshot) -> Decimal:
        """The collateral the events say was seized beyond the debt repaid (AAVE's protocol fee not in it)."""
        loss = ZERO
        for entry in logs:
            reserve = self._symbols.get(entry.collateral_asset)
            if reserve is not None:
                loss += _units(entry.liquidated_collateral, reserve.decimals) * _in_eth(at, reserve.symbol)
            loss -= self._closed_eth(entry, at)
        return loss

    async def _block_time(self, block: int) -> int:
        try:
            header = await self._w3.eth.get_block(block)
            return int(header["timestamp"])
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"block read failed: {type(e).__name__}: {_without_urls(str(e))}") from None

    def _closed_eth(self, entry: LiquidationLog, at: ChainSnapshot) -> Decimal:
        """The debt the liquidator repaid, in ETH at the block's oracle prices."""
        reserve = self._symbols.get(entry.debt_asset)
        if reserve is None:
            return ZERO  # a debt in a reserve the configuration does not name: the difference still books it
        return _units(entry.debt_to_cover, reserve.decimals) * _in_eth(at, reserve.symbol)

    # --- reads ---------------------------------------------------------------------------------------------------

    async def _latest(self) -> int:
        try:
            return int(await self._w3.eth.block_number)
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"block number read failed: {type(e).__name__}: {_without_urls(str(e))}") from None

    async def _logs(self, start: int, end: int) -> list[LiquidationLog]:
        params: FilterParams = {"address": self._pool.address, "fromBlock": start, "toBlock": end,
                                "topics": self._topics}
        try:
            raw = await self._w3.eth.get_logs(params)
            decoded = [self._event.process_log(entry) for entry in raw]
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"LiquidationCall logs failed: {type(e).__name__}: {_without_urls(str(e))}") from None
        out = []
        for d in decoded:
            args = d["args"]
            if _checksum(args["user"]) != self._wallet:  # the node filtered; trust, but check
                continue
            out.append(LiquidationLog(
                int(d["blockNumber"]), AsyncWeb3.to_hex(d["transactionHash"]), int(d["logIndex"]),
                _checksum(args["collateralAsset"]), _checksum(args["debtAsset"]), int(args["debtToCover"]),
                int(args["liquidatedCollateralAmount"]), _checksum(args["liquidator"]), bool(args["receiveAToken"])))
        return sorted(out, key=lambda e: (e.block_number, e.log_index))


def _event_changes(logs: Sequence[LiquidationLog], at: ChainSnapshot,
                   reserves: dict[str, ReserveAddresses]) -> tuple[TokenChange, ...]:
    """The wallet's change as the events state it, scaled at `at`'s live indexes: an estimate (the indexes have
    moved since, and the protocol fee is not in the event) that the reconciler's comparison with the chain corrects."""
    deltas: dict[str, Decimal] = {}
    for entry in logs:
        collateral, debt = reserves.get(entry.collateral_asset), reserves.get(entry.debt_asset)
        if collateral is not None:
            a_token = BOOK_TOKENS[collateral.symbol][1]
            seized = _units(entry.liquidated_collateral, collateral.decimals)
            deltas[a_token] = deltas.get(a_token, ZERO) - seized / at.reserves[collateral.symbol].liquidity_index
        if debt is not None:
            debt_token = BOOK_TOKENS[debt.symbol][2]
            repaid = _units(entry.debt_to_cover, debt.decimals)
            deltas[debt_token] = deltas.get(debt_token, ZERO) - repaid / at.reserves[debt.symbol].borrow_index
    return tuple(TokenChange(WALLET, token, delta) for token, delta in sorted(deltas.items()) if delta)


def _checksum(address: str) -> str:
    return str(AsyncWeb3.to_checksum_address(address))


def _in_eth(at: ChainSnapshot, symbol: str) -> Decimal:
    return Decimal(at.prices_base[symbol]) / Decimal(at.prices_base["WETH"])


def _position_loss_eth(before: ChainSnapshot, after: ChainSnapshot) -> Decimal:
    """The AAVE position's value lost from one block to the next, in ETH at the later block's indexes and prices:
    the collateral seized beyond the debt repaid (the bonus and AAVE's protocol fee). Scaled balances only, so
    neither interest nor the wallet's free tokens enter it."""
    loss = ZERO
    for symbol, h in after.holdings.items():
        b, r = before.holdings[symbol], after.reserves[symbol]
        supplied = (h.supplied_scaled - b.supplied_scaled) * r.liquidity_index
        borrowed = (h.borrowed_scaled - b.borrowed_scaled) * r.borrow_index
        loss -= (supplied - borrowed) * _in_eth(after, symbol)
    return loss
