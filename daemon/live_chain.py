"""The live run's wallet on chain: the `Web3Chain` adapter, the chain's market data and the liquidation watch, built
from the settings (`chain.*`, the address book, `credentials.rpc_url` / `credentials.wallet_private_key`) and started
before anything trades.

`prepare()` refuses a node on another chain than the config and the book name (nothing is ever signed for the wrong
chain), resolves what the transaction journal says the last run left in flight — every attempt is followed until it
is mined or dropped, so the books open *after* it: its effect is in the balances read, never booked twice, never
lost — deploys the flash-loan executor once if the mode needs one and the book names none (before the opening read:
its gas is in the balances too), and hands the transfer desk every transfer to a venue that a killed run mined and
never handed to it (in transit now: `daemon.live_opening`). `read()` reads the wallet: its balances join the
exchanges' in the books' opening; `begin()` starts the liquidation watch and the chain's market data.

For the whole session, `liquidations()` scans the AAVE Pool's `LiquidationCall` events for the wallet every
`chain.poll_interval_s` (from the block after the last one scanned: the state directory keeps it across restarts),
each booked once as a LIQUIDATION report, on which the positions actor halts trading.

The wallet's transfers to and from the exchanges go through the exchanges' `TransferDesk` (`WalletRails`), which
exists once the live accounts have started: `DeskRails` stands in for it until then.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import structlog
from eth_abi.abi import encode
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.config import ResolvedConfig
from daemon.domain.ledger import WALLET, TokenChange
from daemon.domain.messages import MarketData, VenueReport
from daemon.domain.strategy import ModeSpec
from daemon.errors import FatalVenueError, NonRetryableVenueError, RetryableVenueError, VenueError
from daemon.live_accounts import LiveAccounts
from daemon.state_store import StateStore
from daemon.venues.address_book import AddressBook, load_address_book
from daemon.venues.web3_chain import TRANSFER_LABELS, ChainContracts, ChainPolicy, Web3Chain
from daemon.venues.web3_liquidations import LiquidationWatch
from daemon.venues.web3_market import ChainMarketSource, FixedRateDex
from daemon.venues.web3_reads import ChainReader
from daemon.venues.web3_tx import TxPolicy, TxSender, TxState
from daemon.venues.web3_tx_journal import TxJournal

log = structlog.get_logger()

GWEI = 10**9
LIQUIDATION_STATE_KEY = "chain-liquidations"


class DeskRails:
    """`WalletRails` through the live accounts' transfer desk, which exists once they have started."""

    def __init__(self, accounts: LiveAccounts) -> None:
        self._accounts = accounts

    def _desk(self) -> Any:
        if self._accounts.desk is None:
            raise NonRetryableVenueError("the exchanges' transfer desk is not started yet: no transfer before the "
                                         "accounts are read")
        return self._accounts.desk

    async def deposit_address(self, venue: str, asset: str) -> str:
        address: str = await self._desk().deposit_address(venue, asset)
        return address

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        await self._desk().deposit_sent(venue, asset, amount, tx_hash, ref)

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        received: Decimal = await self._desk().withdraw_to_wallet(venue, asset, amount, address, ref)
        return received


class ThrottledChainSource:
    """The chain's market data at most every `interval_s` (the live feed polls the venues far more often; the chain
    changes once a block). Between reads it adds nothing: the feed re-publishes the chain's last gas to keep market
    time moving, and the chain's own series age as they should."""

    venue = "chain"

    def __init__(self, interval_s: float) -> None:
        self.source: ChainMarketSource | None = None  # set by `LiveChain.start` (its DEX read is probed first)
        self._interval_s = interval_s
        self._last = float("-inf")

    async def poll(self, now_ns: int) -> list[MarketData]:
        if self.source is None or time.monotonic() - self._last < self._interval_s:
            return []
        messages = await self.source.poll(now_ns)
        self._last = time.monotonic()
        return messages

    async def close(self) -> None:
        if self.source is not None:
            await self.source.close()


