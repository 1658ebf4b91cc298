from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.data.history import CATALOG, DataLayoutError, read_series
from daemon.data.series import Series, StaleData
from daemon.data.timeparse import NS, BadTimestamp, parse_ts
from daemon.domain.bars import MarketBar

H = 3600 * NS
T0 = parse_ts("2024-05-12T00:00:00Z")


@pytest.mark.parametrize("text", [
    "2024-05-12T00:00:00Z", "2024-05-12 00:00:00+00:00", "2024-05-12T00:00:00+00:00Z", "1715472000",
    "1715472000000", "2024-05-12", "2024-05-12 00:00:00",
])
def test_every_timestamp_format_in_the_data_is_the_same_instant(text: str) -> None:
    assert parse_ts(text) == T0


def test_an_unknown_timestamp_is_an_error_naming_it() -> None:
    with pytest.raises(BadTimestamp, match="'12/05/2024'"):
        parse_ts("12/05/2024")


def test_as_of_takes_the_last_value_at_or_before_never_a_later_one() -> None:
    s = Series("perp:okx:ETH", [(T0 + H, 2.0), (T0, 1.0), (T0 + 3 * H, 4.0)])
    assert s.at(T0, 7200) == 1.0
    assert s.at(T0 + H + 59 * NS, 7200) == 2.0
    assert s.at(T0 + 2 * H, 7200) == 2.0  # not the 03:00 row
    with pytest.raises(StaleData, match="perp:okx:ETH: no value at 2024-05-11 23:00 within 2 h \\(no value"):
        s.at(T0 - H, 7200)  # before the first row: an error, never the first row (the seed's bug)
    with pytest.raises(StaleData, match="last value at 2024-05-12 03:00"):
        s.at(T0 + 6 * H, 7200)


@given(st.lists(st.integers(0, 500), min_size=1, max_size=60), st.integers(-10, 520))
def test_as_of_never_looks_ahead(hours: list[int], t_hour: int) -> None:
    s = Series("x", [(T0 + h * H, float(h)) for h in hours])
    try:
        value = s.at(T0 + t_hour * H, max_age_s=10**9)
    except StaleData:
        assert t_hour < min(hours)
        return
    assert value == max(h for h in hours if h <= t_hour)


def test_duplicates_keep_the_first_row_and_are_counted_and_gaps_are_found() -> None:
    s = Series("funding:okx:ETH", [(T0, 1.0), (T0, 9.0), (T0 + 8 * H, 2.0), (T0 + 40 * H, 3.0)])
    assert (len(s), s.duplicates, s.at(T0, 1)) == (3, 1, 1.0)
    (gap,) = s.gaps(8 * 3600)
    assert gap.hours == 32


def write(tmp: Path, relative: str, text: str) -> None:
    path = tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_readers_skip_comment_lines_and_name_missing_columns_and_files(tmp_path: Path) -> None:
    write(tmp_path, "aave/oracle/weETH_ETH_oracle_x.csv",
          "# Source: test\n# Records: 2\ntimestamp,oracle_price_eth\n2024-05-12 01:00:00+00:00,1.04\n"
          "2024-05-12 02:00:00+00:00,1.05\n")
    s = read_series(tmp_path, "oracle:weETH/ETH")
    assert len(s) == 2 and s.at(T0 + 2 * H, 3600) == 1.05
    write(tmp_path, "chain/gas/ethereum_gas_prices_x.csv", "timestamp,gas_price_gwei\n2024-05-12T00:00:00Z,5\n")
    with pytest.raises(DataLayoutError, match="no column 'gas_price_avg_gwei'"):
        read_series(tmp_path, "gas:gwei")
    with pytest.raises(DataLayoutError, match="perp:okx:ETH: no file matches"):
        read_series(tmp_path, "perp:okx:ETH")
    with pytest.raises(DataLayoutError, match="unknown series"):
        read_series(tmp_path, "perp:kraken:ETH")


