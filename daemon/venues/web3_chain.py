"""`Web3Chain`: the `ChainVenue` port on a real chain — the wallet, AAVE v3, staking, a DEX and the FlashLeverage
executor, every operation done with signed transactions through `TxSender`.

Booking is measured, never computed. Each mined transaction is read back as the wallet snapshot at its block and at
the block before (`ChainReader.read(block=...)`), and the difference (`web3_wallet.changes_between`: scaled aToken and
debt balances, native ETH and WETH together as "ETH", the gas included) is reported as one `BalancesChanged` whose
report id is the transaction hash — the same shape the simulated chain reports, so the books, the reconciler and the
strategy do not know which chain they run on. A transfer to an exchange adds the transit leg (`TRANSIT`, +amount)
to the same change set. Helper transactions (approvals, credit delegation, e-mode, wrapping) are booked as
GAS_FEE_PAID: that is all they change in the books. The snapshots assume nothing else moves the wallet in the same
block (our transactions are sent one after another, each waited for); an incoming transfer landing in that block
would be booked with it — the reconciler sees the books right, with the reason of the wrong transaction.

A revert is `TxReverted` (a `VenueRejected` carrying AAVE's error name, the executor's or the DEX's): at estimate
nothing is sent and nothing is booked; a transaction mined reverted has spent its gas, and that gas (only) is booked
as GAS_FEE_PAID before the error propagates, or the books would drift from the chain by it.

Amounts: the port speaks Decimal ETH / tokens; on chain everything is an exact integer, rounded down when a Decimal
has more places than the token. Minimum outputs come from AAVE's oracle (the protocol's own price, not the DEX's)
× (1 − the configured slippage); the atomic operations pass HF and LTV bounds that the executor enforces after the
fact, so a DEX worse than that reverts the whole transaction instead of leaving an unplanned position.

What a real desk needs that is not done here: redemption through the protocols' withdrawal queues (days: refused),
signed grants (`delegationWithSig` / `permit`, one transaction per operation instead of grant + operation), a gas
top-up policy beyond the fixed native reserve kept when wrapping or sending ETH.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3Exception
from web3.types import TxReceipt

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.aave import sequential_loop
from daemon.domain.ids import VenueId
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Reason, TokenChange
from daemon.domain.messages import AccountReport, BalancesChanged, VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.errors import NonRetryableVenueError, RetryableVenueError, VenueBadPayload
from daemon.ports import WalletRails
from daemon.venues import web3_calls as calls
from daemon.venues.web3_reads import MAX_UINT256, ChainAddresses, ChainReader, ChainSnapshot, ReserveAddresses
from daemon.venues.web3_tx import CONNECTION_ERRORS, SentTx, TxCall, TxReverted, TxSender
from daemon.venues.web3_wallet import changes_between, wallet_balances

WAD = 10**18
ZERO = Decimal(0)
ONE = Decimal(1)
BPS = Decimal(10_000)
READ_ATTEMPTS = 3  # reading a mined transaction's effect: a flaky node must not leave it unbooked
ALLOWANCE_HEADROOM_PPM = 1  # on an allowance for "all of it" (repay max, unwind): the balance accrues until mined
WHOLE = Decimal("1e-9")  # a leg within this fraction of the whole position is the whole position
# The labels of the wallet's transfers to an exchange (web3_calls.transfer / send_eth as sent below): a restart looks
# for mined ones the transfer desk never followed (daemon.live_chain).
TRANSFER_USDT_LABEL = "transfer USDT"
TRANSFER_ETH_LABEL = "transfer ETH"
TRANSFER_LABELS = (TRANSFER_USDT_LABEL, TRANSFER_ETH_LABEL)
# ETH sent to an exchange is cut to 8 places: the venues credit and report deposits to 8 (ccxt parses the record's
# amount as a float, and an 18-place amount comes back a hair above what was credited: sweeping it out of OKX's or
# Bybit's funding account then fails for want of 1e-17 ETH). The wei below that are kept in the wallet, not lost.
CEX_ETH_PLACES = Decimal("1e-8")
ERC20_TRANSFER = bytes.fromhex("a9059cbb")  # transfer(address,uint256)


# Why the books changed, by the operation a journaled transaction names (its label's first words, as web3_calls
# labels them): a transaction mined in a run that died before booking it is booked at the restart with it.
REASON_BY_LABEL: tuple[tuple[str, Reason], ...] = (
    ("transfer", Reason.VENUE_TRANSFER), ("supply", Reason.COLLATERAL_SUPPLIED),
    ("withdraw", Reason.COLLATERAL_WITHDRAWN), ("borrow", Reason.LOAN_CREATED), ("repay", Reason.LOAN_REPAID),
    ("swap", Reason.TRADE_EXECUTED), ("stake", Reason.STAKE_DEPOSIT),
    ("atomic entry", Reason.ATOMIC_LEVERAGE_EXECUTION),
    ("atomic unwind", Reason.ATOMIC_DELEVERAGE_EXECUTION),
    ("atomic debt reduction", Reason.ATOMIC_DELEVERAGE_EXECUTION),
)  # anything else (approvals, wrapping, e-mode, the executor's deployment): its gas only


def reason_of(label: str) -> Reason:
    return next((reason for prefix, reason in REASON_BY_LABEL if label.startswith(prefix)), Reason.GAS_FEE_PAID)


@dataclass(frozen=True, slots=True)
class WalletTransfer:
    """What one of the wallet's transfer transactions moved, from its own bytes."""

    asset: str
    to: str
    amount: Decimal
