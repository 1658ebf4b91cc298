"""Reward events, staking yields and reward-token prices: small files in the real layout, then the real history."""

from __future__ import annotations

import csv
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.data.history import CATALOG, DataLayoutError, read_series
from daemon.data.rewards import (
    KINDS,
    REWARD_MODES,
    RewardEvent,
    events_for_mode,
    oracle_staking_apr,
    read_reward_events,
    read_staking_yields,
)
from daemon.data.series import Series, StaleData
from daemon.data.timeparse import NS, parse_ts
from tests.conftest import ROOT

DATA = ROOT.parent / "shared" / "data"
real_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")

H = 3600 * NS
DAY = 24 * H
REWARDS = "staking/distributions/etherfi_seasonal_rewards_2024-01-01_2025-09-18.csv"
RAW = "staking/distributions/eigen_distributions_raw.csv"
HEADER = ("period_start,period_end,payout_date,period_days,reward_type,event_name,eigen_per_eeth_weekly,"
          "eigen_price_usd,eth_price_usd,weekly_reward_eth,daily_yield_pct,daily_yield_conservative,"
          "daily_yield_aggressive,daily_yield_final,distribution_mechanism,data_source,data_quality,"
          "defillama_reward_apy,ethfi_per_eeth,ethfi_price_usd,distribution_eth\n")


def day(text: str) -> int:
    return parse_ts(text)


def eigen(start: str, end: str, figure: str, payout: str = "") -> str:
    return (f"{start},{end},{payout or end},6,EIGEN_via_KING,EIGEN_Weekly_Distribution,{figure},3.5,2600,0.0002,"
            f"3e-05,2e-05,4e-05,3e-05,king_protocol_weekly,real_eigen_distribution,exact,,,,\n")


def ethfi(start: str, end: str, payout: str, amount: str, seasonal: bool = False) -> str:
    if seasonal:
        return (f"{start},{end},{payout},14,ETHFI_Seasonal_Airdrop,Season 1,,,3500,,5e-4,4e-4,7e-4,4e-4,"
                f"seasonal_airdrop,estimated_seasonal_drops,estimated,,{amount},2.8,0.007\n")
    return (f"{start},{end},{payout},6,ETHFI_via_KING,ETHFI_TopUp,,,2600,,5e-06,4e-06,6e-06,5e-06,"
            f"king_protocol_adhoc_topup,real_ethfi_topup,exact,,{amount},2.8,0.0002\n")


def estimate(date: str, daily: str) -> str:
    return (f"{date},{date},{date},1,EIGEN_via_DEFILLAMA,EIGEN_DeFiLlama_Approximation,,,,,{daily},5e-06,1e-05,"
            f"5e-06,defillama_approximation,defillama_fallback,estimated,0.003,,,\n")


def write(tmp: Path, relative: str, text: str) -> Path:
    path = tmp / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- reward events from small files ---------------------------------------------------------------------------


def test_events_are_sorted_by_payout_comments_skipped_and_only_weekly_and_topups_by_default(tmp_path: Path) -> None:
    write(tmp_path, REWARDS, "# Source: test\n# Records: 5\n" + HEADER
          + ethfi("2024-10-06", "2024-10-12", "2024-10-28", "0.020")
          + eigen("2024-10-13", "2024-10-19", "0.178")
          + eigen("2024-10-06", "2024-10-12", "0.179")
          + ethfi("2024-03-01", "2024-03-15", "2024-03-18", "10.0", seasonal=True)
          + estimate("2025-08-03", "8.2e-06"))
    events = read_reward_events(tmp_path)
    assert [(e.token, e.kind, e.per_eeth) for e in events] == [
        ("EIGEN", "weekly", Decimal("0.179")), ("EIGEN", "weekly", Decimal("0.178")),
        ("ETHFI", "topup", Decimal("0.020"))]
    assert all(e.exact for e in events)
    assert [e.payout_ns for e in events] == sorted(e.payout_ns for e in events)
    everything = read_reward_events(tmp_path, KINDS)
    assert Counter(e.kind for e in everything) == {"weekly": 2, "topup": 1, "seasonal": 1, "estimate": 1}
    assert [e.exact for e in everything if e.kind in ("seasonal", "estimate")] == [False, False]


