"""The live chain adapter (`daemon/venues/web3_chain.py`, the `ChainVenue` port) on the real AAVE v3 market on anvil.

Every operation is sent as signed transactions from a dev account (`TxSender`, anvil's public test key) through the
world's real Pool, its rated LSTs, its DEX and the committed FlashLeverage executor (deployed by the adapter itself).
What the adapter books is applied to a real `Ledger`; after each operation the ledger's wallet must equal the chain's
wallet as the reconciler reads it (`wallet_balances` of a fresh snapshot), to the wei: the booking is measured, and
this is what proves it. Gas used per operation is printed (`-s`) beside the simulator's `GAS_UNITS` for BENCHMARKS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from web3 import AsyncWeb3

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.aave import AaveAccount, account_value, sequential_loop
from daemon.domain.ledger import TRANSIT, WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, VenueReport
from daemon.errors import NonRetryableVenueError
from daemon.venues import web3_calls as calls
from daemon.venues.simulated_chain import GAS_UNITS
from daemon.venues.web3_chain import ChainPolicy, Web3Chain
from daemon.venues.web3_reads import ChainReader, ChainSnapshot
from daemon.venues.web3_tx import TxPolicy, TxReverted, TxSender
from daemon.venues.web3_wallet import wallet_balances
from tests.fakes.chain.chain import AaveChain, chain_addresses, chain_contracts, dev_key

pytestmark = [pytest.mark.anvil, pytest.mark.asyncio]

USER = 1  # the wallet: anvil dev account 1 (10 000 ETH)
DEPOSIT_ACCOUNT = 5  # the exchanges' deposit address in the fake rails
WAD = 10**18
GWEI = 10**9
TX_POLICY = TxPolicy(max_fee_cap_wei=500 * GWEI, poll_interval_s=0.01, receipt_timeout_s=30)
GAS: dict[str, tuple[str, list[int]]] = {}  # operation -> gas used by each of its transactions (grants included)


@dataclass
class FakeRails:
    """The exchanges' side of the transfers: a deposit address (an anvil account) and a record of the calls."""

    address: str
    deposits: list[tuple[str, str, Decimal, str, str]] = field(default_factory=list)
    withdrawals: list[tuple[str, str, Decimal, str, str]] = field(default_factory=list)

    async def deposit_address(self, venue: str, asset: str) -> str:
        return self.address

    async def deposit_sent(self, venue: str, asset: str, amount: Decimal, tx_hash: str, ref: str) -> None:
        self.deposits.append((venue, asset, amount, tx_hash, ref))

    async def withdraw_to_wallet(self, venue: str, asset: str, amount: Decimal, address: str, ref: str) -> Decimal:
        self.withdrawals.append((venue, asset, amount, address, ref))
        return amount


@dataclass
class Rig:
    chain: AaveChain
    adapter: Web3Chain
    reports: LosslessChannel[VenueReport]
    rails: FakeRails
    ledger: Ledger
    owner: str
    booked: list[BalancesChanged] = field(default_factory=list)

    def drain(self) -> list[BalancesChanged]:
        """The reports sent since the last drain, applied to the ledger in order."""
        new: list[BalancesChanged] = []
        while len(self.reports):
            report = self.reports.receive_nowait()
            assert isinstance(report, BalancesChanged)
            self.ledger.apply(report.change)
            new.append(report)
        self.booked += new
        return new

    async def assert_books_match_chain(self) -> None:
        """The ledger's wallet (from the booked reports alone) equals the chain's, every token, to the wei."""
        self.drain()
        chain = dict((await self.adapter.fetch_wallet()).balances)
        books = {t: v for (a, t, v) in self.ledger.snapshot().balances if a == WALLET}
        assert books == chain

    def record_gas(self, operation: str, since: int, simulated: str = "") -> list[int]:
        """The gas of the transactions sent since `since`, under `operation` (beside the simulator's GAS_UNITS key)."""
        used = [g.gas_used for g in self.adapter.gas[since:]]
        GAS[operation] = (simulated, used)
        return used