AllowanceMode = Literal["exact", "bounded"]


@dataclass(frozen=True, slots=True)
class ChainPolicy:
    """How the adapter trades on chain. Units are in the names; fractions are plain Decimals (0.002 = 0.2 %)."""

    slippage_bps: int = 50  # min out = oracle value × (1 − this), on every swap
    ltv_tolerance: Decimal = Decimal("0.002")  # atomic operations: LTV bounds = the planned LTV ± this
    min_health_factor: Decimal = Decimal("1.01")  # atomic operations' HF floor; the sequential rounds' too
    deadline_s: int = 600  # the executor's deadline, from the latest block's timestamp
    dex_fee_tier: int = 100  # Uniswap V3 fee tier, in hundredths of a bp (100 = 0.01 %); also the expected swap cost
    allowance_mode: AllowanceMode = "exact"  # "bounded": approve bounded_allowance_multiple × the amount at once
    bounded_allowance_multiple: int = 10
    emode_category: int = 1  # set before the first LST supply if the account is not in it
    gas_reserve_eth: Decimal = Decimal("0.05")  # native ETH never wrapped, staked or sent: the next gas
    debt_reduction_margin_bps: int = 5  # collateral sold beyond (repay + premium) / (1 − fee) in a debt reduction
    max_sequential_rounds: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.slippage_bps < 10_000 or not 0 <= self.debt_reduction_margin_bps < 10_000:
            raise ValueError("slippage_bps and debt_reduction_margin_bps must be in [0, 10000)")
        if not ZERO <= self.ltv_tolerance < ONE or self.min_health_factor < ONE:
            raise ValueError("ltv_tolerance must be in [0, 1) and min_health_factor ≥ 1")
        if self.deadline_s <= 0 or self.bounded_allowance_multiple < 1 or self.gas_reserve_eth < 0:
            raise ValueError("deadline_s > 0, bounded_allowance_multiple ≥ 1, gas_reserve_eth ≥ 0 are required")
        if self.allowance_mode not in ("exact", "bounded"):
            raise ValueError(f"allowance_mode {self.allowance_mode!r} is not 'exact' or 'bounded'")

    @property
    def slippage(self) -> Decimal:
        return Decimal(self.slippage_bps) / BPS

    @property
    def swap_fee(self) -> Decimal:
        return Decimal(self.dex_fee_tier) / Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ChainContracts:
    """The contracts outside AAVE the adapter calls (the configuration names them)."""

    swap_router: str  # Uniswap V3 SwapRouter02 (exactInputSingle)
    lst_staking: str  # weETH: EtherFi's DepositAdapter; wstETH: the wstETH contract (ETH sent to it is staked)
    executor: str | None = None  # FlashLeverage, owned by the wallet (deploy_executor deploys it)


@dataclass(frozen=True, slots=True)
class Mined:
    """One booked transaction: its hash, receipt, the snapshots around it and what was booked."""

    tx_hash: str
    receipt: TxReceipt
    before: ChainSnapshot
    after: ChainSnapshot
    changes: tuple[TokenChange, ...]

    def wallet_delta(self, symbol: str) -> int:
        """The change of the wallet's free ERC-20 `symbol` (WETH alone, not the books' ETH), in its units."""
        return self.after.holdings[symbol].wallet - self.before.holdings[symbol].wallet


@dataclass(slots=True)
class GasRecord:
    label: str
    gas_used: int