def test_the_period_end_is_the_end_of_its_day_and_a_payout_never_precedes_it(tmp_path: Path) -> None:
    write(tmp_path, REWARDS, HEADER + eigen("2024-10-06", "2024-10-12", "0.179")
          + ethfi("2024-10-06", "2024-10-12", "2024-10-28", "0.020"))
    weekly, topup = read_reward_events(tmp_path)
    assert weekly.period_start_ns == day("2024-10-06")
    assert weekly.period_end_ns == day("2024-10-13")  # the 12th is included, whole
    assert weekly.payout_ns == day("2024-10-13")  # payout_date 2024-10-12 00:00 would precede 24 h of the period
    assert (topup.period_end_ns, topup.payout_ns) == (day("2024-10-13"), day("2024-10-28"))


def test_identical_duplicates_are_dropped_and_conflicting_ones_name_both_lines(tmp_path: Path) -> None:
    row = eigen("2024-10-06", "2024-10-12", "0.179")
    write(tmp_path, REWARDS, HEADER + row + row + eigen("2024-10-13", "2024-10-19", "0.178"))
    assert len(read_reward_events(tmp_path)) == 2
    write(tmp_path, REWARDS, HEADER + row + eigen("2024-10-13", "2024-10-19", "0.178")
          + eigen("2024-10-06", "2024-10-12", "0.180"))
    with pytest.raises(DataLayoutError, match=r"etherfi_seasonal_rewards_2024-01-01_2025-09-18\.csv:4: .*line 2 .*"
                                              r"\(0\.180 vs 0\.179\)"):
        read_reward_events(tmp_path)


@pytest.mark.parametrize(("bad", "message"), [
    (eigen("2024-10-13", "2024-10-19", "lots"), "eigen_per_eeth_weekly 'lots' is not a number"),
    (eigen("2024-10-13", "2024-10-19", ""), "empty eigen_per_eeth_weekly"),
    (eigen("2024-10-13", "2024-10-19", "-0.1"), "not a finite non-negative amount"),
    (eigen("2024-10-19", "2024-10-13", "0.178"), "period_end 2024-10-13 is before period_start 2024-10-19"),
    (eigen("19/10/2024", "2024-10-13", "0.178"), "unrecognized timestamp '19/10/2024'"),
    (eigen("2024-10-13", "2024-10-19", "0.178").replace("EIGEN_via_KING", "EIGEN_via_MAGIC"),
     "unknown reward_type 'EIGEN_via_MAGIC'"),
    (eigen("2024-10-13", "2024-10-19", "0.178").replace("exact", "guessed"), "unknown data_quality 'guessed'"),
])
def test_a_bad_row_is_an_error_naming_the_file_and_its_line(tmp_path: Path, bad: str, message: str) -> None:
    # two comment lines, the header and a good row come first: the bad row is the file's fifth line
    write(tmp_path, REWARDS, "# a\n# b\n" + HEADER + eigen("2024-10-06", "2024-10-12", "0.179") + bad)
    with pytest.raises(DataLayoutError, match=rf"etherfi_seasonal_rewards_[0-9_-]+\.csv:5: .*{message}"):
        read_reward_events(tmp_path)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    write(tmp_path, REWARDS, HEADER.replace("ethfi_per_eeth", "ethfi_amount")
          + ethfi("2024-10-06", "2024-10-12", "2024-10-28", "0.020"))
    with pytest.raises(DataLayoutError, match=":2: no column 'ethfi_per_eeth'"):
        read_reward_events(tmp_path)
    with pytest.raises(DataLayoutError, match="no file matches"):
        read_reward_events(tmp_path / "elsewhere")


def test_a_week_of_any_length_pays_its_figure_and_a_multi_week_period_pays_it_once_per_week(tmp_path: Path) -> None:
    raw = ("staking_period_start,staking_period_end,eigen_earned,eth_restaked,eth_not_restaked,"
           "eigen_per_eeth_weekly\n2024-08-15,2024-10-05,2478088,1480684,532110,0.205\n"
           "2024-10-06,2024-10-12,358681,1531605,474149,0.179\n")
    write(tmp_path, REWARDS, HEADER
          + eigen("2024-08-15", "2024-10-05", "0.205")  # 52 days: 6 weeks of rewards (EtherFi's note, raw file)
          + ethfi("2024-08-15", "2024-10-05", "2024-10-18", "0.248")  # a top-up is a total, however long
          + eigen("2025-06-22", "2025-06-29", "0.211")  # 8 days: one distribution, figure = total
          + eigen("2025-07-08", "2025-07-12", "0.127")  # 5 days: likewise, never scaled by 5/7
          + eigen("2025-07-13", "2025-07-19", "0.204"))
    with pytest.raises(DataLayoutError, match=r":2: the 52-day EIGEN period 2024-08-15\.\.2024-10-05 .*no file "
                                              r"matches .*eigen_distributions_raw\.csv"):
        read_reward_events(tmp_path)
    write(tmp_path, RAW, raw)
    by_start = {(e.token, e.period_start_ns): e.per_eeth for e in read_reward_events(tmp_path)}
    assert by_start[("EIGEN", day("2024-08-15"))] == Decimal("1.230")  # 0.205 × 6, not × 52/7 = 1.52
    assert by_start[("ETHFI", day("2024-08-15"))] == Decimal("0.248")
    assert by_start[("EIGEN", day("2025-06-22"))] == Decimal("0.211")
    assert by_start[("EIGEN", day("2025-07-08"))] == Decimal("0.127")
    assert by_start[("EIGEN", day("2025-07-13"))] == Decimal("0.204")


