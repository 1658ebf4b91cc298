"""Costs on the simulated venues (issue 11 §2): spot trades pay the spot fee, a withdrawal pays the venue's fee,
a deleverage frees the equity it was sized for after the swap fee, and rewards are sold for the share class's
currency. Every figure is booked exactly and attributed as a transaction cost."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.data.rewards import RewardEvent
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, Reason, TokenChange
from daemon.domain.market import MarketBoard, MarketState
from daemon.domain.messages import (
    BalancesChanged,
    FillReport,
    GasPriceReported,
    OracleRateReported,
    PriceTicked,
    ReserveIndexesReported,
    Side,
    SubmitOrder,
    VenueReport,
)
from daemon.domain.pnl import COSTS, attribute_step
from daemon.settings import VenueDefinition
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal
HOUR = 3_600 * 10**9


def _exchange(reports: LosslessChannel[VenueReport], **kwargs: object) -> SimulatedExchange:
    exchange = SimulatedExchange("binance", VirtualClock(0, None), reports, taker_fee_bps=D(5),
                                 slippage_bps_per_million_usd=D(0), **kwargs)  # type: ignore[arg-type]
    exchange.set_price("Spot", D(2000))
    exchange.set_price("Perp", D(2000))
    exchange.record_transfer(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "USDT", D(100_000)),)))
    return exchange


def _order(kind: str, n: int) -> SubmitOrder:
    return SubmitOrder(ClientOrderId(f"o{n}"), InstructionId("i1"), InstrumentId(f"binance:{kind}:ETHUSDT"),
                       Side.BUY, D(2), False, "test", 0, 0)


def test_a_spot_trade_pays_the_spot_fee_and_a_perp_trade_the_perp_fee() -> None:
    async def scenario() -> list[VenueReport]:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        exchange = _exchange(reports, spot_taker_fee_bps=D(10))
        await exchange.submit_order(_order("Spot", 1))
        await exchange.submit_order(_order("Perp", 2))
        return [reports.receive_nowait() for _ in range(len(reports))]

    spot, perp = anyio.run(scenario)
    assert isinstance(spot, FillReport) and isinstance(perp, FillReport)
    assert spot.fee == D(2) * D(2000) * D("0.0010")  # 10 bps: the venue's spot schedule, not its futures one
    assert perp.fee == D(2) * D(2000) * D("0.0005")


def test_without_a_spot_schedule_a_spot_trade_pays_the_perp_fee() -> None:
    async def scenario() -> VenueReport:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        await _exchange(reports).submit_order(_order("Spot", 1))
        return reports.receive_nowait()

    fill = anyio.run(scenario)
    assert isinstance(fill, FillReport) and fill.fee == D(2) * D(2000) * D("0.0005")


def _market() -> MarketState:
    return MarketState(0, {"ETH": D(2000)}, {("binance", "ETH"): D(2000)})


def test_a_withdrawal_pays_the_venues_fee_in_the_asset_and_it_is_a_transaction_cost() -> None:
    async def scenario() -> tuple[ChangeSet, SimulatedExchange, SimulatedChain]:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        exchange = _exchange(reports, withdrawal_fees={"ETH": D("0.00168"), "USDT": D(15)})
        exchange.record_transfer(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "ETH", D(3)),)))
        chain = SimulatedChain(VirtualClock(0, None), MarketBoard(), reports, {"binance": exchange})
        await chain.withdraw_eth_from_cex("binance", D(2), "w1")
        report = reports.receive_nowait()
        assert isinstance(report, BalancesChanged)
        return report.change, exchange, chain

    change, exchange, chain = anyio.run(scenario)
    assert change.tokens == (TokenChange("binance", "ETH", D(-2)), TokenChange(WALLET, "ETH", D("1.99832")))
    assert exchange.book.balance("binance", "ETH") == 1 and chain.book.balance(WALLET, "ETH") == D("1.99832")
    before = Ledger(("binance",))
    before.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "ETH", D(2)),)))
    after = Ledger(("binance",))
    after.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange("binance", "ETH", D(2)),)))
    after.apply(change)
    step = attribute_step(before.snapshot(), _market(), after.snapshot(), _market(), [change])
    assert step.components[COSTS] == -D("0.00168") * 2000  # exactly the fee, at the market
    assert step.residual == 0


def test_a_withdrawal_smaller_than_its_fee_is_refused() -> None:
    async def scenario() -> None:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        exchange = _exchange(reports, withdrawal_fees={"USDT": D(15)})
        chain = SimulatedChain(VirtualClock(0, None), MarketBoard(), reports, {"binance": exchange})
        await chain.withdraw_usdt_from_cex("binance", D(10), "w1")

    from daemon.errors import NonRetryableVenueError
    with pytest.raises(NonRetryableVenueError, match="does not cover its 15 USDT fee"):
        anyio.run(scenario)


def _aave_board() -> MarketBoard:
    board = MarketBoard()
    for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(0), 0, 0),
                    ReserveIndexesReported("weETH", D(1), D(1), 0, 0),
                    ReserveIndexesReported("WETH", D(1), D("1.02"), 0, 0),
                    PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), 0, 0)):
        board.update(message)
    return board


@settings(max_examples=40, deadline=None)
@given(st.decimals(D("0.80"), D("0.92"), places=3), st.decimals(D("0.001"), D("0.3"), places=4),
       st.integers(0, 100))
def test_a_partial_deleverage_frees_exactly_the_equity_it_was_sized_for_at_the_same_ltv(
        ltv: Decimal, fraction: Decimal, fee_bps: int) -> None:
    """A margin top-up frees x = p·(C − D) by repaying p·D and withdrawing p·C; the DEX fee on the swapped
    collateral used to come out of x (2.2 % short at λ ≈ 0.91). Now x lands, the LTV is unchanged."""
    async def scenario() -> tuple[Decimal, Decimal, Decimal, Decimal]:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 256)
        chain = SimulatedChain(VirtualClock(0, None), _aave_board(), reports, {}, swap_fee_bps=D(fee_bps))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        supply = D(10) / (1 - ltv)
        await chain.atomic_leverage_entry(D(10), supply, supply - D(10), "entry")
        collateral, debt = chain._aave_position()
        wanted = (collateral - debt) * fraction
        freed = await chain.atomic_deleverage(debt * fraction, collateral * fraction, "top-up", free_eth=wanted)
        after_c, after_d = chain._aave_position()
        return freed, (collateral - debt) * fraction, debt / collateral, after_d / after_c

    freed, wanted, ltv_before, ltv_after = anyio.run(scenario)
    assert abs(freed - wanted) <= wanted * D("1e-20")
    assert abs(ltv_after - ltv_before) <= D("1e-20")


def test_an_exits_slice_is_unwound_as_given_and_the_fee_comes_out_of_what_it_frees() -> None:
    """Without a target (a breaker's partial exit) the long shrinks by exactly its slice, as the hedge does."""
    async def scenario() -> tuple[Decimal, Decimal, Decimal]:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 64)
        chain = SimulatedChain(VirtualClock(0, None), _aave_board(), reports, {}, swap_fee_bps=D(20))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        await chain.atomic_leverage_entry(D(10), D(100), D(90), "entry")
        collateral, debt = chain._aave_position()
        freed = await chain.atomic_deleverage(debt / 2, collateral / 2, "half")
        after_c, after_d = chain._aave_position()
        return freed - (collateral / 2 * (1 - D("0.002")) - debt / 2), after_c - collateral / 2, after_d - debt / 2

    assert all(abs(x) < D("1e-20") for x in anyio.run(scenario))