@pytest.fixture(scope="module", autouse=True)
def _print_gas() -> Iterator[None]:
    yield
    if GAS:
        print("\nWeb3Chain gas used per operation (anvil, real AAVE v3 1.19.3; each transaction, grants included)")
        print(f"  {'operation':52s} {'total':>9s}  {'simulator GAS_UNITS':26s} transactions")
        for op, (key, used) in GAS.items():
            sim = f"{key} {GAS_UNITS[key]:,}" if key else ""
            print(f"  {op:52s} {sum(used):>9,}  {sim:26s} {', '.join(f'{g:,}' for g in used)}")


def _adapter(chain: AaveChain, lst: str = "weETH", policy: ChainPolicy | None = None,
             ) -> tuple[Web3Chain, LosslessChannel[VenueReport], FakeRails]:
    owner = AsyncWeb3.to_checksum_address(chain.accounts[USER])
    w3 = AsyncWeb3(AsyncWeb3.AsyncHTTPProvider(chain.url, request_kwargs={"timeout": 30}))
    OPEN.append(w3)
    addresses = chain_addresses(chain.book, lst)
    reader = ChainReader(w3, addresses, owner)
    sender = TxSender(w3, dev_key(USER), TX_POLICY)
    contracts = chain_contracts(chain.book, lst)
    reports: LosslessChannel[VenueReport] = LosslessChannel("chain reports", 1_000)
    rails = FakeRails(AsyncWeb3.to_checksum_address(chain.accounts[DEPOSIT_ACCOUNT]))
    return Web3Chain(w3, sender, reader, addresses, contracts, reports, rails, WallClock(), policy), reports, rails


async def _rig(chain: AaveChain, lst: str = "weETH", policy: ChainPolicy | None = None) -> Rig:
    owner = AsyncWeb3.to_checksum_address(chain.accounts[USER])
    adapter, reports, rails = _adapter(chain, lst, policy)
    ledger = Ledger(())
    start = await adapter.fetch_wallet()
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(WALLET, t, v) for t, v in start.balances)))
    return Rig(chain, adapter, reports, rails, ledger, owner)


OPEN: list[AsyncWeb3[Any]] = []


@pytest_asyncio.fixture
async def rig(aave_chain: AaveChain) -> AsyncIterator[Rig]:
    yield await _rig(aave_chain)
    while OPEN:
        await OPEN.pop().provider.disconnect()


async def _account(rig: Rig) -> tuple[Decimal, Decimal, Decimal]:
    """(LTV, HF, debt in ETH) as AAVE's getUserAccountData has them."""
    d = await rig.chain.pool.functions.getUserAccountData(rig.owner).call()
    collateral, debt, hf = Decimal(d[0]), Decimal(d[1]), Decimal(d[5]) / WAD
    weth_price = Decimal(await rig.chain.contract("AaveOracle", rig.chain.book["AaveOracle"]).functions
                         .getAssetPrice(rig.chain.reserve("WETH")["underlying"]).call())
    return (debt / collateral if collateral else Decimal(0)), hf, debt / weth_price


async def _deposit_usdt(rig: Rig, amount: int) -> None:
    """USDT arriving from outside (minted by the admin, so the wallet pays no gas), booked as a deposit."""
    mint = rig.chain.token("USDT").get_function_by_signature("mint(address,uint256)")
    await rig.chain.send(mint(rig.owner, amount * 10**6), rig.chain.book["admin"])
    rig.ledger.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "USDT", Decimal(amount)),)))
    await rig.assert_books_match_chain()


async def _assert_ledger_math_is_aaves(rig: Rig) -> ChainSnapshot:
    """HF and LTV from the ledger's booked scaled balances × the live indexes × AAVE's oracle equal AAVE's own
    `getUserAccountData` to 1e-9; returns the snapshot they were compared on."""
    await rig.adapter.fetch_wallet()
    snap = rig.adapter.last_snapshot
    assert snap is not None and snap.emode is not None
    value = account_value(
        AaveAccount(rig.ledger.balance(WALLET, "aWeETH"), rig.ledger.balance(WALLET, "variableDebtWETH")),
        snap.reserves["weETH"].liquidity_index, snap.reserves["WETH"].borrow_index, snap.oracle_rate("weETH"))
    hf = value.health_factor(snap.emode.params.liquidation_threshold)
    assert abs(hf / snap.account.health_factor - 1) < Decimal("1e-9")
    assert abs(value.ltv / snap.account.ltv - 1) < Decimal("1e-9")
    return snap