def test_a_multi_week_period_needs_a_whole_number_of_weeks_in_the_raw_file(tmp_path: Path) -> None:
    write(tmp_path, REWARDS, HEADER + eigen("2024-08-15", "2024-10-05", "0.205"))
    write(tmp_path, RAW, "staking_period_start,staking_period_end,eigen_earned,eth_restaked,eth_not_restaked,"
                         "eigen_per_eeth_weekly\n2024-08-15,2024-10-05,2800000,1480684,532110,0.205\n")
    with pytest.raises(DataLayoutError, match=r"eigen_distributions_raw\.csv:2: .*6\.786 times the weekly figure"):
        read_reward_events(tmp_path)
    write(tmp_path, RAW, "staking_period_start,staking_period_end,eigen_earned,eth_restaked,eth_not_restaked,"
                         "eigen_per_eeth_weekly\n2024-08-16,2024-10-05,2478088,1480684,532110,0.205\n")
    with pytest.raises(DataLayoutError, match="has no row saying how many"):
        read_reward_events(tmp_path)


def test_estimates_are_a_daily_value_yield_in_eth_and_only_when_asked_for(tmp_path: Path) -> None:
    write(tmp_path, REWARDS, HEADER + estimate("2025-08-04", "7.9e-06") + estimate("2025-08-03", "8.2e-06"))
    assert read_reward_events(tmp_path) == ()
    first, second = read_reward_events(tmp_path, frozenset({"estimate"}))
    assert (first.token, first.kind, first.exact, first.per_eeth) == ("ETH", "estimate", False, Decimal("8.2e-06"))
    assert (first.payout_ns, second.payout_ns) == (day("2025-08-04"), day("2025-08-05"))


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown reward kinds \['airdrop'\]"):
        read_reward_events(tmp_path, frozenset({"weekly", "airdrop"}))


def test_a_reward_is_its_rate_times_the_average_eeth_balance() -> None:
    event = RewardEvent(0, 0, DAY, "EIGEN", Decimal("0.179"), "weekly", True)
    weeth, rate = Decimal(10), Decimal("1.05")  # weETH holders scale by weETH/eETH (DOMAIN §5)
    assert event.tokens_for(weeth * rate) == Decimal("1.879500")


# --- reward modes ---------------------------------------------------------------------------------------------


def event(token: str, kind: str, exact: bool = True) -> RewardEvent:
    return RewardEvent(0, 0, DAY, token, Decimal(1), kind, exact)


EVENTS = (event("EIGEN", "weekly"), event("ETHFI", "topup"), event("ETHFI", "seasonal", exact=False),
          event("ETHFI", "seasonal"), event("ETH", "estimate", exact=False))


@pytest.mark.parametrize(("mode", "expected"), [
    ("base_only", ()),
    ("base_eigen", (EVENTS[0],)),
    ("base_eigen_seasonal", (EVENTS[0], EVENTS[1], EVENTS[3])),
])
def test_each_reward_mode_takes_its_events(mode: str, expected: tuple[RewardEvent, ...]) -> None:
    assert mode in REWARD_MODES
    assert events_for_mode(EVENTS, mode) == expected


def test_an_unknown_reward_mode_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown rewards mode 'base_eigen_ethfi'"):
        events_for_mode(EVENTS, "base_eigen_ethfi")


# --- staking yields and prices from small files ---------------------------------------------------------------