def test_hourly_indexes_from_daily_snapshots_never_use_the_next_day(tmp_path: Path) -> None:
    header = "targetDate,timestamp,liquidityIndex,currentLiquidityRate,variableBorrowIndex,currentVariableBorrowRate\n"
    day1 = "2024-01-01T00:00:00Z,1704067200,1.10,0.0876,1.20,0.0876\n"
    day2 = "2024-01-02T00:00:00Z,1704153600,9.99,0.5,9.99,0.5\n"  # absurd: any influence would show
    write(tmp_path, "aave/rates/aave_v3_aave-v3-ethereum_USDT_rates_2024-01-01_2025-09-18.csv", header + day1 + day2)
    s = read_series(tmp_path, "aave:USDT:liquidity_index")
    noon = parse_ts("2024-01-01T12:00:00Z")
    assert s.at(noon, 3600) == pytest.approx(1.10 * (1 + 0.0876 * 12 / (365 * 24)))
    assert s.at(parse_ts("2024-01-01T23:00:00Z"), 3600) < 1.11


def test_the_catalog_names_a_staleness_limit_per_cadence() -> None:
    assert CATALOG["perp:okx:ETH"].max_age_s == 2 * 3600
    assert CATALOG["funding:okx:ETH"].max_age_s == 9 * 3600


def test_the_cache_serves_a_second_read_and_notices_an_edited_file(tmp_path: Path) -> None:
    import os

    from daemon.data.cache import SeriesCache

    data = tmp_path / "data"
    oracle = "aave/oracle/weETH_ETH_oracle_x.csv"
    write(data, oracle, "timestamp,oracle_price_eth\n2024-05-12 01:00:00+00:00,1.04\n")
    cache = SeriesCache(tmp_path / "cache")
    first = cache.load(data, "oracle:weETH/ETH")
    second = cache.load(data, "oracle:weETH/ETH")
    assert (cache.misses, cache.hits) == (1, 1)
    assert list(second.ts) == list(first.ts) and list(second.values) == [1.04]
    write(data, oracle, "timestamp,oracle_price_eth\n2024-05-12 01:00:00+00:00,1.05\n")
    os.utime(data / oracle, ns=(1, 1))  # a different file identity, whatever the clock's resolution
    assert list(cache.load(data, "oracle:weETH/ETH").values) == [1.05]
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"not a pickle")  # a damaged entry is a miss, never data
    assert list(cache.load(data, "oracle:weETH/ETH").values) == [1.05]
    assert cache.misses == 3


def test_the_feed_gives_weth_its_own_liquidity_index_not_the_borrow_index() -> None:
    """Found on history: pure lending ETH accrued at the borrow rate because the feed sent B as both indexes."""
    from datetime import UTC, datetime

    import anyio

    from daemon.clock import VirtualClock
    from daemon.domain.messages import ReserveIndexesReported
    from daemon.domain.synthetic import SyntheticMarketSpec, generate
    from daemon.replay.feed import BarFeed

    async def first_batch() -> list[object]:
        bars = generate(SyntheticMarketSpec(1, datetime(2024, 6, 1, tzinfo=UTC), 2, ["binance"]))
        batch = await BarFeed(bars, VirtualClock(0, None), {}).next_batch()
        assert batch is not None
        return list(batch)

    weth = [m for m in anyio.run(first_batch) if isinstance(m, ReserveIndexesReported) and m.reserve == "WETH"]
    assert len(weth) == 1 and weth[0].liquidity_index < weth[0].borrow_index