def test_a_target_past_the_position_is_capped_at_the_whole_of_it() -> None:
    async def scenario() -> Decimal:
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 64)
        chain = SimulatedChain(VirtualClock(0, None), _aave_board(), reports, {}, swap_fee_bps=D(20))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(10)),)))
        await chain.atomic_leverage_entry(D(10), D(100), D(90), "entry")
        collateral, debt = chain._aave_position()
        freed = await chain.atomic_deleverage(debt, collateral, "exit", free_eth=collateral - debt)
        assert chain._aave_position()[1] == 0
        return freed - (collateral * (1 - D("0.002")) - debt)

    assert abs(anyio.run(scenario)) < D("1e-20")


def _reward_scenario(currency: str) -> tuple[list[ChangeSet], SimulatedChain, Decimal]:
    async def scenario() -> tuple[list[ChangeSet], SimulatedChain, Decimal]:
        clock = VirtualClock(0, None)
        reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 64)
        board = MarketBoard()
        # The reference (a CEX spot, 3000) values ETH; the DEX pool, where the chain swaps, is at 2990.
        for message in (OracleRateReported("weETH/ETH", D("1.05"), 0, 0), GasPriceReported(D(10), 0, 0),
                        PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), 0, 0),
                        PriceTicked(InstrumentId("uniswap:Dex:ETHUSDT"), D(2990), 0, 0),
                        PriceTicked(InstrumentId("uniswap:Spot:EIGENUSDT"), D(3), 0, 0)):
            board.update(message)
        event = RewardEvent(payout_ns=2 * HOUR, period_start_ns=0, period_end_ns=2 * HOUR, token="EIGEN",
                            per_eeth=D("0.2"), kind="weekly", exact=True)
        chain = SimulatedChain(clock, board, reports, {}, rewards=(event,), currency=currency)
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "weETH", D(10)),)))
        for h in range(3):
            await clock.sleep_until(h * HOUR)
            await chain.pay_rewards()
        changes = [r.change for r in (reports.receive_nowait() for _ in range(len(reports)))
                   if isinstance(r, BalancesChanged)]
        return changes, chain, D("0.2") * 10 * D("1.05")

    return anyio.run(scenario)