def test_weeth_yields_are_stamped_at_the_end_of_their_day_never_earlier(tmp_path: Path) -> None:
    write(tmp_path, "staking/yields/weeth_oracle_yields_2024-01-01_2025-09-18.csv",
          "date,timestamp,base_staking_apr,daily_yield\n2024-05-12,2024-05-12T00:00:00+00:00Z,0.0288,7.9e-06\n"
          "2024-05-13,2024-05-13T00:00:00+00:00Z,0.0485,1.3e-04\n")
    s = read_staking_yields(tmp_path, "weETH")
    with pytest.raises(StaleData):
        s.at(day("2024-05-12") + 12 * H, 25 * 3600)  # the 12th's yield is not known during the 12th
    assert s.at(day("2024-05-13"), 25 * 3600) == 0.0288
    assert s.at(day("2024-05-13") + 23 * H, 25 * 3600) == 0.0288
    assert s.at(day("2024-05-14"), 25 * 3600) == 0.0485
    write(tmp_path, "staking/yields/weeth_oracle_yields_2024-01-01_2025-09-18.csv",
          "date,base_staking_apr\n2024-05-12,0.0288\n2024-05-13,n/a\n")
    with pytest.raises(DataLayoutError, match=r"weeth_oracle_yields_[0-9_-]+\.csv:3: could not convert"):
        read_staking_yields(tmp_path, "weETH")


def test_wsteth_yields_come_from_its_oracle_one_whole_day_at_a_time(tmp_path: Path) -> None:
    # hourly from 01:00 on the 12th to 23:00 on the 14th, a Lido-like rebase of +0.001 at each 12:00
    rows = "".join(f"{day('2024-05-12') // NS + h * 3600},{1.16 + 0.001 * ((h + 12) // 24)}\n" for h in range(1, 72))
    write(tmp_path, "aave/oracle/wstETH_ETH_oracle_2024-01-01_2025-09-18.csv", "timestamp,oracle_price_eth\n" + rows)
    s = read_staking_yields(tmp_path, "wstETH")
    assert list(s.ts) == [day("2024-05-14")]  # the 12th has no 00:00, the 14th no 00:00 of the 15th
    assert s.values[0] == pytest.approx((1.162 / 1.161 - 1) * 365)  # 00:00 on the 13th → 00:00 on the 14th
    with pytest.raises(ValueError, match="no staking yield for 'rETH'"):
        read_staking_yields(tmp_path, "rETH")


def test_the_oracle_apr_is_the_annualised_growth_between_strict_lookups() -> None:
    t0 = day("2024-05-12")
    oracle = Series("oracle:weETH/ETH", [(t0 + h * H, 1.04 * (1 + 0.0365 * h / 8760)) for h in range(1, 24 * 30)])
    assert oracle_staking_apr(oracle, t0 + H, t0 + 29 * DAY) == pytest.approx(0.0365 / (1 + 0.0365 / 8760))
    with pytest.raises(StaleData, match="no value before it"):
        oracle_staking_apr(oracle, t0, t0 + 29 * DAY)  # the first row is at 01:00: never borrowed backwards
    with pytest.raises(StaleData, match="within 2 h"):
        oracle_staking_apr(oracle, t0 + H, t0 + 40 * DAY)
    with pytest.raises(ValueError, match="must end after it starts"):
        oracle_staking_apr(oracle, t0 + DAY, t0 + DAY)


def test_reward_token_prices_are_eth_per_token_from_the_uniswap_open(tmp_path: Path) -> None:
    write(tmp_path, "cex/spot_ohlcv_1h/uniswapv3_EIGENWETH_1h_2024-10-05_2025-09-27.csv",
          "timestamp,date_utc,open,high,low,close,volume,pool_address,dex,fee_tier,base_token,quote_token,source\n"
          "1728086400,2024-10-05T00:00:00+00:00Z,0.00147778287763035,0.0015,0.0014,0.0014866,302.3,0xc2,Uniswap v3,"
          "0.3%,EIGEN,WETH,geckoterminal_pro\n")
    s = read_series(tmp_path, "spot:EIGEN/ETH")
    assert s.at(day("2024-10-05"), CATALOG["spot:EIGEN/ETH"].max_age_s) == 0.00147778287763035
    assert CATALOG["spot:ETHFI/ETH"].pattern.endswith("uniswapv3_ETHFIWETH_1h_*.csv")


# --- the real history -----------------------------------------------------------------------------------------