def test_the_bar_cache_replays_the_same_bars_and_proxy_decisions_and_notices_an_edited_file(tmp_path: Path) -> None:
    import os

    from daemon.data.bars import History
    from daemon.data.cache import BarCache
    from daemon.data.series import Series

    hour = 3600 * 10**9
    start = 1_715_475_600 * 10**9
    data = tmp_path / "data"
    write(data, "marker.csv", "timestamp,x\n")
    loads: list[str] = []

    def load(_: Path, key: str) -> Series:
        loads.append(key)
        # OKX has no data at all (its perp borrows Binance's); everything else is 1.5 every hour.
        rows = [] if key.startswith("perp:okx") else [(start + h * hour, 1.5) for h in range(4)]
        return Series(key, rows)

    def run(cache: BarCache) -> list[tuple[object, tuple[object, ...]]]:
        history = History(data, load=load)
        return list(cache.bars(history, start, 3, ("binance", "okx"), False))

    cold = BarCache(tmp_path / "cache")
    first = run(cold)
    assert not cold.hit and loads
    assert [len(events) for _, events in first] == [1, 0, 0]  # the proxy is taken once, at the first bar
    loads.clear()
    warm = BarCache(tmp_path / "cache")
    assert run(warm) == first and warm.hit and loads == []  # nothing parsed, the same decisions replayed
    os.utime(data / "marker.csv", ns=(1, 1))  # any file of the data directory changed: built again
    rebuilt = BarCache(tmp_path / "cache")
    assert run(rebuilt) == first and not rebuilt.hit and loads


def test_a_bar_carries_the_extremes_of_the_hour_that_just_ended(tmp_path: Path) -> None:
    from daemon.data.bars import History
    from daemon.data.series import Series

    hour = 3600 * 10**9
    start = 1_715_475_600 * 10**9

    def load(_: Path, key: str) -> Series:
        # Highs and lows move hour by hour (100 + h and 90 + h); every other series is flat.
        if key.startswith("perp_high"):
            return Series(key, [(start + h * hour, 100.0 + h) for h in range(-1, 4)])
        if key.startswith("perp_low"):
            return Series(key, [(start + h * hour, 90.0 + h) for h in range(-1, 4)])
        return Series(key, [(start + h * hour, 1.5) for h in range(-1, 4)])

    bars = list(History(tmp_path, load=load).bars(start, 2, ("binance",), False))
    # The bar at `start` has the candle that opened an hour before it, not its own (which is still running).
    assert bars[0].perp_ranges == (("binance", "ETH", Decimal("99.00"), Decimal("89.00")),)
    assert bars[1].perp_ranges == (("binance", "ETH", Decimal("100.00"), Decimal("90.00")),)


# --- issue 10 §3: a malformed history file fails the run, naming the file, the line and the value ---------------


def test_a_bad_timestamp_names_the_file_its_own_line_number_and_the_value_and_is_a_data_error(tmp_path: Path) -> None:
    from daemon.errors import DataError, ExitCode

    relative = "aave/oracle/weETH_ETH_oracle_x.csv"
    write(tmp_path, relative, "# Source: test\n# Records: 3\ntimestamp,oracle_price_eth\n"
                              "2024-05-12 01:00:00+00:00,1.04\n2024-05-12T02:00:00QQ,1.05\n")
    with pytest.raises(DataLayoutError) as caught:
        read_series(tmp_path, "oracle:weETH/ETH")
    # Line 5 of the file (two comment lines and the header before it), not the 3rd row of the CSV reader.
    assert str(caught.value) == (f"{tmp_path / relative}:5: timestamp: unrecognized timestamp "
                                 "'2024-05-12T02:00:00QQ' (series oracle:weETH/ETH)")
    assert isinstance(caught.value, DataError) and int(caught.value.exit_code) == int(ExitCode.DATA) == 65