def _leveraged(equity: Decimal, ltv: Decimal) -> tuple[Decimal, Decimal]:
    """(supply, borrow) in ETH for equity at `ltv`: borrow = λ/(1 − λ) × equity."""
    borrow = equity * ltv / (1 - ltv)
    return equity + borrow, borrow


# --- plain Pool calls -------------------------------------------------------------------------------------------


async def test_supply_borrow_repay_withdraw_book_exactly_what_the_chain_shows(rig: Rig) -> None:
    await _deposit_usdt(rig, 5_000)

    n = len(rig.adapter.gas)
    await rig.adapter.supply("WETH", Decimal(5), "s1")  # wraps native ETH, approves the Pool, supplies
    rig.record_gas("supply WETH (wrap + approve + supply)", n, "SUPPLY")
    reports = rig.drain()
    assert [r.change.reason for r in reports] == [Reason.GAS_FEE_PAID, Reason.GAS_FEE_PAID, Reason.COLLATERAL_SUPPLIED]
    assert all(r.report_id.startswith("0x") and len(r.report_id) == 66 for r in reports)
    assert len({r.report_id for r in reports}) == 3 and rig.adapter.transactions == 3
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "aWETH") == Decimal(5)  # index 1: nothing borrowed in the fresh world

    n = len(rig.adapter.gas)
    await rig.adapter.supply("USDT", Decimal(1_000), "s2")
    rig.record_gas("supply USDT (approve + supply)", n, "SUPPLY")
    n = len(rig.adapter.gas)
    await rig.adapter.borrow("WETH", Decimal(2), "b1")
    rig.record_gas("borrow WETH", n, "BORROW")
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "variableDebtWETH") > 0

    await rig.chain.warp(7 * 86_400)  # interest: the debt grows, its scaled balance does not
    n = len(rig.adapter.gas)
    await rig.adapter.repay("WETH", None, "r1")  # all of it: no dust left
    rig.record_gas("repay WETH (approve + repay all)", n, "REPAY")
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "variableDebtWETH") == 0
    report = await rig.adapter.fetch_wallet()
    assert rig.adapter.last_snapshot is not None
    assert report.balances == tuple(sorted(wallet_balances(rig.adapter.last_snapshot).items()))

    n = len(rig.adapter.gas)
    await rig.adapter.withdraw("USDT", Decimal(1_000), "w1")  # the whole supply (interest included: max)
    rig.record_gas("withdraw USDT (all)", n, "WITHDRAW")
    await rig.adapter.withdraw("WETH", Decimal(2), "w2")
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "aUSDT") == 0
    assert rig.ledger.balance(WALLET, "USDT") >= Decimal(5_000)
    assert all(r.change.ref in ("s1", "s2", "b1", "r1", "w1", "w2") for r in rig.booked)


async def test_a_borrow_past_the_ltv_reverts_with_aaves_name_and_books_nothing(rig: Rig) -> None:
    await rig.adapter.supply("WETH", Decimal(1), "s")
    await rig.assert_books_match_chain()
    sent = rig.adapter.transactions
    with pytest.raises(TxReverted) as caught:
        await rig.adapter.borrow("WETH", Decimal("0.9"), "too much")  # WETH's own LTV (outside e-mode) is 80.5 %
    assert caught.value.reason == "COLLATERAL_CANNOT_COVER_NEW_BORROW"
    assert rig.adapter.transactions == sent and rig.drain() == []
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "variableDebtWETH") == 0


async def test_a_transaction_mined_reverted_books_its_gas_alone(rig: Rig) -> None:
    await rig.adapter.supply("WETH", Decimal(1), "s")
    rig.drain()
    weth = rig.chain.reserve("WETH")["underlying"]
    # a gas limit given skips the estimate: the borrow past the LTV is mined, and reverts on chain
    call = replace(calls.borrow(rig.chain.book["Pool"], weth, WAD, rig.owner, "WETH"), gas=600_000)
    with pytest.raises(TxReverted) as caught:
        await rig.adapter._send(call, Reason.LOAN_CREATED, "mined revert")
    assert caught.value.tx_hash is not None and caught.value.reason == "COLLATERAL_CANNOT_COVER_NEW_BORROW"
    (report,) = rig.drain()
    assert report.report_id == caught.value.tx_hash and report.change.reason == Reason.GAS_FEE_PAID
    assert [t.token for t in report.change.tokens] == ["ETH"] and report.change.tokens[0].delta < 0
    await rig.assert_books_match_chain()


