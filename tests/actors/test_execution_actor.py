"""Instructions carried out by the execution actor through the real simulated exchange and chain."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

import anyio
import pytest
from structlog.testing import capture_logs

from actors.execution import ExecutionActor
from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.data.rewards import RewardEvent
from daemon.domain.aave import atomic_entry
from daemon.domain.booking import fill_change_set
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    BalancesChanged,
    ExecuteInstruction,
    FillReport,
    GasPriceReported,
    InstructionFinished,
    OracleRateReported,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    PriceTicked,
    ReserveIndexesReported,
    Side,
    SubmitOrder,
    VenueReport,
)
from daemon.domain.strategy import Executor, Instruction, Step
from daemon.gate import LISTENERS, RECONCILIATION, StartGate
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal
VENUES = ("binance", "bybit")


@dataclass
class Rig:
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction]
    reports: LosslessChannel[VenueReport]
    events: LosslessChannel[OrderEvent]
    exchanges: dict[str, SimulatedExchange]
    trading: TradingStateCell
    chain: SimulatedChain
    board: MarketBoard


def simulated_venues(clock: VirtualClock, reports: LosslessChannel[VenueReport], venues: tuple[str, ...],
                     chain_type: type[SimulatedChain]
                     ) -> tuple[dict[str, SimulatedExchange], MarketBoard, SimulatedChain]:
    """The simulated exchanges (spot 3000, perp 3001) and a chain of `chain_type` on a board with every quote an
    instruction's steps read: what the execution actor's rigs run on."""
    exchanges = {v: SimulatedExchange(v, clock, reports, taker_fee_bps=D(5)) for v in venues}
    for exchange in exchanges.values():
        exchange.set_price("Spot", D(3000))
        exchange.set_price("Perp", D(3001))
    board = MarketBoard()
    for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(10), 0, 0),
                    ReserveIndexesReported("weETH", D("1.01"), D("1.01"), 0, 0),
                    ReserveIndexesReported("WETH", D("1.03"), D("1.05"), 0, 0)):
        board.update(message)
    return exchanges, board, chain_type(clock, board, reports, exchanges)


@asynccontextmanager
async def running(gate: StartGate | None = None, chain_type: type[SimulatedChain] = SimulatedChain,
                  lots: dict[str, Decimal] | None = None) -> AsyncIterator[Rig]:
    clock = VirtualClock(0, None)
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 64)
    reports: LosslessChannel[VenueReport] = LosslessChannel("fills.reports", 256)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 64)
    exchanges, board, chain = simulated_venues(clock, reports, VENUES, chain_type)
    chain.receive(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(100_000)),)))
    actor = ExecutionActor(orders, exchanges, events, chain, gate=gate, lots=lots)
    trading = TradingStateCell()
    sup = Supervisor([actor], clock=clock, trading=trading, policy=RestartPolicy(), heartbeat_interval_s=0.05,
                     heartbeat_timeout_s=1, rng=random.Random(0))
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)
        yield Rig(orders, reports, events, exchanges, trading, chain, board)
        tg.cancel_scope.cancel()


def entry_instruction(long_eth: Decimal) -> Instruction:
    lev = atomic_entry(long_eth, D("0.9"))
    steps = (
        Step(1, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "binance", {"amount_usd": long_eth * 3000 + 10_000}),
        Step(2, "BUY_SPOT", Executor.CEX, "binance", {"amount": long_eth}),
        Step(3, "OPEN_PERP_SHORT", Executor.CEX, "binance", {"amount": long_eth}),
        Step(4, "WITHDRAW_TO_WALLET", Executor.CEX, "binance", {"amount_eth": long_eth}),
        Step(5, "ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3",
             {"equity_eth": long_eth, "supply_eth": lev.supplied, "borrow_eth": lev.borrowed}),
    )
    return Instruction(1, "ENTRY", "test", long_eth * 3000, steps, False, "entry")


async def finished(rig: Rig) -> InstructionFinished:
    with anyio.fail_after(2):
        while True:
            event = await rig.events.receive()
            if isinstance(event, InstructionFinished):
                return event


def deposit(venue: str, usdt: Decimal) -> ChangeSet:
    return ChangeSet(Reason.DEPOSIT, 0, (TokenChange(venue, "USDT", usdt),))


def book(reports: list[VenueReport]) -> Ledger:
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange(WALLET, "USDT", D(100_000)),)))
    for r in reports:
        if isinstance(r, BalancesChanged):
            ledger.apply(r.change)
        else:
            ledger.apply(fill_change_set(OrderFilled(r.venue, r.trade_id, r.client_order_id, r.instrument_id, r.side,
                                                     r.quantity, r.price, r.fee, r.fee_currency, 0, 0)))
    return ledger


@pytest.mark.asyncio
async def test_an_entry_runs_its_steps_in_order_and_its_reports_book_cleanly() -> None:
    async with running() as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        done = await finished(rig)
        assert (done.completed, done.steps_done, done.reports) == (True, 5, 5)
        reports = [rig.reports.receive_nowait() for _ in range(len(rig.reports))]
    kinds = [type(r).__name__ if isinstance(r, FillReport) else r.change.reason.value for r in reports]
    assert kinds == ["VENUE_TRANSFER", "FillReport", "FillReport", "VENUE_TRANSFER", "ATOMIC_LEVERAGE_EXECUTION"]
    fills = [r for r in reports if isinstance(r, FillReport)]
    assert [f.client_order_id for f in fills] == ["i1-2", "i1-3"]  # deterministic: a resend is recognised
    ledger = book(reports)  # every report books, in order, without a refusal
    lev = atomic_entry(D(10), D("0.9"))
    assert ledger.balance(WALLET, "aWeETH") == lev.supplied / D("1.05") / D("1.01")
    assert ledger.balance(WALLET, "variableDebtWETH") == lev.borrowed / D("1.05")
    # Gas debt: the USDT transfer (100k gas) and the atomic entry (1.25M gas) at 10 gwei; the exchange's
    # withdrawal costs the wallet nothing.
    assert ledger.balance(WALLET, "ETH") == -(D(100_000) + D(1_250_000)) * D(10) * D("1e-9")
    assert ledger.perp("binance", "ETHUSDT").quantity == -10


class ChainToldWhatArrived(SimulatedChain):
    """A chain whose rails say what reached the wallet (as the live ones do): a spot fee taken in ETH left the
    venue 0.1 % short of what the strategy planned to withdraw."""

    leverage_calls: list[tuple[Decimal, Decimal, Decimal]]

    async def withdraw_eth_from_cex(self, venue: str, amount_eth: Decimal, ref: str) -> Decimal:
        short = amount_eth * D("0.999")
        await super().withdraw_eth_from_cex(venue, short, ref)
        return short - self._exchanges[venue].withdrawal_fee("ETH")

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        self.leverage_calls = [*getattr(self, "leverage_calls", []), (equity_eth, supply_eth, borrow_eth)]
        await super().atomic_leverage_entry(equity_eth, supply_eth, borrow_eth, ref)


@pytest.mark.asyncio
async def test_the_leveraged_entry_is_sized_on_what_arrived_from_the_venue_at_the_planned_leverage() -> None:
    async with running(chain_type=ChainToldWhatArrived) as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i9"), entry_instruction(D(10)), 0, 0))
        done = await finished(rig)
        assert done.completed, done.reason
    assert isinstance(rig.chain, ChainToldWhatArrived)
    ((equity, supply, borrow),) = rig.chain.leverage_calls
    planned = atomic_entry(D(10), D("0.9"))
    assert equity == D("9.99") and supply - borrow == equity  # the flash loan still balances to the wei
    assert borrow / supply == planned.borrowed / planned.supplied  # at the planned LTV


@pytest.mark.asyncio
async def test_a_halt_between_steps_stops_the_instruction_and_says_where() -> None:
    async with running() as rig:
        rig.trading.halt("operator", source="operator")
        await rig.orders.send(ExecuteInstruction(InstructionId("i2"), entry_instruction(D(10)), 0, 0))
        done = await finished(rig)
        assert (done.completed, done.steps_done) == (False, 0)
        assert "stopped before step 1: trading is halted" in done.reason
        assert len(rig.reports) == 0 and all(e.orders_received == 0 for e in rig.exchanges.values())


@pytest.mark.asyncio
async def test_a_failing_step_stops_the_rest_and_is_reported() -> None:
    instruction = entry_instruction(D(10))
    broken = Instruction(1, "ENTRY", "test", D(0), (instruction.steps[0], Step(
        2, "TRANSFER_USDT_TO_CEX", Executor.WALLET, "kraken", {"amount_usd": D(1)}), instruction.steps[1]), False, "x")
    async with running() as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i3"), broken, 0, 0))
        done = await finished(rig)
        assert (done.completed, done.steps_done, done.reports) == (False, 1, 1)
        assert "step 2 TRANSFER_USDT_TO_CEX failed" in done.reason and "kraken" in done.reason
        assert rig.exchanges["binance"].orders_received == 0  # step 3 never ran


@pytest.mark.asyncio
async def test_funding_pays_shorts_on_a_positive_rate_at_the_venues_own_mark() -> None:
    async with running() as rig:
        exchange = rig.exchanges["bybit"]
        exchange.record_transfer(deposit("bybit", D(1000)))
        await exchange.submit_order(SubmitOrder(ClientOrderId("c1"), InstructionId("i"),
                                                InstrumentId("bybit:Perp:ETHUSDT"), Side.SELL, D(2), False, "t", 0, 0))
        await exchange.settle_funding(D("0.0001"), D(3010))
        reports = [rig.reports.receive_nowait() for _ in range(len(rig.reports))]
    funding = reports[-1]
    assert isinstance(funding, BalancesChanged) and funding.change.reason is Reason.FUNDING_PAYMENT
    assert funding.change.tokens == (TokenChange("bybit", "USDT", D("0.60200000")),)


def short(venue: str, qty: Decimal, cid: str = "c1") -> SubmitOrder:
    return SubmitOrder(ClientOrderId(cid), InstructionId("i"), InstrumentId(f"{venue}:Perp:ETHUSDT"), Side.SELL, qty,
                       False, "t", 0, 0)


def drain(rig: Rig) -> list[VenueReport]:
    return [rig.reports.receive_nowait() for _ in range(len(rig.reports))]


@pytest.mark.asyncio
async def test_an_order_the_account_cannot_pay_for_is_rejected_and_nothing_is_reported() -> None:
    async with running() as rig:
        exchange = rig.exchanges["binance"]
        buy = SubmitOrder(ClientOrderId("b1"), InstructionId("i"), InstrumentId("binance:Spot:ETHUSDT"), Side.BUY,
                          D(1), False, "t", 0, 0)
        report = await exchange.submit_order(buy)
        assert report.status == "rejected" and "insufficient balance" in report.reason and "USDT" in report.reason
        assert len(rig.reports) == 0 and exchange.book.snapshot().balances == ()


@pytest.mark.asyncio
async def test_a_cex_account_is_liquidated_at_maintenance_and_the_venue_and_our_books_agree() -> None:
    async with running() as rig:
        exchange = rig.exchanges["bybit"]
        exchange.record_transfer(deposit("bybit", D(1000)))
        await exchange.submit_order(short("bybit", D(2)))  # ≈ 6,000 USDT notional on 1,000 USDT: ratio ≈ 16.7 %
        # Liquidation line: 1,000 − 2·(P − 3,001) = 10 % × 2·P, at P ≈ 3,183.
        exchange.set_price("Perp", D(3150))
        equity, maintenance = exchange.margin()
        assert equity > maintenance and not await exchange.check_liquidation()
        exchange.set_price("Perp", D(3250))
        equity, maintenance = exchange.margin()
        assert 0 < equity <= maintenance == D("0.10") * 2 * 3250
        assert await exchange.check_liquidation()
        reports = drain(rig)
    liquidation = reports[-1]
    assert isinstance(liquidation, BalancesChanged) and liquidation.change.reason is Reason.LIQUIDATION
    (close,) = liquidation.change.perps
    assert (close.venue, close.instrument, close.delta_qty, close.price) == ("bybit", "ETHUSDT", D(2), D(3250))
    fee = D("0.0125") * 2 * 3250  # the clearance fee on the notional, less than what was left
    assert liquidation.change.tokens == (TokenChange("bybit", "USDT", -fee),)
    ours = Ledger(VENUES)
    ours.apply(deposit("bybit", D(1000)))
    for r in reports:
        ours.apply(r.change if isinstance(r, BalancesChanged) else fill_change_set(r))
    assert ours.perp("bybit", "ETHUSDT").quantity == 0 == exchange.book.perp("bybit", "ETHUSDT").quantity
    assert ours.balance("bybit", "USDT") == exchange.book.balance("bybit", "USDT") == equity - fee


@pytest.mark.asyncio
async def test_a_gap_through_bankruptcy_leaves_the_account_at_zero_not_negative() -> None:
    async with running() as rig:
        exchange = rig.exchanges["okx"] if "okx" in rig.exchanges else rig.exchanges["binance"]
        exchange.record_transfer(deposit(exchange.venue, D(1000)))
        await exchange.submit_order(short(exchange.venue, D(2)))
        exchange.set_price("Perp", D(4000))  # equity = 1,000 − 2 × ≈1,000 < 0
        assert exchange.margin()[0] < 0
        assert await exchange.check_liquidation()
        assert exchange.book.balance(exchange.venue, "USDT") == 0
        assert exchange.book.perp(exchange.venue, "ETHUSDT").quantity == 0
        assert not await exchange.check_liquidation()  # nothing left to liquidate


@pytest.mark.asyncio
async def test_aave_liquidators_repay_and_seize_with_the_bonus_until_health_is_restored() -> None:
    async with running() as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        assert (await finished(rig)).completed
        chain = rig.chain
        hf_entry = chain.health_factor()
        assert hf_entry == D("0.95") / D("0.9")  # entered at λ = 0.9
        assert await chain.check_liquidation() == 0
        # The LST de-pegs 6 %: HF ≈ 0.99, below 1 but above 0.95, so each call may repay half the debt.
        rig.board.update(OracleRateReported("weETH/ETH", D("1.05") * D("0.94"), 0, 0))
        hf_before = chain.health_factor()
        assert D("0.95") < hf_before < 1
        collateral_before = chain.book.balance(WALLET, "aWeETH")
        debt_before = chain.book.balance(WALLET, "variableDebtWETH")
        assert await chain.check_liquidation() == 1
        assert chain.health_factor() > 1
        reports = drain(rig)
    liquidation = reports[-1]
    assert isinstance(liquidation, BalancesChanged) and liquidation.change.reason is Reason.LIQUIDATION
    seized, repaid = (t for t in liquidation.change.tokens)
    assert seized.token == "aWeETH" and repaid.token == "variableDebtWETH"
    # Half the debt (close factor 50 %) repaid; collateral worth 1.01 × that seized (e-mode bonus 1 %).
    repaid_eth = -repaid.delta * D("1.05")
    seized_eth = -seized.delta * D("1.01") * D("1.05") * D("0.94")
    assert abs(repaid_eth - debt_before * D("1.05") / 2) < D("1e-18")
    assert abs(seized_eth - repaid_eth * D("1.01")) < D("1e-18")
    assert chain.book.balance(WALLET, "aWeETH") == collateral_before + seized.delta
    assert chain.book.balance(WALLET, "variableDebtWETH") == debt_before + repaid.delta


def test_an_etherfi_reward_pays_the_average_holding_over_its_period_and_is_sold_for_eth() -> None:
    async def scenario() -> tuple[list[VenueReport], SimulatedChain]:
        hour = 3_600 * 10**9
        clock = VirtualClock(0, None)
        reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 64)
        board = MarketBoard()
        for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(10), 0, 0),
                        PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), 0, 0),
                        PriceTicked(InstrumentId("uniswap:Spot:EIGENUSDT"), D(3), 0, 0)):
            board.update(message)
        event = RewardEvent(payout_ns=4 * hour, period_start_ns=0, period_end_ns=4 * hour, token="EIGEN",
                            per_eeth=D("0.2"), kind="weekly", exact=True)
        chain = SimulatedChain(clock, board, reports, {}, rewards=(event,))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "weETH", D(10)),)))
        for h in range(5):  # 10 weETH held for the first two hours of four, then 20
            await clock.sleep_until(h * hour)
            if h == 2:
                chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "weETH", D(10)),)))
            assert await chain.pay_rewards() == (1 if h == 4 else 0)
        return [reports.receive_nowait() for _ in range(len(reports))], chain

    reports, chain = anyio.run(scenario)
    paid, sold = (r.change for r in reports if isinstance(r, BalancesChanged))
    average_eeth = (10 + 10 + 20 + 20) * D("1.05") / 4  # weETH × the oracle: eETH equivalent, hour by hour
    assert paid.reason is Reason.KING_REWARD_DISTRIBUTION
    assert paid.tokens == (TokenChange(WALLET, "EIGEN", D("0.2") * average_eeth),)
    assert sold.reason is Reason.SEASONAL_REWARDS_SOLD
    tokens = D("0.2") * average_eeth
    eth = tokens * 3 / 3000 * (1 - D("0.002"))  # at the hour's price, less the DEX fee; gas paid too
    assert sold.tokens[:2] == (TokenChange(WALLET, "EIGEN", -tokens), TokenChange(WALLET, "ETH", eth))
    assert chain.book.balance(WALLET, "EIGEN") == 0 and chain.rewards_paid == {"EIGEN": tokens}


@pytest.mark.asyncio
async def test_a_sequential_loop_is_one_transaction_per_move_and_undershoots_the_atomic_leverage() -> None:
    """DOMAIN §3: without a flash loan the loop stakes, supplies and borrows round after round, stopping when the
    next borrow would be below the minimum — each move a transaction paying its own gas."""
    from daemon.domain.aave import sequential_loop

    equity, lam, minimum = D(10), D("0.9"), D("0.5")  # ETH
    async with running() as rig:
        rig.chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", equity),)))
        step = Step(1, "SEQUENTIAL_LEVERAGE_ENTRY", Executor.AAVE, "aave_v3",
                    {"equity_eth": equity, "target_ltv": lam, "min_borrow_eth": minimum, "max_iterations": ""})
        await rig.orders.send(ExecuteInstruction(InstructionId("s1"), Instruction(1, "ENTRY", "t", D(30_000), (step,),
                                                                                  False, "entry"), 0, 0))
        done = await finished(rig)
        reports = drain(rig)
    plan = sequential_loop(equity, lam, minimum)
    assert plan.supplies == 29 and plan.borrows == 28  # 10·0.9^28 = 0.52 ≥ 0.5 > 10·0.9^29
    assert done.completed and done.reports == len(reports) == 2 * plan.supplies + plan.borrows
    reasons = [r.change.reason for r in reports if isinstance(r, BalancesChanged)]
    assert reasons[:3] == [Reason.STAKE_DEPOSIT, Reason.COLLATERAL_SUPPLIED, Reason.LOAN_CREATED]
    ledger = book(reports)
    collateral = ledger.balance(WALLET, "aWeETH") * D("1.01") * D("1.05")
    debt = ledger.balance(WALLET, "variableDebtWETH") * D("1.05")
    assert abs(collateral - plan.total_supplied) < D("1e-20") and abs(debt - plan.total_borrowed) < D("1e-20")
    assert abs(collateral - debt - equity) < D("1e-20")  # net ETH on AAVE = the equity: the same hedge as atomic
    assert collateral < atomic_entry(equity, lam).supplied  # …but the leverage falls short of 1/(1 − λ)
    gas_units = plan.supplies * (150_000 + 250_000) + plan.borrows * 300_000
    # The equity went into the loop (its deposit is not among these reports); the rest is gas: 20M units against
    # the atomic entry's 1.25M.
    assert gas_units == 20_000_000
    assert ledger.balance(WALLET, "ETH") == -equity - gas_units * D(10) * D("1e-9")


@pytest.mark.asyncio
async def test_a_sequential_deleverage_withdraws_swaps_and_repays_round_by_round_keeping_health() -> None:
    async with running() as rig:
        rig.chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        await rig.chain.atomic_leverage_entry(D(10), D(100), D(90), "entry")  # LTV 0.9, HF 1.05
        drain(rig)
        hfs = []
        original = rig.chain._book

        async def watching(*args: object, **kwargs: object) -> None:
            await original(*args, **kwargs)  # type: ignore[arg-type]
            hfs.append(rig.chain.health_factor())

        rig.chain._book = watching  # type: ignore[method-assign]
        freed = await rig.chain.sequential_deleverage(D(45), D(50), "half")
        collateral, debt = rig.chain._aave_position()
        reports = drain(rig)
    assert abs(debt - 45) < D("1e-18") and abs(collateral - 50) < D("1e-9")  # half of each leg, as asked
    rounds = sum(1 for r in reports if isinstance(r, BalancesChanged) and r.change.reason is Reason.LOAN_REPAID)
    assert rounds > 5  # at LTV 0.9 each withdrawal is small: it takes many transactions
    assert min(hfs) >= D("1.01") - D("1e-18")  # never closer to liquidation than the floor between rounds
    fee = D(50) * D("0.002")  # the simulated DEX fee (20 bps) on everything swapped
    assert abs(freed - (D(5) - fee)) < D("1e-9")


@pytest.mark.asyncio
async def test_relevering_adds_the_same_eth_to_collateral_and_debt_in_one_transaction() -> None:
    async with running() as rig:
        rig.chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        await rig.chain.atomic_leverage_entry(D(10), D(50), D(40), "entry")  # LTV 0.8
        drain(rig)
        x = (D("0.9") * 50 - 40) / (1 - D("0.9"))  # back to λ = 0.9: 50 ETH more on each side
        step = Step(1, "ATOMIC_LEVERAGE_ENTRY", Executor.ATOMIC, "aave_v3",
                    {"equity_eth": D(0), "supply_eth": x, "borrow_eth": x})
        await rig.orders.send(ExecuteInstruction(InstructionId("l1"), Instruction(1, "INCREASE_LTV", "aave_v3", D(0),
                                                                                  (step,), False, "ltv"), 0, 0))
        done = await finished(rig)
        (report,) = drain(rig)
        collateral, debt = rig.chain._aave_position()
    assert done.completed and done.reports == 1 and isinstance(report, BalancesChanged)
    assert abs(debt / collateral - D("0.9")) < D("1e-20") and abs(collateral - debt - 10) < D("1e-18")
    assert [t.token for t in report.change.tokens] == ["aWeETH", "variableDebtWETH", "ETH"]  # only gas in ETH


def test_the_hours_worst_price_gives_the_venues_intrabar_margin_reading_without_liquidating() -> None:
    from daemon.venues.simulated import SimulatedExchange

    reports: LosslessChannel[VenueReport] = LosslessChannel("r", 8)
    venue = SimulatedExchange("binance", VirtualClock(0, None), reports, taker_fee_bps=D(0))
    assert venue.observe_range("ETH", D(3300), D(2900)) is None  # nothing held, nothing to read
    venue.book.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "USDT", D(3000)),)))
    venue.book.apply(ChangeSet(Reason.TRADE_EXECUTED, 0, (), (PerpChange("binance", "ETHUSDT", D(-10), D(3000)),)))
    venue.set_price("Perp", D(3000))
    # Short 10 at 3,000 with 3,000 USDT: at the high of 3,100 equity is 2,000 on 31,000 of notional.
    assert venue.observe_range("ETH", D(3100), D(2950)) == D(2000) / D(31_000)
    assert venue.observe_range("ETH", D(3050), D(2900)) == D(2500) / D(30_500)  # a calmer hour
    assert venue.min_margin_ratio_intrabar == D(2000) / D(31_000)  # the lowest is kept
    assert venue.liquidations == 0 and len(reports) == 0  # a reading, never an action


@pytest.mark.asyncio
async def test_nothing_reaches_a_venue_while_the_start_gate_is_closed() -> None:
    gate = StartGate((LISTENERS, RECONCILIATION))
    async with running(gate) as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        refused = await finished(rig)
        order = SubmitOrder(ClientOrderId("o1"), InstructionId("i2"), InstrumentId("binance:Perp:ETHUSDT"), Side.SELL,
                            D(1), False, "test", 0, 0)
        await rig.orders.send(order)
        with anyio.fail_after(2):
            rejected = await rig.events.receive()
        sent = (sum(e.orders_received for e in rig.exchanges.values()), rig.chain.transactions, len(rig.reports))
        gate.passed(LISTENERS)
        gate.passed(RECONCILIATION)
        await rig.orders.send(ExecuteInstruction(InstructionId("i3"), entry_instruction(D(10)), 0, 0))
        done = await finished(rig)
    assert (refused.completed, refused.steps_done) == (False, 0)
    assert "waiting for" in refused.reason and "reconciliation" in refused.reason
    assert isinstance(rejected, OrderRejected) and "start-up" in rejected.reason
    assert sent == (0, 0, 0)  # not one order, transfer or transaction went out
    assert done.completed  # and once the gate is open, the same instruction runs


class ChainWithABug(SimulatedChain):
    """A chain adapter whose leverage step raises what no venue error is (a bug: the actor crashes), after the
    instruction's transfer, order and withdrawal have gone out."""

    transfers = 0

    async def transfer_usdt_to_cex(self, venue: str, amount: Decimal, ref: str) -> None:
        self.transfers += 1
        await super().transfer_usdt_to_cex(venue, amount, ref)

    async def atomic_leverage_entry(self, equity_eth: Decimal, supply_eth: Decimal, borrow_eth: Decimal,
                                    ref: str) -> None:
        raise KeyError("Spot")