@pytest.mark.parametrize(("row", "message"), [
    ("2024-05-12T02:00:00Z,nan", ":4: oracle_price_eth: 'nan' is not a finite number"),
    ("2024-05-12T02:00:00Z,inf", ":4: oracle_price_eth: 'inf' is not a finite number"),
    ("2024-05-12T02:00:00Z,1.0x", ":4: oracle_price_eth: '1.0x' is not a number"),
    ("2024-05-12T02:00:00Z", ":4: the row has no 'oracle_price_eth' field"),
    ("99999999999999999999,1.0", ":4: timestamp: timestamp '99999999999999999999' is outside"),
    ("2024-05-12T02:00:00Z," + "9" * 5000, "(5000 characters) is not a finite number"),
    ("2024-05-12T02:00:00Z,1.0\x00", ":4: oracle_price_eth: '1.0\\x00' is not a number"),
])
def test_every_malformed_row_is_a_data_layout_error_naming_line_and_value(tmp_path: Path, row: str,
                                                                          message: str) -> None:
    relative = "aave/oracle/weETH_ETH_oracle_x.csv"
    write(tmp_path, relative, f"# Source: test\ntimestamp,oracle_price_eth\n2024-05-12 01:00:00+00:00,1.04\n{row}\n")
    with pytest.raises(DataLayoutError, match=re.escape(message)) as caught:
        read_series(tmp_path, "oracle:weETH/ETH")
    assert len(str(caught.value)) < 400  # a huge field is cut short in the message, never echoed whole


def test_an_empty_or_undecodable_file_is_a_data_layout_error_and_a_missing_one_is_no_input(tmp_path: Path) -> None:
    from daemon.data.history import MissingFileError
    from daemon.errors import ExitCode

    relative = "aave/oracle/weETH_ETH_oracle_x.csv"
    write(tmp_path, relative, "# Source: test\ntimestamp,oracle_price_eth\n")
    with pytest.raises(DataLayoutError, match="no data rows"):
        read_series(tmp_path, "oracle:weETH/ETH")
    (tmp_path / relative).write_bytes(b"timestamp,oracle_price_eth\n2024-05-12 01:00:00+00:00,1.04\xe9\n")
    with pytest.raises(DataLayoutError, match="not UTF-8"):
        read_series(tmp_path, "oracle:weETH/ETH")
    with pytest.raises(MissingFileError) as caught:
        read_series(tmp_path, "gas:gwei")
    assert int(caught.value.exit_code) == int(ExitCode.NO_INPUT) == 66


@pytest.mark.parametrize("text", ["99999999999", "4102444800", "²", "1" * 100])
def test_timestamps_outside_any_market_history_are_refused(text: str) -> None:
    with pytest.raises(BadTimestamp):
        parse_ts(text)


def test_a_lookup_past_the_end_of_a_series_says_so() -> None:
    s = Series("spot:ETH", [(T0, 1.0), (T0 + H, 2.0)])
    with pytest.raises(StaleData, match="last value at 2024-05-12 01:00, where its history ends"):
        s.at(T0 + 100 * H, 7200)
    with pytest.raises(StaleData, match="no value before it: its history begins at 2024-05-12 00:00"):
        s.at(T0 - 100 * H, 7200)


# --- the feed: a failure is fatal, and never taken for the end of the replay ---------------------------------


def _bars_then(failure: Exception, good: int = 1) -> Iterator[MarketBar]:
    from datetime import UTC, datetime

    from daemon.domain.synthetic import SyntheticMarketSpec, generate

    yield from list(generate(SyntheticMarketSpec(1, datetime(2024, 6, 1, tzinfo=UTC), good + 1, ["binance"])))[:good]
    raise failure


@pytest.mark.parametrize("failure", [DataLayoutError("gas.csv:7: timestamp: unrecognized timestamp 'x'"),
                                     AttributeError("'dict' object has no attribute 'ts_ns'")])
def test_a_bar_source_that_raised_fails_the_feed_on_every_later_call_never_ends_it(failure: Exception) -> None:
    import anyio

    from daemon.clock import VirtualClock
    from daemon.errors import FatalError
    from daemon.replay.feed import BarFeed

    async def go() -> list[str]:
        feed = BarFeed(_bars_then(failure), VirtualClock(0, None), {})
        assert await feed.next_batch()  # the good bar
        seen = []
        for _ in range(3):  # a restarted reader must meet the failure again, not None ("the replay ended")
            with pytest.raises(FatalError) as caught:
                await feed.next_batch()
            seen.append(str(caught.value))
        assert feed.delivered == 1
        return seen

    messages = anyio.run(go)
    assert len(set(messages)) == 1 and str(failure) in messages[0]