async def test_a_bounded_allowance_is_granted_once_for_several_operations(aave_chain: AaveChain) -> None:
    rig = await _rig(aave_chain, policy=ChainPolicy(allowance_mode="bounded", bounded_allowance_multiple=4))
    try:
        await _deposit_usdt(rig, 1_000)
        for i in range(3):
            await rig.adapter.supply("USDT", Decimal(100), f"s{i}")
        reasons = [r.change.reason for r in rig.drain()]
        assert reasons == [Reason.GAS_FEE_PAID] + [Reason.COLLATERAL_SUPPLIED] * 3  # one approval, of 400
        allowance = await rig.chain.token("USDT").functions.allowance(rig.owner, rig.chain.book["Pool"]).call()
        assert allowance == 100 * 10**6
        await rig.assert_books_match_chain()
    finally:
        while OPEN:
            await OPEN.pop().provider.disconnect()


async def test_the_wallet_read_during_an_operation_always_agrees_with_the_reports_sent(rig: Rig) -> None:
    """The reconciler's premise: a wallet report with `reports_sent` = k shows exactly the first k booked changes."""
    start = rig.ledger.snapshot()
    samples: list[tuple[int, tuple[tuple[str, Decimal], ...]]] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            report = await rig.adapter.fetch_wallet()
            assert report.reports_sent is not None
            samples.append((report.reports_sent, report.balances))
            await asyncio.sleep(0)

    async def operate() -> None:
        try:
            await rig.adapter.swap_eth_to_usdt(Decimal(1), "swap")  # wrap, approve, swap
            await rig.adapter.supply("USDT", Decimal(1_000), "supply")  # approve, supply
        finally:
            done.set()

    await asyncio.gather(poll(), operate())
    reports = rig.drain()
    assert len(reports) == 5 and {k for k, _ in samples} >= {0, 5}
    for k, balances in samples:
        replay = Ledger(())
        replay.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(a, t, v) for a, t, v in start.balances)))
        for r in reports[:k]:
            replay.apply(r.change)
        assert dict(balances) == {t: v for a, t, v in replay.snapshot().balances if a == WALLET}


# --- staking and swaps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lst", ["weETH", "wstETH"])
async def test_stake_mints_at_the_protocols_rate(aave_chain: AaveChain, lst: str) -> None:
    rig = await _rig(aave_chain, lst)
    try:
        n = len(rig.adapter.gas)
        await rig.adapter.stake(Decimal(3), "stake")
        rig.record_gas(f"stake {lst}", n, "STAKE")
        (report,) = rig.drain()
        rate = aave_chain.reserve(lst)["lst_rate"]
        assert report.change.reason == Reason.STAKE_DEPOSIT
        assert rig.ledger.balance(WALLET, lst) == Decimal(3 * WAD * WAD // rate) / WAD
        await rig.assert_books_match_chain()
        with pytest.raises(NonRetryableVenueError, match="withdrawal queue"):
            await rig.adapter.redeem_lst(Decimal(1), "redeem")
    finally:
        while OPEN:
            await OPEN.pop().provider.disconnect()


async def test_swaps_book_what_arrived_and_a_price_below_min_out_reverts(rig: Rig) -> None:
    n = len(rig.adapter.gas)
    await rig.adapter.swap_eth_to_usdt(Decimal(2), "usdt")  # wrap, approve, swap at the DEX's 3000
    rig.record_gas("swap ETH→USDT (wrap + approve + swap)", n, "SWAP")
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "USDT") == Decimal(6_000)
    received = await rig.adapter.swap_usdt_to_eth(Decimal(3_000), "eth")
    assert Decimal(1) - received <= Decimal("1e-18")  # the world's reverse rate is rounded down
    lst = await rig.adapter.swap_eth_to_lst(Decimal("1.06"), "lst")
    assert Decimal(1) - lst <= Decimal("1e-18")  # the world's DEX quotes weETH at its rate, 1.06
    n = len(rig.adapter.gas)
    eth = await rig.adapter.swap_lst_to_eth(Decimal("0.5"), "sell")
    rig.record_gas("swap LST→WETH (approve + swap)", n, "SWAP")
    assert eth == Decimal("0.53")
    await rig.assert_books_match_chain()

    # the DEX now pays 1 % under the oracle: beyond the 0.5 % slippage, the router refuses and nothing is swapped
    await rig.chain.set_swap_rate("weETH", "WETH", Decimal("1.06") * Decimal("0.99"))
    held = rig.ledger.balance(WALLET, "weETH")
    with pytest.raises(TxReverted) as caught:
        await rig.adapter.swap_lst_to_eth(Decimal("0.5"), "refused")
    assert caught.value.reason == "TooLittleReceived"
    out, minimum = caught.value.revert.args  # the DEX's error carries its amounts: what it offered, what we required
    assert isinstance(out, int) and isinstance(minimum, int) and out < minimum
    assert [r.change.reason for r in rig.drain()] == [Reason.GAS_FEE_PAID]  # the approval alone was mined
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "weETH") == held