@pytest.mark.asyncio
async def test_an_instruction_that_crashed_the_actor_is_not_run_again_after_its_restart() -> None:
    async with running(chain_type=ChainWithABug) as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        done = await finished(rig)  # the supervisor restarted the actor, which was offered the instruction again
        assert not done.completed and done.steps_done == 0
        assert "not run again" in done.reason, done.reason
        assert isinstance(rig.chain, ChainWithABug) and rig.chain.transfers == 1  # its first step ran once
        fills = [r for r in (rig.reports.receive_nowait() for _ in range(len(rig.reports)))
                 if isinstance(r, FillReport)]
        assert [f.client_order_id for f in fills] == ["i1-2", "i1-3"]  # each order once
        # The next instruction runs as any does.
        await rig.orders.send(ExecuteInstruction(InstructionId("i2"), Instruction(
            2, "DELTA_ADJUST", "test", D(3000), (Step(1, "INCREASE_PERP_SHORT", Executor.CEX, "binance",
                                                      {"amount": D(1)}),), False, "delta"), 0, 0))
        assert (await finished(rig)).completed


class ShortDeleverage(SimulatedChain):
    """A deleverage that frees a little less ETH than the top-up planned (the oracle moved, the swap slipped): the
    steps after it move what it freed, no more."""

    async def atomic_deleverage(self, repay_eth: Decimal, withdraw_eth: Decimal, ref: str,
                                free_eth: Decimal | None = None) -> Decimal:
        short = free_eth - D("0.0048") if free_eth is not None else None
        return await super().atomic_deleverage(repay_eth, withdraw_eth, ref, short)


