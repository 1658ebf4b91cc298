"""The market a run sees carries the LST its mode stakes (issue 11 §3): the synthetic market and the recorded
history both build bars of that LST's oracle rate and AAVE index, and the feed publishes those (before, only
weETH's were, so a wstETH run failed every hour with "no wstETH/ETH oracle rate yet")."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.clock import VirtualClock
from daemon.data.bars import History
from daemon.data.history import read_series
from daemon.data.series import Series
from daemon.domain.market import MarketBoard
from daemon.domain.messages import OracleRateReported, ReserveIndexesReported
from daemon.domain.synthetic import HOURS_PER_YEAR, LST_MARKETS, SyntheticMarketSpec, generate
from daemon.replay.feed import BarFeed
from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
START = datetime(2024, 6, 1, tzinfo=UTC)
HOUR = 3600 * 10**9


def spec(lst: str, hours: int = 48, seed: int = 7) -> SyntheticMarketSpec:
    return SyntheticMarketSpec(seed, START, hours, ["binance", "bybit"], lst=lst)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), hours=st.integers(1, 300))
def test_every_lst_sees_the_same_eth_market_of_a_seed_only_its_own_series_differ(seed: int, hours: int) -> None:
    runs = {lst: list(generate(spec(lst, hours, seed))) for lst in LST_MARKETS}
    weeth = runs["weETH"]
    for lst, bars in runs.items():
        assert all(b.lst == lst for b in bars)
        for a, b in zip(weeth, bars, strict=True):
            assert (a.ts_ns, a.eth_spot, a.perp_marks, a.funding, a.weth_borrow_index, a.usdt_liquidity_index,
                    a.gas_gwei, a.btc_spot) == (b.ts_ns, b.eth_spot, b.perp_marks, b.funding, b.weth_borrow_index,
                                                b.usdt_liquidity_index, b.gas_gwei, b.btc_spot)


@pytest.mark.parametrize("lst", sorted(LST_MARKETS))
def test_a_synthetic_lst_starts_at_its_own_level_and_grows_at_its_staking_apr(lst: str) -> None:
    market = LST_MARKETS[lst]
    bars = list(generate(spec(lst, 1 + 24 * 30)))
    assert float(bars[0].lst_eth_oracle) == pytest.approx(market.oracle_eth, abs=1e-12)
    assert float(bars[0].lst_liquidity_index) == pytest.approx(market.liquidity_index, abs=1e-12)
    growth = float(bars[-1].lst_eth_oracle / bars[0].lst_eth_oracle)
    assert math.log(growth) == pytest.approx(24 * 30 * math.log1p(market.staking_apr / HOURS_PER_YEAR), rel=1e-6)


def test_wsteth_is_not_weeth_under_another_name() -> None:
    # Lido's wstETH has compounded since 2021 and EtherFi's weETH since 2024: their rates differ by ~13 %.
    weeth, wsteth = (next(generate(spec(lst))) for lst in ("weETH", "wstETH"))
    assert wsteth.lst_eth_oracle > weeth.lst_eth_oracle * Decimal("1.1")


def test_a_synthetic_market_for_an_lst_it_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="no synthetic market for LST 'rETH'"):
        SyntheticMarketSpec(7, START, 1, ["binance"], lst="rETH")


@pytest.mark.parametrize("lst", sorted(LST_MARKETS))
def test_the_feed_publishes_the_bar_lsts_oracle_rate_and_index_and_no_other(lst: str) -> None:
    async def go() -> list[object]:
        board = MarketBoard()
        batch = await BarFeed(generate(spec(lst, 1)), VirtualClock(0, None), {}, board).next_batch()
        assert batch is not None
        assert set(board.lst) == {lst} and lst in board.supply
        return list(batch)

    batch = anyio.run(go)
    oracles = [m for m in batch if isinstance(m, OracleRateReported)]
    assert [m.pair for m in oracles] == [f"{lst}/ETH"]
    reserves = {m.reserve for m in batch if isinstance(m, ReserveIndexesReported)}
    assert lst in reserves and not (reserves & set(LST_MARKETS)) - {lst}


def test_a_history_bar_reads_the_series_of_its_lst_only(tmp_path: Path) -> None:
    start = int(START.timestamp()) * 10**9
    asked: list[str] = []

    def load(_: Path, key: str) -> Series:
        asked.append(key)
        value = {"oracle:wstETH/ETH": 1.17, "aave:wstETH:liquidity_index": 1.0005}.get(key, 1.5)
        return Series(key, [(start + h * HOUR, value) for h in range(-1, 3)])

    (bar,) = History(tmp_path, load=load, lst="wstETH").bars(start, 1, ("binance",), False)
    assert (bar.lst, bar.lst_eth_oracle, bar.lst_liquidity_index) == ("wstETH", Decimal("1.17"), Decimal("1.0005"))
    assert not [k for k in asked if "weETH" in k]  # a wstETH run needs no weETH data
    assert History(tmp_path, lst="wstETH").identity != History(tmp_path).identity  # the bar cache tells them apart


@pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")
def test_the_recorded_wsteth_oracle_and_index_reach_the_bar_as_recorded() -> None:
    t = int(datetime(2024, 6, 1, tzinfo=UTC).timestamp()) * 10**9
    (bar,) = History(DATA, lst="wstETH").bars(t, 1, ("binance", "bybit"), False)
    oracle = read_series(DATA, "oracle:wstETH/ETH").at(t, 0)
    index = read_series(DATA, "aave:wstETH:liquidity_index").at(t, 0)
    assert bar.lst == "wstETH"
    assert bar.lst_eth_oracle == Decimal(repr(oracle)).quantize(Decimal("1e-15"))
    assert bar.lst_liquidity_index == Decimal(repr(index)).quantize(Decimal("1e-15"))
    assert Decimal("1.16") < bar.lst_eth_oracle < Decimal("1.18")  # 1.16831 in the file on 2024-06-01 00:00