# --- the atomic executor ----------------------------------------------------------------------------------------


async def test_atomic_entry_lands_at_the_target_and_the_ledgers_aave_math_is_the_chains(rig: Rig) -> None:
    n = len(rig.adapter.gas)
    executor = await rig.adapter.deploy_executor("deploy")
    rig.record_gas("deploy FlashLeverage (CREATE2)", n)
    assert await rig.adapter.deploy_executor("again") == executor and len(rig.adapter.gas) == n + 1  # idempotent
    equity, target = Decimal(10), Decimal("0.85")
    supply, borrow = _leveraged(equity, target)

    n = len(rig.adapter.gas)
    await rig.adapter.atomic_leverage_entry(equity, supply, borrow, "enter")
    used = rig.record_gas("atomic entry (e-mode + delegation + enter)", n, "ATOMIC_ENTRY")
    assert len(used) == 3  # setUserEMode, approveDelegation, enter: the entry itself is one transaction
    reports = rig.drain()
    assert reports[-1].change.reason == Reason.ATOMIC_LEVERAGE_EXECUTION
    ltv, _, _ = await _account(rig)
    assert abs(ltv - target) <= Decimal("0.001")
    await rig.assert_books_match_chain()
    # the grant was exact: nothing is left for the executor to borrow later
    debt_token = rig.chain.contract("VariableDebtToken", rig.chain.reserve("WETH")["variableDebtToken"])
    assert await debt_token.functions.borrowAllowance(rig.owner, executor).call() == 0

    # the ledger's AAVE math, from the booked scaled balances × the indexes × the oracle, is AAVE's own to 1e-9:
    # right after the entry, and after a month of interest and an oracle move
    await _assert_ledger_math_is_aaves(rig)
    await rig.chain.warp(30 * 86_400)
    await rig.chain.set_eth_price(3_300)
    await rig.chain.set_lst_rate("weETH", "1.061")
    snap = await _assert_ledger_math_is_aaves(rig)

    # the unwind (the whole position) returns to zero debt, the equity back less the premium and the month's interest
    weth_before = rig.ledger.balance(WALLET, "ETH")
    collateral = snap.holdings["weETH"].supplied * snap.oracle_rate("weETH")
    n = len(rig.adapter.gas)
    freed = await rig.adapter.atomic_deleverage(snap.holdings["WETH"].borrowed, collateral, "unwind")
    rig.record_gas("atomic deleverage (approve aLST + unwind)", n, "ATOMIC_DELEVERAGE")
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "variableDebtWETH") == 0 and rig.ledger.balance(WALLET, "aWeETH") == 0
    assert tuple((await rig.chain.pool.functions.getUserAccountData(rig.owner).call())[:2]) == (0, 0)
    assert Decimal("9.9") < freed < equity
    assert rig.ledger.balance(WALLET, "ETH") - weth_before < freed  # freed WETH, less the gas paid