def test_a_usdt_share_class_sells_its_rewards_for_usdt_through_the_weth_pool_and_gains_no_eth() -> None:
    (_paid, sold), chain, tokens = _reward_scenario("USDT")
    fee = 1 - D("0.002")
    usdt = tokens * D(3) / D(3000) * fee * D(2990) * fee  # EIGEN → WETH at the pool's rate, WETH → USDT at its own
    assert sold.reason is Reason.SEASONAL_REWARDS_SOLD
    assert sold.tokens[:2] == (TokenChange(WALLET, "EIGEN", -tokens), TokenChange(WALLET, "USDT", usdt))
    gas = sold.tokens[2]
    assert gas.token == "ETH" and gas.delta < 0  # the swap's gas, and no ETH received
    assert chain.book.balance(WALLET, "ETH") == gas.delta and chain.book.balance(WALLET, "USDT") == usdt


def test_an_eth_share_class_sells_its_rewards_for_eth() -> None:
    (_paid, sold), chain, tokens = _reward_scenario("ETH")
    eth = tokens * D(3) / D(3000) * (1 - D("0.002"))
    assert sold.tokens[:2] == (TokenChange(WALLET, "EIGEN", -tokens), TokenChange(WALLET, "ETH", eth))
    assert chain.book.balance(WALLET, "USDT") == 0


def test_the_venue_files_fee_keys_are_bounded() -> None:
    base = {"name": "x", "kind": "cex", "fees": {"maker_bps": 2, "taker_bps": 5}, "maintenance_margin_ratio": 0.1}
    venue = VenueDefinition(**base, spot_fees={"maker_bps": 10, "taker_bps": 10},
                            withdrawal_fee={"ETH": 0.00168, "USDT": 15})
    assert venue.spot_fees is not None and venue.spot_fees.taker_bps == 10
    with pytest.raises(ValidationError, match=r"withdrawal_fee\.ETH"):
        VenueDefinition(**base, withdrawal_fee={"ETH": 5})
    with pytest.raises(ValidationError, match="withdrawal_fee"):
        VenueDefinition(**base, withdrawal_fee={"DOGE": 1})
    with pytest.raises(ValidationError, match="taker_bps"):
        VenueDefinition(**base, spot_fees={"maker_bps": 10, "taker_bps": 500})


def test_the_shipped_venue_files_carry_spot_and_withdrawal_fees() -> None:
    import yaml

    from tests.conftest import CONFIGS
    for name in ("binance", "bybit", "okx"):
        venue = VenueDefinition(**yaml.safe_load((CONFIGS / "venues" / f"{name}.yaml").read_text()))
        assert venue.spot_fees is not None and venue.fees is not None
        assert venue.spot_fees.taker_bps > venue.fees.taker_bps  # spot is dearer than perps at VIP 0 everywhere
        assert set(venue.withdrawal_fee) == {"ETH", "USDT"}



def test_a_margin_top_up_names_the_eth_that_must_land() -> None:
    """The strategy sizes the deleverage to free x ETH; the step says so (`free_eth`), so the chain grosses the
    swap fee up instead of landing x less 2.2 % on the venue."""
    from daemon.domain.strategy import Change, decide
    from tests.unit.test_strategy import running_view, spec

    first = decide(Change.REBALANCE, spec(), running_view(binance_usdt="3600")).instructions[0]
    deleverage, transfer = first.steps[0], first.steps[1]
    assert first.type == "ADD_MARGIN_TO_CEX" and deleverage.action == "ATOMIC_DELEVERAGE_AAVE"
    free = D(str(deleverage.params["free_eth"]))
    assert free == D(str(deleverage.params["withdraw_eth"])) - D(str(deleverage.params["repay_eth"]))
    assert abs(free - D(str(transfer.params["amount_eth"]))) < D("1e-18")
