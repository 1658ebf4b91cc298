"""One ETH/USD reference for valuation (issue 11 §2), and OKX's duplicated funding rows.

ETH is valued at one liquid reference (a CEX spot standing in for the perps' index: `ETH_REFERENCE`), the perps
at their own venue's marks, and the gap between them is `basis_pnl`; a DEX swap still executes at the pool's
own price, and the gap to the reference is that trade's cost."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.data.bars import ETH_REFERENCE, DuplicatesResolved, History
from daemon.data.cache import SeriesCache
from daemon.data.series import Series
from daemon.domain.bars import MarketBar
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketBoard, MarketState
from daemon.domain.messages import BalancesChanged, VenueReport
from daemon.domain.pnl import BASIS, COSTS, DELTA, attribute_step, nav_usd
from daemon.replay.feed import BarFeed
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal
HOUR = 3600 * 10**9
START = 1_715_475_600 * 10**9


def _series(values: dict[str, float]) -> object:
    def load(_: Path, key: str) -> Series:
        return Series(key, [(START + h * HOUR, values.get(key, 1.5)) for h in range(-1, 4)])
    return load


def test_a_history_bar_carries_the_cex_reference_beside_the_dex_price(tmp_path: Path) -> None:
    load = _series({"spot:ETH": 2000.0, ETH_REFERENCE: 2010.0})
    (bar,) = History(tmp_path, load=load).bars(START, 1, ("binance",), False)  # type: ignore[arg-type]
    assert (bar.eth_spot, bar.eth_reference) == (D("2000.00"), D("2010.00"))


def _bar(dex: Decimal, reference: Decimal, marks: tuple[tuple[str, Decimal], ...]) -> MarketBar:
    return MarketBar(ts_ns=0, eth_spot=dex, perp_marks=marks, funding=(), lst_liquidity_index=D(1),
                     weth_borrow_index=D(1), usdt_liquidity_index=D(1), lst_eth_oracle=D("1.05"), gas_gwei=D(0),
                     eth_reference=reference)


def test_the_feed_values_eth_at_the_reference_and_the_chain_swaps_at_the_pool() -> None:
    async def scenario() -> tuple[MarketBoard, SimulatedExchange, list[VenueReport]]:
        clock = VirtualClock(0, None)
        reports: LosslessChannel[VenueReport] = LosslessChannel("r", 16)
        exchange = SimulatedExchange("binance", clock, reports, taker_fee_bps=D(0))
        board = MarketBoard()
        feed = BarFeed(iter([_bar(D(2000), D(2010), (("binance", D(2011)),))]), clock, {"binance": exchange}, board)
        await feed.next_batch()
        chain = SimulatedChain(clock, board, reports, {"binance": exchange}, swap_fee_bps=D(0))
        chain.receive(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(1)),)))
        await chain.swap_eth_to_usdt(D(1), "s1")
        return board, exchange, [reports.receive_nowait() for _ in range(len(reports))]

    board, exchange, reports = anyio.run(scenario)
    assert board.state().price_usd("ETH") == D(2010)  # valuation: the reference
    assert board.dex_prices["ETH"] == D(2000)  # execution on chain: the pool's own price
    assert exchange._prices[("Spot", "ETH")] == D(2010)  # a CEX spot book trades at the CEX price
    (swap,) = (r.change for r in reports if isinstance(r, BalancesChanged))
    assert TokenChange(WALLET, "USDT", D(2000)) in swap.tokens
    # Valued at the reference, the swap cost exactly the gap between the pool and the reference.
    before, after = Ledger(()), Ledger(())
    for ledger in (before, after):
        ledger.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", D(1)),)))
    after.apply(swap)
    market = board.state()
    step = attribute_step(before.snapshot(), market, after.snapshot(), market, [swap])
    assert step.components[COSTS] == D(-10) and step.residual == 0


def test_a_bar_without_a_reference_has_one_price_for_both() -> None:
    async def scenario() -> MarketBoard:
        board = MarketBoard()
        await BarFeed(iter([_bar(D(2000), D(0), (("binance", D(2001)),))]), VirtualClock(0, None), {},
                      board).next_batch()
        return board

    board = anyio.run(scenario)
    assert board.state().price_usd("ETH") == D(2000) == board.dex_price("ETH")


def _hedged(eth: Decimal) -> Ledger:
    ledger = Ledger(("binance",))
    ledger.apply(ChangeSet(Reason.DEPOSIT, 0, (TokenChange(WALLET, "ETH", eth), TokenChange("binance", "USDT",
                                                                                            D(10_000)))))
    ledger.apply(ChangeSet(Reason.TRADE_EXECUTED, 0, (), (PerpChange("binance", "ETHUSDT", -eth, D(2000)),)))
    return ledger


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.decimals(1500, 2500, places=2), st.decimals(-20, 20, places=2),
                          st.just(D(0))), min_size=2, max_size=12))
def test_a_hedged_book_moves_only_by_the_basis_between_marks_and_the_reference(
        path: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    """A long hedged by an equal short: valued at one reference, the NAV moves by q·Δ(mark − reference) alone
    (the basis, which a thin DEX price used to swamp), delta P&L is zero, and the attribution is exact."""
    ledger = _hedged(D(17)).snapshot()
    markets = [MarketState(0, {"ETH": ref}, {("binance", "ETH"): ref + basis}) for ref, basis, _ in path]
    for m0, m1 in pairwise(markets):
        step = attribute_step(ledger, m0, ledger, m1, [])
        basis_move = -17 * ((m1.mark("binance", "ETH") - m1.price_usd("ETH"))
                            - (m0.mark("binance", "ETH") - m0.price_usd("ETH")))
        assert step.components[DELTA] == 0
        assert step.components[BASIS] == basis_move == nav_usd(ledger, m1) - nav_usd(ledger, m0)
        assert step.residual == 0


# --- OKX's duplicated funding settlements -------------------------------------------------------------------


def _funding_history(tmp_path: Path, okx: list[tuple[int, float]], others: bool = True) -> History:
    settle = [START + 7 * HOUR + 8 * k * HOUR for k in range(3)]  # 08:00, 16:00, 00:00

    def load(_: Path, key: str) -> Series:
        if key == "funding:okx:ETH":
            return Series(key, okx)
        if key.startswith("funding:"):
            return Series(key, [(t, 4e-5 if others else 0.0) for t in settle] if others else [])
        return Series(key, [(START + h * HOUR, 1.5) for h in range(-1, 30)])

    return History(tmp_path, load=load)


def test_a_duplicated_funding_settlement_takes_the_rate_nearest_the_other_venues(tmp_path: Path) -> None:
    t0, t1, t2 = (START + 7 * HOUR + 8 * k * HOUR for k in range(3))
    # As in OKX's file: at each duplicated settlement one row agrees with Binance and Bybit (4e-5), the other
    # does not — first in the file at t0, second at t1 (first-row-wins picked the outlier half the time).
    history = _funding_history(tmp_path, [(t0, 1e-4), (t0, 3.5e-5), (t1, 5e-5), (t1, -4e-4), (t2, 6e-5)])
    rates = [history.funding_rate("okx", "ETH", t) for t in (t0, t1, t2)]
    assert rates == [3.5e-5, 5e-5, 6e-5]
    decisions = [e for e in history.proxy_events if isinstance(e, DuplicatesResolved)]
    assert len(decisions) == 1  # reported once for the series, however many settlements it decided
    assert (decisions[0].series, decisions[0].timestamps, decisions[0].from_ns) == ("funding:okx:ETH", 2, t0)


def test_with_no_other_venue_a_duplicate_takes_the_rate_nearest_the_previous_settlement(tmp_path: Path) -> None:
    t0, t1 = START + 7 * HOUR, START + 15 * HOUR
    history = _funding_history(tmp_path, [(t0, 2e-5), (t1, 4e-4), (t1, 3e-5)], others=False)
    assert [history.funding_rate("okx", "ETH", t) for t in (t0, t1)] == [2e-5, 3e-5]


def test_bars_pay_the_decided_rate(tmp_path: Path) -> None:
    t0 = START + 7 * HOUR
    history = _funding_history(tmp_path, [(t0, -4e-4), (t0, 3.9e-5)])
    bars = list(history.bars(START, 8, ("binance", "okx"), False))
    assert dict(bars[7].funding)["okx"] == D("0.0000390000")


def test_series_keep_conflicting_duplicates_and_the_cache_keeps_them_too(tmp_path: Path) -> None:
    s = Series("funding:okx:ETH", [(START, 1e-4), (START, 1e-4), (START + HOUR, 2e-5), (START + HOUR, -3e-4)])
    assert s.duplicates == 2 and s.conflicts == {START + HOUR: (2e-5, -3e-4)}  # identical rows are no conflict
    data = tmp_path / "data"
    path = data / "cex" / "funding_rates" / "okx_ETHUSDT_funding_rates_x.csv"
    path.parent.mkdir(parents=True)
    path.write_text("funding_timestamp,funding_rate\n2024-05-12T00:00:00Z,0.0001\n2024-05-12T00:00:00Z,-0.0004\n")
    cold, warm = SeriesCache(tmp_path / "cache"), SeriesCache(tmp_path / "cache")
    first = cold.load(data, "funding:okx:ETH")
    again = warm.load(data, "funding:okx:ETH")
    assert warm.hits == 1 and first.conflicts == again.conflicts == {first.ts[0]: (1e-4, -4e-4)}



def test_a_mark_held_over_a_gap_gives_way_to_the_proxys_mark_of_the_hour(tmp_path: Path) -> None:
    """Binance's paging gaps: its last mark was held for two hours (the staleness limit) while the market moved,
    a basis that never existed (+$240 then -$420 of basis_pnl that reverted). The proxy's own mark of the hour
    is used instead, and the borrowing reported."""
    def load(_: Path, key: str) -> Series:
        if key == "perp:binance:ETH":  # hours 0 and 1 only: a gap from hour 2
            return Series(key, [(START + h * HOUR, 2000.0 + h) for h in range(2)])
        if key == "perp:bybit:ETH":
            return Series(key, [(START + h * HOUR, 2100.0 + h) for h in range(-1, 6)])
        return Series(key, [(START + h * HOUR, 1.5) for h in range(-1, 6)])

    history = History(tmp_path, load=load)
    bars = list(history.bars(START, 4, ("binance",), False))
    assert [dict(b.perp_marks)["binance"] for b in bars] == [D("2000.00"), D("2001.00"), D("2102.00"), D("2103.00")]
    assert [(e.series, e.from_ns) for e in history.proxy_events] == [("perp:binance:ETH", START + 2 * HOUR)]