async def test_partial_deleverage_and_debt_reduction_move_the_ltv_as_planned(rig: Rig) -> None:
    await rig.adapter.deploy_executor("deploy")
    equity = Decimal(10)
    await rig.adapter.atomic_leverage_entry(equity, *_leveraged(equity, Decimal("0.9")), "enter")
    await rig.assert_books_match_chain()
    ltv0, _, debt0 = await _account(rig)

    # a quarter of both legs: the LTV stays, the freed WETH lands in the wallet
    snap = rig.adapter.last_snapshot
    assert snap is not None
    collateral = snap.holdings["weETH"].supplied * snap.oracle_rate("weETH")
    n = len(rig.adapter.gas)
    freed = await rig.adapter.atomic_deleverage(debt0 / 4, collateral / 4, "quarter")
    rig.record_gas("atomic deleverage, partial (approve + reduceDebt)", n, "ATOMIC_DELEVERAGE")
    await rig.assert_books_match_chain()
    ltv1, _, debt1 = await _account(rig)
    assert abs(ltv1 - ltv0) <= Decimal("0.001") and abs(debt1 / debt0 - Decimal("0.75")) < Decimal("1e-6")
    # the WETH sold for, less the debt repaid and the flash premium (5 bps of it); the world's DEX is at the oracle
    assert abs(freed - (collateral / 4 - debt0 / 4 * Decimal("1.0005"))) < Decimal("1e-9")

    # a margin top-up's deleverage: exactly free_eth lands (at the DEX's quote), both legs scaled
    freed = await rig.adapter.atomic_deleverage(debt1 / 10, collateral / 10, "top-up", free_eth=Decimal("0.5"))
    assert abs(freed - Decimal("0.5")) < Decimal("0.001")
    await rig.assert_books_match_chain()

    ltv2, _, debt2 = await _account(rig)
    n = len(rig.adapter.gas)
    await rig.adapter.atomic_reduce_debt(Decimal(5), "reduce")
    rig.record_gas("atomic reduce debt (approve + reduceDebt)", n, "ATOMIC_DELEVERAGE")
    await rig.assert_books_match_chain()
    ltv3, _, debt3 = await _account(rig)
    assert abs(debt2 - debt3 - 5) < Decimal("1e-6")
    # the collateral sold: the flash and its premium, over the expected swap cost (1 bp), plus the 5 bp margin
    sold = 5 * Decimal("1.0005") / (1 - Decimal("0.0001")) * Decimal("1.0005")
    assert abs(ltv3 - (debt2 - 5) / (debt2 / ltv2 - sold)) < Decimal("0.0001") and ltv3 < ltv2


async def test_an_entry_the_dex_would_leave_out_of_bounds_reverts_with_the_executors_name(rig: Rig) -> None:
    await rig.adapter.deploy_executor("deploy")
    # 0.3 % under the oracle: within the slippage, but the LTV lands ~0.0027 above the plan, beyond its 0.002
    await rig.chain.set_swap_rate("WETH", "weETH", Decimal(1) / Decimal("1.06") * Decimal("0.997"))
    equity = Decimal(10)
    with pytest.raises(TxReverted) as caught:
        await rig.adapter.atomic_leverage_entry(equity, *_leveraged(equity, Decimal("0.9")), "enter")
    assert caught.value.reason == "LtvOutOfBounds"
    await rig.assert_books_match_chain()  # the grants before it were mined and booked; the entry was not sent
    assert rig.ledger.balance(WALLET, "variableDebtWETH") == 0 and rig.ledger.balance(WALLET, "aWeETH") == 0


# --- the sequential loop ----------------------------------------------------------------------------------------


async def test_the_sequential_loop_and_its_deleverage_match_the_plan_and_the_books(rig: Rig) -> None:
    equity, target = Decimal(4), Decimal("0.8")
    plan = sequential_loop(equity, target, Decimal(1), 3)
    n = len(rig.adapter.gas)
    sent = await rig.adapter.sequential_leverage_entry(equity, target, Decimal(1), 3, "loop")
    used = rig.record_gas("sequential entry (3 borrows)", n)
    assert sent == len(used) == rig.adapter.transactions
    await rig.assert_books_match_chain()
    ltv, _, debt = await _account(rig)
    assert abs(ltv - plan.ltv) < Decimal("0.001")
    assert abs(debt - plan.total_borrowed) < Decimal("1e-9")

    snap = rig.adapter.last_snapshot
    assert snap is not None
    collateral = snap.holdings["weETH"].supplied * snap.oracle_rate("weETH")
    n = len(rig.adapter.gas)
    freed = await rig.adapter.sequential_deleverage(debt, collateral, "out")
    rig.record_gas("sequential deleverage (whole)", n)
    await rig.assert_books_match_chain()
    assert rig.ledger.balance(WALLET, "variableDebtWETH") == 0
    assert rig.ledger.balance(WALLET, "aWeETH") == 0
    assert abs(freed - (collateral - debt)) < Decimal("0.001")
    with pytest.raises(NonRetryableVenueError, match="withdrawal queue"):
        await rig.adapter.sequential_deleverage(Decimal(0), Decimal(1), "redeem", redeem=True)