@pytest.mark.asyncio
async def test_a_top_up_that_freed_less_trades_whole_lots_of_it_and_the_same_on_both_legs() -> None:
    lots = {"binance": D("0.01"), "bybit": D("0.01")}
    async with running(chain_type=ShortDeleverage, lots=lots) as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        assert (await finished(rig)).completed
        [rig.reports.receive_nowait() for _ in range(len(rig.reports))]
        eth = D("2")
        top_up = Instruction(2, "ADD_MARGIN_TO_CEX", "binance", eth * 3000, (
            Step(1, "ATOMIC_DELEVERAGE_AAVE", Executor.ATOMIC, "aave_v3",
                 {"repay_eth": D(20), "withdraw_eth": D(22), "free_eth": eth}),
            Step(2, "TRANSFER_ETH_TO_CEX", Executor.WALLET, "binance", {"amount_eth": eth}),
            Step(3, "SELL_ETH_SPOT", Executor.CEX, "binance", {"amount_eth": eth}),
            Step(4, "REDUCE_PERP_SHORT", Executor.CEX, "binance", {"amount_eth": eth})), True, "margin")
        await rig.orders.send(ExecuteInstruction(InstructionId("i2"), top_up, 0, 0))
        done = await finished(rig)
        assert done.completed, done.reason
        fills = [r for r in (rig.reports.receive_nowait() for _ in range(len(rig.reports)))
                 if isinstance(r, FillReport)]
    # 1.9952 ETH arrived: 1.99 of it sold and as much short bought back, in the venue's lots.
    assert [(f.client_order_id, f.quantity) for f in fills] == [("i2-3", D("1.99")), ("i2-4", D("1.99"))]