def test_the_market_data_actor_fails_the_supervisor_on_a_feed_failure_instead_of_restarting() -> None:
    import random

    import anyio

    from actors.market_data import MarketDataActor
    from daemon.bus import Fanout
    from daemon.clock import VirtualClock
    from daemon.errors import FeedError
    from daemon.supervisor import RestartPolicy, Supervisor
    from daemon.trading import TradingStateCell

    class BrokenFeed:
        calls = 0

        async def next_batch(self) -> None:
            BrokenFeed.calls += 1
            raise RuntimeError("the feed broke")

    actor = MarketDataActor(BrokenFeed(), Fanout([]))
    sup = Supervisor([actor], clock=VirtualClock(0, None), trading=TradingStateCell(),
                     policy=RestartPolicy(initial_backoff_s=0.001), heartbeat_interval_s=0.05,
                     heartbeat_timeout_s=1.0, rng=random.Random(1))
    with pytest.raises(FeedError, match="the market feed failed: RuntimeError: the feed broke"):
        anyio.run(sup.run)
    assert BrokenFeed.calls == 1 and not actor.exhausted.is_set()
    assert sup.records["market_data"].restarts == 0


# --- the caches: another version's entries are never read; damaged ones are a miss with a warning -------------


def _bar_cache_run(tmp_path: Path, cache_dir: Path) -> tuple[list[tuple[object, tuple[object, ...]]], bool]:
    from daemon.data.bars import History
    from daemon.data.cache import BarCache

    hour, start = 3600 * 10**9, 1_715_475_600 * 10**9
    data = tmp_path / "data"
    if not (data / "marker.csv").exists():  # the same file identity on every run: the same cache key
        write(data, "marker.csv", "timestamp,x\n")

    def load(_: Path, key: str) -> Series:
        return Series(key, [(start + h * hour, 1.5) for h in range(-1, 4)])

    cache = BarCache(cache_dir)
    return list(cache.bars(History(data, load=load), start, 3, ("binance",), False)), cache.hit


def test_the_bar_cache_key_holds_the_code_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.data import cache

    first, hit = _bar_cache_run(tmp_path, tmp_path / "cache")
    assert not hit and _bar_cache_run(tmp_path, tmp_path / "cache") == (first, True)
    monkeypatch.setattr(cache, "code_version", lambda: "another version of the code")
    assert _bar_cache_run(tmp_path, tmp_path / "cache") == (first, False)


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps([({"ts_ns": 0}, ())] * 3), pickle.dumps([]),
                                     pickle.dumps(("perp:binance:ETH", 0, b"", b""))])
def test_a_damaged_or_foreign_bar_cache_entry_is_a_miss_with_a_warning(tmp_path: Path, content: bytes) -> None:
    import structlog

    first, _ = _bar_cache_run(tmp_path, tmp_path / "cache")
    for entry in (tmp_path / "cache").glob("*.bars"):
        entry.write_bytes(content)  # what another version (or a crash, or a full disk) may have left
    with structlog.testing.capture_logs() as logs:
        again, hit = _bar_cache_run(tmp_path, tmp_path / "cache")
    assert (again, hit) == (first, False)
    assert [e["event"] for e in logs] == ["cache_entry_unreadable"]


class _Planted:
    """Unpickling it creates a file: a stand-in for the code another user could plant in a shared cache."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")  # unpickled: open(marker, "w"), i.e. code of the planter's choosing


def test_a_cache_directory_others_can_write_is_never_read(tmp_path: Path) -> None:
    import os

    first, _ = _bar_cache_run(tmp_path, tmp_path / "cache")
    marker = tmp_path / "planted-code-ran"
    for entry in (tmp_path / "cache").glob("*.bars"):
        entry.write_bytes(pickle.dumps(_Planted(marker)))
    os.chmod(tmp_path / "cache", 0o777)
    again, hit = _bar_cache_run(tmp_path, tmp_path / "cache")
    assert (again, hit) == (first, False) and not marker.exists()