class Web3Chain:
    """The `ChainVenue` port over `AsyncWeb3`: see the module docstring."""

    venue = VenueId("chain")

    def __init__(self, w3: AsyncWeb3[Any], sender: TxSender, reader: ChainReader, addresses: ChainAddresses,
                 contracts: ChainContracts, reports: LosslessChannel[VenueReport], rails: WalletRails, clock: Clock,
                 policy: ChainPolicy | None = None, count: ReportCount | None = None) -> None:
        """`count`: the run's count of published reports per account, shared with the liquidation watch and the
        exchanges' adapters: the wallet's account report says how many touching it were published this run (without
        one, how many transactions this adapter booked)."""
        if AsyncWeb3.to_checksum_address(reader.wallet) != AsyncWeb3.to_checksum_address(sender.address):
            raise ValueError("the reader reads another wallet than the sender signs for")
        self._w3 = w3
        self._sender = sender
        self._reader = reader
        self._addresses = addresses
        self._contracts = contracts
        self._reports = reports
        self._rails = rails
        self._clock = clock
        self.policy = policy or ChainPolicy()
        self._wallet = AsyncWeb3.to_checksum_address(sender.address)
        self._lst = addresses.lst
        self._executor = contracts.executor
        self._transactions = 0
        self._count = count
        self.liquidations = 0  # booked by the liquidation watcher, not here
        self._last: ChainSnapshot | None = None
        self._premium_bps: int | None = None
        self.gas: list[GasRecord] = []  # every booked transaction's gas, in order (BENCHMARKS)
        self._lock = asyncio.Lock()  # one operation at a time: each measures the wallet around its own blocks
        # Held from sending a transaction until it is booked: `fetch_wallet` reads under it, so the balances it reports
        # and its `reports_sent` always agree (never a mined transaction's effect before its report).
        self._booking = asyncio.Lock()

    # --- the port's reads ----------------------------------------------------------------------------------------

    @property
    def transactions(self) -> int:
        return self._transactions

    @property
    def wallet(self) -> str:
        return self._wallet

    @property
    def executor(self) -> str | None:
        return self._executor

    @property
    def last_snapshot(self) -> ChainSnapshot | None:
        return self._last

    def oracle_rate(self) -> Decimal:
        """AAVE's oracle price of the LST in ETH, from the last snapshot read (sync: no round trip)."""
        if self._last is None:
            raise NonRetryableVenueError(f"no {self._lst}/ETH oracle rate yet: nothing read from the chain")
        return self._last.oracle_rate(self._lst)

    async def fetch_wallet(self) -> AccountReport:
        async with self._booking:
            snap = await self._snap()
            # Read after the chain answered: a report published meanwhile is waited for, not called a drift.
            sent = self._count.of(WALLET) if self._count is not None else self._transactions
        now = self._clock.now_ns()
        balances = tuple(sorted(wallet_balances(snap).items()))
        return AccountReport(WALLET, balances, (), sent, snap.block_timestamp * 1_000_000_000, now)

    # --- transfers to and from the exchanges ---------------------------------------------------------------------

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None:
        async with self._lock:
            address = await self._rails.deposit_address(venue, "USDT")
            usdt = self._reserve("USDT")
            units = self._units(usdt, amount)
            mined = await self._send(calls.transfer(usdt.underlying, address, units, "USDT"), Reason.VENUE_TRANSFER,
                                     ref, transit=(TokenChange(TRANSIT, "USDT", self._decimal(units, usdt.decimals)),))
        await self._rails.deposit_sent(venue, "USDT", self._decimal(units, usdt.decimals), mined.tx_hash, ref)

    async def transfer_eth_to_cex(self, venue: str, amount_eth: Decimal, ref: str) -> None:
        async with self._lock:
            address = await self._rails.deposit_address(venue, "ETH")
            units = self._wei(amount_eth.quantize(CEX_ETH_PLACES, rounding=ROUND_FLOOR))
            await self._ensure_native(units, ref)
            mined = await self._send(calls.send_eth(address, units, TRANSFER_ETH_LABEL), Reason.VENUE_TRANSFER, ref,
                                     transit=(TokenChange(TRANSIT, "ETH", self._decimal(units, 18)),))
        await self._rails.deposit_sent(venue, "ETH", self._decimal(units, 18), mined.tx_hash, ref)

    def decode_transfer(self, sent: SentTx) -> WalletTransfer | None:
        """The asset, recipient and amount of a transfer this adapter sent to an exchange (`TRANSFER_LABELS`), read
        from the signed call itself; None for any other transaction."""
        if sent.label == TRANSFER_ETH_LABEL and not sent.data and sent.value > 0:
            return WalletTransfer("ETH", sent.to, self._decimal(sent.value, 18))
        usdt = self._reserve("USDT") if sent.label == TRANSFER_USDT_LABEL else None
        if usdt is None or len(sent.data) != 68 or sent.data[:4] != ERC20_TRANSFER \
                or sent.to.lower() != usdt.underlying.lower():
            return None
        to = AsyncWeb3.to_checksum_address(sent.data[16:36])
        return WalletTransfer("USDT", to, self._decimal(int.from_bytes(sent.data[36:68], "big"), usdt.decimals))

    async def book_recovered(self, sent: SentTx) -> bool:
        """Book a transaction of ours that mined in a run which died before its report was journaled (the books a
        restart rebuilds from the journal lack it): measured at its block as `_send` would have (its reason from
        its label, a transfer's transit leg from its bytes), published once under its hash. False if the chain
        has no receipt for it (nothing to book)."""
        try:
            receipt = await self._receipt(sent.tx_hash)
        except TransactionNotFound:
            return False
        moved = self.decode_transfer(sent)
        ok = int(receipt["status"]) == 1
        transit = (TokenChange(TRANSIT, moved.asset, moved.amount),) if ok and moved is not None else ()
        async with self._booking:
            await self._book(receipt, reason_of(sent.label) if ok else Reason.GAS_FEE_PAID, sent.ref, transit,
                             sent.label)
        return True

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal:
        return await self._rails.withdraw_to_wallet(venue, "ETH", amount_eth, self._wallet, ref)

    async def withdraw_usdt_from_cex(self, venue: str, amount: Decimal, ref: str) -> Decimal:
        return await self._rails.withdraw_to_wallet(venue, "USDT", amount, self._wallet, ref)

    # --- staking and swaps ---------------------------------------------------------------------------------------

    async def stake(self, amount_eth: Decimal, ref: str) -> None:
        async with self._lock:
            await self._stake(self._wei(amount_eth), ref)

    async def redeem_lst(self, amount_lst: Decimal, ref: str) -> Decimal:
        raise NonRetryableVenueError(
            f"redeeming {amount_lst} {self._lst} at the protocol's rate goes through its withdrawal queue (EtherFi "
            "and Lido take days to pay out), which this adapter does not follow: swap it on the DEX instead")

    async def swap_lst_to_eth(self, amount_lst: Decimal, ref: str) -> Decimal:
        """Sell the LST for WETH on the DEX; returns the WETH received (the books' ETH, before gas)."""
        async with self._lock:
            lst = self._reserve(self._lst)
            mined = await self._swap(lst, self._reserve("WETH"), self._units(lst, amount_lst), ref)
            return self._decimal(mined.wallet_delta("WETH"), 18)

    async def swap_eth_to_lst(self, amount_eth: Decimal, ref: str) -> Decimal:
        """Buy the LST with WETH (wrapping native ETH if short); returns the LST received."""
        async with self._lock:
            units = self._wei(amount_eth)
            await self._ensure_weth(units, ref)
            lst = self._reserve(self._lst)
            mined = await self._swap(self._reserve("WETH"), lst, units, ref)
            return self._decimal(mined.wallet_delta(self._lst), lst.decimals)

    async def swap_eth_to_usdt(self, amount_eth: Decimal, ref: str) -> None:
        async with self._lock:
            units = self._wei(amount_eth)
            await self._ensure_weth(units, ref)
            await self._swap(self._reserve("WETH"), self._reserve("USDT"), units, ref)

    async def swap_usdt_to_eth(self, amount: Decimal, ref: str) -> Decimal:
        """Buy WETH with USDT; returns the WETH received."""
        async with self._lock:
            usdt = self._reserve("USDT")
            mined = await self._swap(usdt, self._reserve("WETH"), self._units(usdt, amount), ref)
            return self._decimal(mined.wallet_delta("WETH"), 18)

    # --- AAVE: plain Pool calls ----------------------------------------------------------------------------------

    async def supply(self, asset: str, amount: Decimal, ref: str) -> None:
        """Supply `amount` of USDT, WETH (native ETH wrapped as needed) or the LST (in LST tokens)."""
        async with self._lock:
            reserve = self._pool_asset(asset)
            await self._supply(reserve, self._units(reserve, amount), ref)

    async def withdraw(self, asset: str, amount: Decimal, ref: str) -> None:
        """Withdraw `amount` of the asset's value (for the LST: in ETH at the oracle rate, as the strategy values
        collateral); the whole supply when `amount` is all of it."""
        async with self._lock:
            reserve = self._pool_asset(asset)
            if asset == self._lst:
                snap = await self._snap()
                await self._withdraw(reserve, self._units(reserve, amount / snap.oracle_rate(self._lst)), ref, snap)
            else:
                await self._withdraw(reserve, self._units(reserve, amount), ref)

    async def borrow(self, asset: str, amount: Decimal, ref: str) -> None:
        async with self._lock:
            reserve = self._borrowable(asset)
            await self._borrow(reserve, self._units(reserve, amount), ref)

    async def repay(self, asset: str, amount: Decimal | None, ref: str) -> None:
        """Repay `amount` of the variable debt (None, or at least the debt: all of it)."""
        async with self._lock:
            reserve = self._borrowable(asset)
            await self._repay(reserve, None if amount is None else self._units(reserve, amount), ref)

    async def set_user_emode(self, category: int, ref: str) -> None:
        async with self._lock:
            await self._send(calls.set_user_emode(self._addresses.pool, category), Reason.GAS_FEE_PAID, ref)

    # --- the FlashLeverage executor ------------------------------------------------------------------------------

    async def deploy_executor(self, ref: str, salt: bytes = bytes(32)) -> str:
        """Deploys FlashLeverage for this wallet (owner = the wallet) through the CREATE2 factory, or finds the one
        already there (same owner, pool, WETH, router, salt: same address); booked as gas. Returns its address."""
        weth = self._reserve("WETH").underlying
        init = calls.executor_init_code(self._wallet, self._addresses.pool, weth, self._contracts.swap_router)
        address = calls.create2_address(init, salt)
        async with self._lock:
            if not await self._code_at(address):
                if not await self._code_at(calls.CREATE2_FACTORY):
                    raise NonRetryableVenueError("no CREATE2 factory on this chain to deploy the executor with")
                await self._send(calls.create2_deploy(init, salt), Reason.GAS_FEE_PAID, ref)
                if not await self._code_at(address):
                    raise VenueBadPayload(f"the executor deployment did not create code at {address}")
        self._executor = address
        return address

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        """Flash-borrow F WETH with F + premium(F) = `borrow_eth`, buy the LST with equity + F, supply it, borrow
        F + premium: one transaction (after the grants: the WETH equity's approval if any, the exact credit
        delegation). Bounds: the LTV this plans ± the tolerance, HF ≥ the policy's floor."""
        if supply_eth - borrow_eth - equity_eth > Decimal("1e-12") * supply_eth:
            raise NonRetryableVenueError(f"atomic entry does not balance: supply {supply_eth} ≠ equity "
                                         f"{equity_eth} + borrow {borrow_eth}")
        executor = self._need_executor()
        async with self._lock:
            snap = await self._snap()
            await self._ensure_emode(snap, ref)
            bps = await self._flash_premium_bps()
            owed = self._wei(borrow_eth)
            flash = calls.flash_for_borrow(owed, bps)
            owed = flash + calls.flash_premium(flash, bps)
            if flash <= 0:
                raise NonRetryableVenueError(f"atomic entry borrows nothing ({borrow_eth} ETH)")
            equity = self._wei(equity_eth) if equity_eth > 0 else 0
            snap = self._require(self._last)
            native_free = max(0, snap.eth_balance_wei - self._wei(self.policy.gas_reserve_eth))
            value = min(equity, native_free)
            weth_equity = equity - value
            weth = self._reserve("WETH")
            if weth_equity > snap.holdings["WETH"].wallet:
                raise NonRetryableVenueError(f"atomic entry needs {equity_eth} ETH of equity; the wallet has "
                                             f"{self._decimal(native_free + snap.holdings['WETH'].wallet, 18)} "
                                             "(ETH beyond the gas reserve, and WETH)")
            if weth_equity:
                await self._ensure_allowance(weth, executor, weth_equity, ref)
            debt_token = weth.variable_debt_token
            delegated = await self._read_uint(calls.borrow_allowance(debt_token, self._wallet, executor))
            if delegated != owed:  # exactly what this entry borrows: nothing left for the executor afterwards
                await self._send(calls.approve_delegation(debt_token, executor, owed), Reason.GAS_FEE_PAID, ref)
            snap = self._require(self._last)
            collateral, debt = self._account(snap)
            oracle = snap.oracle_rate(self._lst)
            lst = self._reserve(self._lst)
            bought = Decimal(equity + flash) / oracle  # LST units (18 decimals on both sides)
            min_out = _floor(bought * (1 - self.policy.slippage))
            added = self._decimal(equity + flash, 18)
            planned = (debt + self._decimal(owed, 18)) / (collateral + added)
            await self._send(
                calls.flash_enter(executor, lst.underlying, self.policy.dex_fee_tier, weth_equity, flash, min_out,
                                  self._bounds(planned), snap.block_timestamp + self.policy.deadline_s, value),
                Reason.ATOMIC_LEVERAGE_EXECUTION, ref)

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        """Flash-repay `repay_eth` of debt, withdraw `withdraw_eth` of collateral, sell it, repay the flash; the
        WETH left lands in the wallet and is returned. `free_eth` scales both legs as the simulator does (a margin
        top-up's target, at the expected swap cost). The whole position is `unwind`; a part is `reduceDebt`."""
        async with self._lock:
            snap = await self._snap()
            collateral, debt = self._lst_position(snap)
            fee = self.policy.swap_fee
            net = withdraw_eth * (1 - fee) - repay_eth
            if free_eth is not None and free_eth > 0 and net > 0:
                scale = min(free_eth / net, collateral / withdraw_eth,
                            debt / repay_eth if repay_eth > 0 else free_eth / net)
                repay_eth, withdraw_eth = repay_eth * scale, withdraw_eth * scale
            return await self._deleverage(repay_eth, withdraw_eth, ref, snap)

    async def atomic_reduce_debt(self, repay_eth: Decimal, ref: str) -> None:
        """Flash `repay_eth`, repay it, sell just enough collateral for the flash and its premium (plus a small
        margin for the DEX, landing in the wallet): LTV falls, nothing is freed."""
        async with self._lock:
            snap = await self._snap()
            bps = await self._flash_premium_bps()
            repay = self._wei(repay_eth)
            owed = self._decimal(repay + calls.flash_premium(repay, bps), 18)
            margin = 1 + Decimal(self.policy.debt_reduction_margin_bps) / BPS
            await self._deleverage(repay_eth, owed / (1 - self.policy.swap_fee) * margin, ref, snap)

    async def _deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str, snap: ChainSnapshot) -> Decimal:
        executor = self._need_executor()
        lst = self._reserve(self._lst)
        collateral, debt = self._lst_position(snap)
        oracle = snap.oracle_rate(self._lst)
        tier, slippage = self.policy.dex_fee_tier, self.policy.slippage
        a_lst = snap.holdings[self._lst].a_token_balance
        deadline = snap.block_timestamp + self.policy.deadline_s
        if collateral > 0 and withdraw_eth >= collateral * (1 - WHOLE) and repay_eth >= debt * (1 - WHOLE):
            await self._ensure_allowance_for(lst.a_token, executor, _with_headroom(a_lst), ref, f"a{self._lst}")
            min_out = _floor(Decimal(a_lst) * oracle * (1 - slippage))
            mined = await self._send(calls.flash_unwind(executor, lst.underlying, tier, min_out, deadline),
                                     Reason.ATOMIC_DELEVERAGE_EXECUTION, ref)
            return self._decimal(mined.wallet_delta("WETH"), 18)
        sell = min(self._units(lst, withdraw_eth / oracle), a_lst)
        if sell <= 0:
            raise NonRetryableVenueError(f"deleverage withdraws nothing ({withdraw_eth} ETH of collateral)")
        repay = self._wei(repay_eth) if repay_eth > 0 else 0
        if repay >= snap.holdings["WETH"].variable_debt_balance * (1 - WHOLE):
            repay = MAX_UINT256  # all of it: the executor repays the debt it reads in its own block
        await self._ensure_allowance_for(lst.a_token, executor, sell, ref, f"a{self._lst}")
        min_out = _floor(Decimal(sell) * oracle * (1 - slippage))
        left_collateral = collateral - withdraw_eth
        left_debt = max(ZERO, debt - repay_eth) if repay != MAX_UINT256 else ZERO
        account_collateral, account_debt = self._account(snap)
        other = account_collateral - collateral  # the rest of the account (other collateral) stays as it is
        denominator = left_collateral + other
        planned = (account_debt - debt + left_debt) / denominator if denominator > 0 else ZERO
        mined = await self._send(
            calls.flash_reduce_debt(executor, lst.underlying, tier, repay, sell, sell, min_out, self._bounds(planned),
                                    deadline), Reason.ATOMIC_DELEVERAGE_EXECUTION, ref)
        return self._decimal(mined.wallet_delta("WETH"), 18)

    # --- the sequential loop (plain Pool calls, one transaction per step) -----------------------------------------

    async def sequential_leverage_entry(self, equity_eth: Decimal, target_ltv: Decimal, min_borrow_eth: Decimal,
                                        max_iterations: int | None, ref: str) -> int:
        """Stake, supply, borrow λ × the supply, and again with the borrowed WETH (unwrapped and staked), until the
        next borrow would be below `min_borrow_eth`. Returns the transactions sent (grants and wrapping included)."""
        plan = sequential_loop(equity_eth, target_ltv, min_borrow_eth, max_iterations)
        async with self._lock:
            first = self._transactions
            lst, weth = self._reserve(self._lst), self._reserve("WETH")
            for step in plan.iterations:
                tag = f"{ref}/{step.index}"
                mined = await self._stake(self._wei(step.supplied), tag)
                await self._supply(lst, mined.wallet_delta(self._lst), tag)
                if step.borrowed > 0:
                    await self._borrow(weth, self._wei(step.borrowed), tag)
            return self._transactions - first

    async def sequential_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                    redeem: bool = False) -> Decimal:
        """Withdraw what keeps HF ≥ the policy's floor, sell it on the DEX, repay with it; again until `repay_eth`
        is repaid, then withdraw the rest of `withdraw_eth`. Returns the WETH left in the wallet."""
        if redeem:
            await self.redeem_lst(withdraw_eth, ref)  # refuses, naming why
        async with self._lock:
            lst, weth = self._reserve(self._lst), self._reserve("WETH")
            to_repay, to_withdraw, freed = repay_eth, withdraw_eth, ZERO
            for round_ in range(1, self.policy.max_sequential_rounds + 1):
                if to_withdraw <= 0:
                    return freed
                snap = await self._snap()
                collateral, debt = self._lst_position(snap)
                threshold = snap.account.liquidation_threshold
                room = collateral - debt * self.policy.min_health_factor / threshold if debt > 0 else collateral
                w = min(to_withdraw, room)
                if w <= 0:
                    hf = snap.account.health_factor
                    raise NonRetryableVenueError(f"sequential deleverage is stuck at HF {hf:.4f}"
                                                 f": no collateral can be withdrawn keeping HF ≥ "
                                                 f"{self.policy.min_health_factor}")
                tag = f"{ref}/{round_}"
                held = snap.holdings[self._lst].a_token_balance
                # the whole collateral when that is what is left to withdraw (no dust of rounding or interest)
                units = held if w >= collateral * (1 - WHOLE) else _floor((w / snap.oracle_rate(self._lst)).scaleb(18))
                if units <= 0:
                    return freed  # less than one unit of the LST is left to withdraw: done
                out = await self._withdraw(lst, units, tag, snap)
                sold = await self._swap(lst, weth, out.wallet_delta(self._lst), tag)
                eth = self._decimal(sold.wallet_delta("WETH"), 18)
                to_withdraw -= w
                repay = min(eth, to_repay, debt)
                if repay > 0:
                    # all of it when that is what is left: interest since the caller sized `repay_eth` leaves dust
                    whole = repay >= debt * (1 - WHOLE)
                    await self._repay(weth, None if whole else self._wei(repay), tag)
                    to_repay -= repay
                freed += eth - repay
                if to_repay > 0 and to_withdraw <= 0:
                    to_withdraw = to_repay  # the swaps cost more than planned: withdraw enough to finish
            raise NonRetryableVenueError(f"sequential deleverage did not finish in {self.policy.max_sequential_rounds}"
                                         f" rounds ({to_repay} ETH of debt still to repay)")

    # --- operations without the lock (callers hold it) -----------------------------------------------------------

    async def _stake(self, units: int, ref: str) -> Mined:
        if units <= 0:
            raise NonRetryableVenueError("stake of nothing")
        await self._ensure_native(units, ref)
        return await self._send(calls.stake_call(self._lst, self._contracts.lst_staking, units), Reason.STAKE_DEPOSIT,
                                ref)

    async def _supply(self, reserve: ReserveAddresses, units: int, ref: str) -> Mined:
        snap = await self._snap()
        if reserve.symbol == self._lst:
            await self._ensure_emode(snap, ref)
        if reserve.symbol == "WETH":
            await self._ensure_weth(units, ref)
        await self._ensure_allowance(reserve, self._addresses.pool, units, ref)
        return await self._send(calls.supply(self._addresses.pool, reserve.underlying, units, self._wallet,
                                             reserve.symbol), Reason.COLLATERAL_SUPPLIED, ref)

    async def _withdraw(self, reserve: ReserveAddresses, units: int, ref: str,
                        snap: ChainSnapshot | None = None) -> Mined:
        snap = snap or await self._snap()
        held = snap.holdings[reserve.symbol].a_token_balance
        amount = MAX_UINT256 if held > 0 and units >= held - 1 else units  # all of it: no dust of interest left
        return await self._send(calls.withdraw(self._addresses.pool, reserve.underlying, amount, self._wallet,
                                               reserve.symbol), Reason.COLLATERAL_WITHDRAWN, ref)

    async def _borrow(self, reserve: ReserveAddresses, units: int, ref: str) -> Mined:
        return await self._send(calls.borrow(self._addresses.pool, reserve.underlying, units, self._wallet,
                                             reserve.symbol), Reason.LOAN_CREATED, ref)

    async def _repay(self, reserve: ReserveAddresses, units: int | None, ref: str) -> Mined:
        snap = await self._snap()
        debt = snap.holdings[reserve.symbol].variable_debt_balance
        if debt == 0:
            raise NonRetryableVenueError(f"no {reserve.symbol} debt to repay")
        if units is None or units >= debt:
            amount, needed = MAX_UINT256, _with_headroom(debt)  # all of it, as it stands in the block that mines it
        else:
            amount, needed = units, units
        if reserve.symbol == "WETH":
            await self._ensure_weth(needed, ref)
        await self._ensure_allowance(reserve, self._addresses.pool, needed, ref)
        return await self._send(calls.repay(self._addresses.pool, reserve.underlying, amount, self._wallet,
                                            reserve.symbol), Reason.LOAN_REPAID, ref)

    async def _swap(self, token_in: ReserveAddresses, token_out: ReserveAddresses, units_in: int, ref: str) -> Mined:
        """`exactInputSingle` with min out = the oracle's value × (1 − slippage)."""
        if units_in <= 0:
            raise NonRetryableVenueError(f"swap of no {token_in.symbol}")
        snap = await self._snap()  # this block's oracle, not the last operation's
        rate = Decimal(snap.prices_base[token_in.symbol]) / Decimal(snap.prices_base[token_out.symbol])
        expected = Decimal(units_in) * rate * Decimal(10) ** (token_out.decimals - token_in.decimals)
        min_out = _floor(expected * (1 - self.policy.slippage))
        router = self._contracts.swap_router
        await self._ensure_allowance(token_in, router, units_in, ref)
        call = calls.exact_input_single(router, token_in.underlying, token_out.underlying, self.policy.dex_fee_tier,
                                        self._wallet, units_in, min_out, f"swap {token_in.symbol}→{token_out.symbol}")
        return await self._send(call, Reason.TRADE_EXECUTED, ref)

    # --- grants, wrapping, e-mode --------------------------------------------------------------------------------

    async def _ensure_allowance(self, reserve: ReserveAddresses, spender: str, units: int, ref: str) -> None:
        await self._ensure_allowance_for(reserve.underlying, spender, units, ref, reserve.symbol)

    async def _ensure_allowance_for(self, token: str, spender: str, units: int, ref: str, symbol: str) -> None:
        current = await self._read_uint(calls.allowance(token, self._wallet, spender))
        if current >= units:
            return
        target = units if self.policy.allowance_mode == "exact" else units * self.policy.bounded_allowance_multiple
        if current > 0 and symbol == "USDT":  # mainnet USDT refuses to move an allowance from non-zero to non-zero
            await self._send(calls.approve(token, spender, 0, symbol), Reason.GAS_FEE_PAID, ref)
        await self._send(calls.approve(token, spender, target, symbol), Reason.GAS_FEE_PAID, ref)

    async def _ensure_weth(self, units: int, ref: str) -> None:
        """At least `units` WETH in the wallet: native ETH (beyond the gas reserve) wrapped for the shortfall."""
        snap = await self._snap()
        weth = snap.holdings["WETH"].wallet
        if weth >= units:
            return
        short = units - weth
        spare = snap.eth_balance_wei - self._wei(self.policy.gas_reserve_eth)
        if spare < short:
            raise NonRetryableVenueError(f"the wallet holds {self._decimal(weth, 18)} WETH and "
                                         f"{snap.eth_balance} ETH: not {self._decimal(units, 18)} WETH while keeping "
                                         f"{self.policy.gas_reserve_eth} ETH for gas")
        await self._send(calls.wrap(self._reserve("WETH").underlying, short), Reason.GAS_FEE_PAID, ref)

    async def _ensure_native(self, units: int, ref: str) -> None:
        """At least `units` native ETH beyond the gas reserve: WETH unwrapped for the shortfall."""
        snap = await self._snap()
        reserve = self._wei(self.policy.gas_reserve_eth)
        short = units + reserve - snap.eth_balance_wei
        if short <= 0:
            return
        weth = snap.holdings["WETH"].wallet
        if weth < short:
            raise NonRetryableVenueError(f"the wallet holds {snap.eth_balance} ETH and {self._decimal(weth, 18)} "
                                         f"WETH: not {self._decimal(units, 18)} ETH while keeping "
                                         f"{self.policy.gas_reserve_eth} ETH for gas")
        await self._send(calls.unwrap(self._reserve("WETH").underlying, short), Reason.GAS_FEE_PAID, ref)

    async def _ensure_emode(self, snap: ChainSnapshot, ref: str) -> None:
        if snap.emode_category_id != self.policy.emode_category:
            await self._send(calls.set_user_emode(self._addresses.pool, self.policy.emode_category),
                             Reason.GAS_FEE_PAID, ref)

    async def _flash_premium_bps(self) -> int:
        if self._premium_bps is None:
            self._premium_bps = await self._read_uint(calls.flash_premium_total(self._addresses.pool))
        return self._premium_bps

    # --- sending and booking -------------------------------------------------------------------------------------

    async def _send(self, call: TxCall, reason: Reason, ref: str, transit: Sequence[TokenChange] = ()) -> Mined:
        """Send, wait, measure, book: one `BalancesChanged` per mined transaction."""
        call = replace(call, ref=ref)  # journaled with the sender's record: a recovered transaction names its operation
        async with self._booking:
            try:
                receipt = await self._sender.transact(call)
            except TxReverted as e:  # named by the shared table (web3_reverts: AAVE's, the executor's, the DEX's)
                if e.tx_hash is not None:  # mined reverted: only its gas moved, and that is booked
                    receipt = await self._receipt(e.tx_hash)
                    await self._book(receipt, Reason.GAS_FEE_PAID, ref, (), call.label)
                raise
            return await self._book(receipt, reason, ref, transit, call.label)

    async def _book(self, receipt: TxReceipt, reason: Reason, ref: str, transit: Sequence[TokenChange],
                    label: str) -> Mined:
        block = int(receipt["blockNumber"])
        before = await self._read_at(block - 1)
        after = await self._read_at(block)
        self._last = after
        changes = (*changes_between(before, after), *transit)
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        self.gas.append(GasRecord(label, int(receipt["gasUsed"])))
        self._transactions += 1
        now = self._clock.now_ns()
        report = BalancesChanged(self.venue, tx_hash, ChangeSet(reason, now, changes, ref=ref),
                                 after.block_timestamp * 1_000_000_000, now)
        if self._count is not None:
            self._count.count(report)
        await self._reports.send(report)
        return Mined(tx_hash, receipt, before, after, changes)

    async def _read_at(self, block: int) -> ChainSnapshot:
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return await self._reader.read(block=block)
            except RetryableVenueError:
                if attempt == READ_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    async def _snap(self) -> ChainSnapshot:
        self._last = await self._reader.read()
        return self._last

    async def _receipt(self, tx_hash: str) -> TxReceipt:
        try:
            receipt: TxReceipt = await self._w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        return receipt

    async def _read_uint(self, call: TxCall) -> int:
        data = await self._eth_call(call)
        return int.from_bytes(data[:32], "big")

    async def _eth_call(self, call: TxCall) -> bytes:
        try:
            out = await self._w3.eth.call({"to": AsyncWeb3.to_checksum_address(call.to), "data": call.data})
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        except Web3Exception as e:
            raise VenueBadPayload(f"chain read {call.label} failed ({type(e).__name__})") from None
        if len(out) < 32:
            raise VenueBadPayload(f"chain read {call.label} returned {len(out)} bytes")
        return bytes(out)

    async def _code_at(self, address: str) -> bool:
        try:
            code = await self._w3.eth.get_code(AsyncWeb3.to_checksum_address(address))
        except CONNECTION_ERRORS as e:
            raise RetryableVenueError(f"chain RPC unreachable ({type(e).__name__})") from None
        return len(code) > 0

    # --- helpers -------------------------------------------------------------------------------------------------

    def _reserve(self, symbol: str) -> ReserveAddresses:
        try:
            return self._addresses.reserve(symbol)
        except KeyError:
            raise NonRetryableVenueError(f"no reserve {symbol!r} in the chain's configuration") from None

    def _pool_asset(self, asset: str) -> ReserveAddresses:
        if asset not in ("USDT", "WETH", self._lst):
            raise NonRetryableVenueError(f"supply / withdraw of {asset!r}: only USDT, WETH and {self._lst}")
        return self._reserve(asset)

    def _borrowable(self, asset: str) -> ReserveAddresses:
        if asset not in ("WETH", "USDT"):
            raise NonRetryableVenueError(f"borrow / repay of {asset!r}: only WETH and USDT")
        return self._reserve(asset)

    def _need_executor(self) -> str:
        if self._executor is None:
            raise NonRetryableVenueError("no FlashLeverage executor configured or deployed (deploy_executor)")
        return self._executor

    @staticmethod
    def _require(snap: ChainSnapshot | None) -> ChainSnapshot:
        if snap is None:
            raise NonRetryableVenueError("nothing read from the chain yet")
        return snap

    def _account(self, snap: ChainSnapshot) -> tuple[Decimal, Decimal]:
        """The whole AAVE account's (collateral, debt) in ETH, from AAVE's own account data and the WETH price."""
        weth = Decimal(snap.prices_base["WETH"])
        return (Decimal(snap.account.total_collateral_base) / weth, Decimal(snap.account.total_debt_base) / weth)

    def _lst_position(self, snap: ChainSnapshot) -> tuple[Decimal, Decimal]:
        """(LST collateral, WETH debt) in ETH: aLST balance × the oracle rate, the WETH debt balance."""
        h = snap.holdings
        return (self._decimal(h[self._lst].a_token_balance, h[self._lst].decimals) * snap.oracle_rate(self._lst),
                self._decimal(h["WETH"].variable_debt_balance, 18))

    def _bounds(self, planned_ltv: Decimal) -> calls.Bounds:
        tol = self.policy.ltv_tolerance
        return calls.Bounds(_floor(self.policy.min_health_factor * WAD), max(0, _floor((planned_ltv - tol) * WAD)),
                            _ceil((planned_ltv + tol) * WAD))

    @staticmethod
    def _units(reserve: ReserveAddresses, amount: Decimal) -> int:
        units = _floor(amount.scaleb(reserve.decimals))
        if units <= 0:
            raise NonRetryableVenueError(f"{amount} {reserve.symbol} is less than one unit")
        return units

    @staticmethod
    def _wei(amount_eth: Decimal) -> int:
        return _floor(amount_eth.scaleb(18))

    @staticmethod
    def _decimal(units: int, decimals: int) -> Decimal:
        return Decimal(f"{units}e-{decimals}")


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_FLOOR))


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_CEILING))


def _with_headroom(units: int) -> int:
    """An allowance for "all of" a balance that accrues until the transaction is mined: + 1 ppm + 1 unit."""
    return units + units * ALLOWANCE_HEADROOM_PPM // 1_000_000 + 1