class LiveChain:
    def __init__(self, config: ResolvedConfig, spec: ModeSpec, clock: Clock, reports: LosslessChannel[VenueReport],
                 accounts: LiveAccounts) -> None:
        s = config.settings
        c = s.chain
        assert c.address_book is not None and s.credentials.rpc_url is not None  # config.py refuses a config without
        assert s.credentials.wallet_private_key is not None and s.runtime.state_dir is not None
        needs = ("USDT",) if spec.share_class == "USDT" or spec.hedged else ()
        self.book: AddressBook = load_address_book(config.path.parent / c.address_book, spec.lst, needs)
        self._settings = c
        self._spec = spec
        self._clock = clock
        self._reports = reports
        self._count = accounts.count  # the run's published reports per account, shared with the exchanges
        self._state = StateStore(s.runtime.state_dir)
        provider = AsyncWeb3.AsyncHTTPProvider(s.credentials.rpc_url.get_secret_value(),
                                               request_kwargs={"timeout": c.rpc_timeout_s})
        self.w3: AsyncWeb3[Any] = AsyncWeb3(provider)
        self.journal = TxJournal(Path(s.runtime.state_dir) / "chain-txs.sqlite")
        self._tx_policy = TxPolicy(max_fee_cap_wei=int(Decimal(str(c.max_fee_gwei)) * GWEI),
                                   priority_fee_percentile=c.priority_fee_percentile, confirmations=c.confirmations,
                                   receipt_timeout_s=c.receipt_timeout_s, stuck_after_s=c.receipt_timeout_s,
                                   poll_interval_s=c.receipt_poll_interval_s,
                                   max_replacements=c.max_replacements)
        self.sender = TxSender(self.w3, s.credentials.wallet_private_key, self._tx_policy, journal=self.journal)
        self.wallet = self.sender.address
        market = self.book.market
        self._contracts = ChainContracts(swap_router=self.book.swap_router, lst_staking=self.book.staking[spec.lst],
                                         executor=self.book.executor)
        self._policy = ChainPolicy(slippage_bps=int(c.slippage_bps), ltv_tolerance=Decimal(str(c.ltv_tolerance)),
                                   min_health_factor=Decimal(str(c.min_health_factor)), deadline_s=int(c.deadline_s),
                                   dex_fee_tier=c.dex_fee_tier, emode_category=self.book.emode_category,
                                   gas_reserve_eth=Decimal(str(config.params.gas_reserve_eth)))
        self._rails = DeskRails(accounts)
        self.chain = Web3Chain(self.w3, self.sender, ChainReader(self.w3, market, self.wallet), market,
                               self._contracts, reports, self._rails, clock, self._policy, count=accounts.count)
        self._market_reader = ChainReader(self.w3, market, self.wallet)
        self.market = ThrottledChainSource(c.poll_interval_s)  # the live feed's chain source, read once started
        self.watch: LiquidationWatch | None = None
        self.opening: tuple[TokenChange, ...] = ()
        self._accounts = accounts
        self._opened_balances: dict[str, str] = {}

    async def start(self) -> None:
        """`prepare`, `read` and `begin` in one (the live world runs them apart, the venues' read beside the
        wallet's: `daemon.live_opening`)."""
        await self.prepare()
        self.opening = await self.read()
        await self.begin()

    async def prepare(self) -> None:
        """The node's chain, what the last run left in flight, the executor, and the wallet's transfers to the
        venues that a killed run never handed to the transfer desk: all before the wallet is read."""
        try:
            node_chain = int(await self.w3.eth.chain_id)
        except Exception as e:  # the URL may carry a key: the type only
            raise FatalVenueError(f"the chain's RPC node does not answer ({type(e).__name__}): check "
                                  "credentials.rpc_url") from None
        expected = self._settings.chain_id
        if node_chain != expected or self.book.chain_id != expected:
            raise FatalVenueError(f"chain ids disagree: the node is on {node_chain}, chain.chain_id is {expected}, "
                                  f"the address book names {self.book.chain_id}: nothing is signed")
        await self._settle_in_flight()
        if self._needs_executor():
            await self._ensure_executor()
        await self._adopt_unfollowed_deposits()

    async def read(self) -> tuple[TokenChange, ...]:
        """The wallet's balances, for the books' opening."""
        wallet = await self.chain.fetch_wallet()
        self._opened_balances = {t: str(a) for t, a in wallet.balances}
        return tuple(TokenChange(WALLET, token, amount) for token, amount in wallet.balances)

    async def mined(self, tx_hash: str) -> bool:
        """Whether the chain holds `tx_hash` mined and successful (a venue's payment to the wallet is in the
        wallet's read only then)."""
        try:
            receipt = await self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        except Exception as e:  # the URL may carry a key: the type only
            raise RetryableVenueError(f"the chain's RPC node did not answer a receipt read ({type(e).__name__})") \
                from None
        return int(receipt["status"]) == 1

    async def begin(self) -> None:
        """Once the books have opened: the liquidation watch and the chain's market data."""
        head = int(await self.w3.eth.block_number)
        saved = self._state.load(LIQUIDATION_STATE_KEY) or {}
        from_block = int(saved.get("last_scanned_block", head)) + 1
        self.watch = LiquidationWatch(self.w3, self.book.market, self.wallet, self._reports, self._clock,
                                      from_block=from_block, confirmations=self._settings.confirmations,
                                      count=self._count)
        self.market.source = ChainMarketSource(self._market_reader, self.book.market, dex=await self._dex(),
                                               w3=self.w3,
                                               priority_fee_percentile=self._settings.priority_fee_percentile)
        log.info("live_chain_opened", wallet=self.wallet, chain_id=self._settings.chain_id, block=head,
                 executor=self.chain.executor, balances=self._opened_balances, liquidations_from_block=from_block)

    async def book_unbooked(self, booked: frozenset[str], since_ns: int) -> int:
        """After a restart whose books come from the journal: every transaction of ours mined since `since_ns` (the
        wall time the journal's books start from) whose report the journal lacks — the run died between its receipt
        and the report, or it was in flight at the kill and mined by `prepare` — booked now, measured at its block.
        How many."""
        booked_lower = {k.lower() for k in booked}
        found = 0
        for sent in self.journal.mined(self._settings.chain_id, self.wallet, since=since_ns / 1e9):
            if f"{self.chain.venue}:{sent.tx_hash}".lower() in booked_lower:
                continue
            if await self.chain.book_recovered(sent):
                found += 1
                log.warning("tx_booked_at_restart", label=sent.label, ref=sent.ref, nonce=sent.nonce,
                            tx_hash=sent.tx_hash, detail="mined in a run that died before its report was journaled: "
                                                         "booked now, measured at its block")
        return found

    async def _adopt_unfollowed_deposits(self) -> None:
        """A transfer to a venue mined in a run killed before the desk carried it (between its receipt and
        `deposit_sent`, or in flight at the kill and mined by `_settle_in_flight`): the wallet's read no longer holds
        it and no venue may have credited it yet — it is in transit, and the desk follows it from here on (else the
        books would open without it, and its credit at the venue would look like a deposit from outside)."""
        desk = self._accounts.desk
        if desk is None:
            return
        found = [(sent, moved) for sent in self.journal.mined(self._settings.chain_id, self.wallet,
                                                                 tuple(TRANSFER_LABELS))
                 if (moved := self.chain.decode_transfer(sent)) is not None and not desk.knows_deposit(sent.tx_hash)]
        if not found:
            return
        addresses: dict[tuple[str, str], str] = {}
        for venue in desk.venues:
            for asset in {m.asset for _, m in found}:
                addresses[(venue, asset)] = (await desk.deposit_address(venue, asset)).lower()
        for sent, moved in found:
            to_venue = next((v for (v, a), addr in addresses.items() if a == moved.asset and addr == moved.to.lower()),
                            None)
            if to_venue is None:
                continue  # to an address that is no venue's (not ours to follow): the wallet's read holds the debit
            desk.adopt_deposit(to_venue, moved.asset, moved.amount, sent.tx_hash, int(sent.sent_at * 1000))

    async def _settle_in_flight(self) -> None:
        """Every transaction the last run left in flight, followed until mined (or found used): the opening read
        after this holds its effect, so it is neither booked again nor lost."""
        for resolution in await self.sender.recover():
            sent = resolution.sent
            if resolution.state in (TxState.PENDING, TxState.DROPPED):
                log.warning("tx_in_flight_at_start", label=sent.label, ref=sent.ref, nonce=sent.nonce,
                            tx_hash=sent.tx_hash, detail="the last run left it in flight: followed until mined "
                                                         "before the books open")
                await self.sender.follow(sent)

    def _needs_executor(self) -> bool:
        return self._spec.borrowing and self._spec.leverage == "atomic"

    async def _ensure_executor(self) -> None:
        """The wallet's FlashLeverage: the book's, or the one this wallet deployed (found at its CREATE2 address),
        or deployed now — on a scratch adapter whose report is dropped, since the opening read comes after it."""
        if self.book.executor is not None:
            code = await self.w3.eth.get_code(AsyncWeb3.to_checksum_address(self.book.executor))
            if not code:
                raise FatalVenueError(f"the address book's FlashLeverage {self.book.executor} has no code on chain "
                                      f"{self._settings.chain_id}")
            return
        scratch: LosslessChannel[VenueReport] = LosslessChannel("executor-deploy", 16)
        deployer = Web3Chain(self.w3, self.sender, ChainReader(self.w3, self.book.market, self.wallet),
                             self.book.market, self._contracts, scratch, self._rails, self._clock,
                             self._policy)
        address = await deployer.deploy_executor("executor-deploy")
        await self.chain.deploy_executor("executor-deploy")  # finds it: sends nothing, and adopts its address
        log.warning("executor_deployed", address=address, owner=self.wallet,
                    detail="the wallet's FlashLeverage executor (CREATE2: the same address on every start); add "
                           "\"FlashLeverage\" to the address book to skip this look-up")

    async def _dex(self) -> FixedRateDex | None:
        """The DEX's own price where it can be read: the test world's fixed-rate router answers `rate(base, quote)`;
        a real router does not (then the DEX tick is the oracle's, said once)."""
        try:
            weth = self.book.reserve("WETH").underlying
            usdt = self.book.reserve("USDT").underlying
        except KeyError:
            return None
        data = AsyncWeb3.keccak(text="rate(address,address)")[:4] + encode(["address", "address"], [weth, usdt])
        probe = {"to": AsyncWeb3.to_checksum_address(self.book.swap_router), "data": data}
        try:
            answer = await self.w3.eth.call(probe)  # type: ignore[arg-type]
        except Exception:  # a router without `rate`: reverts, or answers nothing
            return None
        return FixedRateDex(self.book.swap_router) if len(answer) == 32 and int.from_bytes(answer, "big") else None

    async def liquidations(self) -> None:
        """The wallet's liquidations, scanned every `chain.poll_interval_s` for the whole session."""
        assert self.watch is not None
        while True:
            await anyio.sleep(self._settings.poll_interval_s)
            await self.scan_liquidations()

    async def scan_liquidations(self) -> int:
        if self.watch is None:
            return 0
        try:
            found = await self.watch.scan()
        except VenueError as e:
            log.warning("liquidation_scan_failed", error=str(e), kind=type(e).__name__,
                        last_scanned_block=self.watch.last_scanned_block)
            return 0
        self.chain.liquidations = self.watch.liquidations  # for the metrics' count by venue
        self._state.save(LIQUIDATION_STATE_KEY, {"last_scanned_block": self.watch.last_scanned_block})
        return found

    async def close(self) -> None:
        try:
            await self.w3.provider.disconnect()
        finally:
            self.journal.close()