@real_data
def test_the_real_rewards_file_has_the_kinds_domain_7_counts() -> None:
    events = read_reward_events(DATA, KINDS)
    counts = Counter((e.kind, e.token, e.exact) for e in events)
    assert counts == {("weekly", "EIGEN", True): 44, ("topup", "ETHFI", True): 7,
                      ("seasonal", "ETHFI", False): 5, ("estimate", "ETH", False): 58}
    weekly = [e for e in events if e.kind == "weekly"]
    assert (weekly[0].period_start_ns, weekly[-1].period_end_ns) == (day("2024-08-15"), day("2025-08-03"))
    assert len(read_reward_events(DATA)) == 51  # weekly + top-ups by default
    assert [len(events_for_mode(events, m)) for m in REWARD_MODES] == [0, 44, 51]  # no season is exact


@real_data
def test_the_first_eigen_payout_is_six_weeks_of_rewards_and_matches_etherfis_raw_totals() -> None:
    first = next(e for e in read_reward_events(DATA) if e.token == "EIGEN")
    assert (first.period_start_ns, first.period_end_ns) == (day("2024-08-15"), day("2024-10-06"))
    assert first.payout_ns == day("2024-10-06")
    assert first.per_eeth == Decimal("1.230")
    with open(DATA / RAW, newline="") as f:
        raw = next(csv.DictReader(f))
    earned_per_eeth = float(raw["eigen_earned"]) / (float(raw["eth_restaked"]) + float(raw["eth_not_restaked"]))
    assert float(first.per_eeth) == pytest.approx(earned_per_eeth, rel=0.005)


@real_data
def test_the_real_topups_match_etherfis_raw_table() -> None:
    with open(DATA / "staking/distributions/ethfi_topups_raw.csv", newline="") as f:
        raw = {(day(r["staking_period_start"]), day(r["top_up_date"])): Decimal(r["ethfi_per_eeth_distributed"])
               for r in csv.DictReader(f)}
    topups = {(e.period_start_ns, e.payout_ns): e.per_eeth for e in read_reward_events(DATA) if e.kind == "topup"}
    assert topups == raw


@real_data
def test_no_eigen_is_paid_before_eigen_has_a_price_and_both_tokens_price_plausibly_in_usd() -> None:
    eigen_eth, ethfi_eth = read_series(DATA, "spot:EIGEN/ETH"), read_series(DATA, "spot:ETHFI/ETH")
    eth_usd = read_series(DATA, "spot:ETH")
    assert eigen_eth.first_ns == day("2024-10-05")
    assert min(e.payout_ns for e in read_reward_events(DATA) if e.token == "EIGEN") >= eigen_eth.first_ns
    with pytest.raises(StaleData, match="no value before it"):
        eigen_eth.at(day("2024-10-04"), 7200)
    assert ethfi_eth.first_ns <= day("2024-05-12")  # ETHFI covers the whole backtest window
    for date in ("2024-10-06", "2024-12-15", "2025-03-01", "2025-06-01", "2025-09-18"):
        t = day(date)
        assert 0.5 < eigen_eth.at(t, 7200) * eth_usd.at(t, 7200) < 6, date
        assert 0.3 < ethfi_eth.at(t, 7200) * eth_usd.at(t, 7200) < 6, date
    for e in read_reward_events(DATA):  # every real payout can be priced at its instant
        (eigen_eth if e.token == "EIGEN" else ethfi_eth).at(e.payout_ns, 7200)


@real_data
def test_the_real_weeth_staking_apr_is_near_domain_3s_2_8_percent() -> None:
    oracle = read_series(DATA, "oracle:weETH/ETH")
    start, end = parse_ts("2024-05-12T01:00:00Z"), parse_ts("2025-09-18T00:00:00Z")
    realised = oracle_staking_apr(oracle, start, end)
    assert realised == pytest.approx(0.028, abs=0.001)
    with pytest.raises(StaleData):
        oracle_staking_apr(oracle, day("2024-05-12"), end)  # 00:00 precedes the oracle's first hour
    daily = read_staking_yields(DATA, "weETH")
    in_window = [v for t, v in zip(daily.ts, daily.values, strict=True) if start < t <= end + DAY]
    assert len(in_window) == 495
    assert sum(in_window) / len(in_window) == pytest.approx(realised, abs=0.001)


@real_data
def test_the_real_wsteth_yield_from_its_oracle_is_never_negative() -> None:
    daily = read_staking_yields(DATA, "wstETH")
    assert len(daily) > 490 and not daily.gaps(24 * 3600)
    assert min(daily.values) > 0
    assert sum(daily.values) / len(daily) == pytest.approx(0.03, abs=0.003)