@pytest.mark.asyncio
async def test_less_than_a_lot_left_to_sell_is_skipped_and_the_flatten_goes_on() -> None:
    async with running(lots={"binance": D("0.01"), "bybit": D("0.01")}) as rig:
        await rig.orders.send(ExecuteInstruction(InstructionId("i1"), entry_instruction(D(10)), 0, 0))
        assert (await finished(rig)).completed
        [rig.reports.receive_nowait() for _ in range(len(rig.reports))]
        unwind = Instruction(2, "UNWIND", "test", D(30_000), (
            Step(1, "ATOMIC_DELEVERAGE_AAVE", Executor.ATOMIC, "aave_v3",
                 {"repay_eth": D(1), "withdraw_eth": D("1.2")}),
            Step(2, "SELL_SPOT", Executor.CEX, "bybit", {"amount": D("0.005")}),  # dust: below bybit's lot
            Step(3, "REDUCE_PERP_SHORT", Executor.CEX, "binance", {"amount": D(1)})), True, "unwind")
        with capture_logs() as logs:
            await rig.orders.send(ExecuteInstruction(InstructionId("i2"), unwind, 0, 0))
            done = await finished(rig)
    assert done.completed and done.steps_done == 3, done.reason
    assert done.reports == 2  # the deleverage's transaction and the perp's fill: none for the skipped sale
    assert [e["step"] for e in logs if e["event"] == "order_step_skipped"] == [2]