# --- transfers and reads ----------------------------------------------------------------------------------------


async def test_a_transfer_to_an_exchange_books_the_transit_leg_and_tells_the_rails(rig: Rig) -> None:
    await _deposit_usdt(rig, 2_000)
    usdt = rig.chain.token("USDT")
    n = len(rig.adapter.gas)
    await rig.adapter.transfer_usdt_to_cex("binance", Decimal("1500.5"), "t1")
    rig.record_gas("transfer USDT to an exchange", n, "TRANSFER")
    (report,) = rig.drain()
    assert report.change.reason == Reason.VENUE_TRANSFER
    assert TokenChange(TRANSIT, "USDT", Decimal("1500.5")) in report.change.tokens
    assert TokenChange(WALLET, "USDT", Decimal("-1500.5")) in report.change.tokens
    assert rig.rails.deposits == [("binance", "USDT", Decimal("1500.5"), report.report_id, "t1")]
    assert await usdt.functions.balanceOf(rig.rails.address).call() == 1_500_500_000
    await rig.assert_books_match_chain()

    deposit_before = await rig.chain.w3.eth.get_balance(AsyncWeb3.to_checksum_address(rig.rails.address))
    n = len(rig.adapter.gas)
    await rig.adapter.transfer_eth_to_cex("okx", Decimal("2.25"), "t2")
    rig.record_gas("transfer ETH to an exchange", n, "TRANSFER")
    (report,) = rig.drain()
    assert TokenChange(TRANSIT, "ETH", Decimal("2.25")) in report.change.tokens
    deposit_after = await rig.chain.w3.eth.get_balance(AsyncWeb3.to_checksum_address(rig.rails.address))
    assert deposit_after - deposit_before == 225 * 10**16
    assert rig.ledger.balance(TRANSIT, "ETH") == Decimal("2.25")
    await rig.assert_books_match_chain()

    await rig.adapter.withdraw_usdt_from_cex("bybit", Decimal(700), "w1")
    await rig.adapter.withdraw_eth_from_cex("bybit", Decimal(1), "w2")
    assert rig.rails.withdrawals == [("bybit", "USDT", Decimal(700), rig.owner, "w1"),
                                     ("bybit", "ETH", Decimal(1), rig.owner, "w2")]
    assert rig.drain() == []  # the rails book what they move, not the chain adapter


async def test_the_oracle_rate_comes_from_the_last_snapshot(aave_chain: AaveChain) -> None:
    rig = await _rig(aave_chain)
    try:
        fresh, _, _ = _adapter(aave_chain)  # has read nothing yet
        with pytest.raises(NonRetryableVenueError, match="oracle rate"):
            fresh.oracle_rate()
        assert rig.adapter.oracle_rate() == Decimal("1.06")
        await aave_chain.set_lst_rate("weETH", "1.07")
        assert rig.adapter.oracle_rate() == Decimal("1.06")  # sync: the last snapshot's, until the next read
        report = await rig.adapter.fetch_wallet()
        assert rig.adapter.oracle_rate() == Decimal("1.07")
        assert report.account == WALLET and report.reports_sent == 0 and ("ETH", Decimal(10_000)) in report.balances
    finally:
        while OPEN:
            await OPEN.pop().provider.disconnect()


async def test_the_flash_amount_is_the_largest_whose_premium_fits_the_borrow() -> None:
    for borrow in (1, 9_999, 10_004, 56_666_666_666_666_666_666, 10**24 + 7):
        for bps in (0, 5, 9):
            flash = calls.flash_for_borrow(borrow, bps)
            assert flash + calls.flash_premium(flash, bps) <= borrow
            assert flash + 1 + calls.flash_premium(flash + 1, bps) > borrow
