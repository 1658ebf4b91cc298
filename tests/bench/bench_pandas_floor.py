"""The floor for the full-window backtest: one vectorized pandas/numpy pass over the same history files,
computing the hourly NAV and P&L components of the backtest's entry position held unchanged.

Why it is the floor. `basisd backtest` replays ≈ 11,700 hourly bars through the whole daemon (supervisor,
bus, actors, simulated venues, a Decimal ledger, an exact P&L attribution every hour). This script does the
least work that yields the same numbers for a position nobody touches: read the CSV files once with pandas,
put every series on the hourly grid with numpy, and evaluate NAV and its components as array expressions.
No decisions, rebalances, gas, fees after entry, margin or liquidation logic: no backtest of this book on
this data can do less work, so the gap to the daemon is the price of running the real thing.

The same P&L (DOMAIN §5), under the daemon's data rules (daemon/data/history.py and bars.py):

* the grid is the backtest's own window (summary.json `window`: start and number of hourly NAV rows);
* a series' value at an hour is its last row at or before it, at most 2 h old; funding rates only exactly at
  a settlement; `#` lines before the header are skipped; the first row of a duplicated timestamp wins;
* proxies: OKX perp → Binance perp → Bybit perp (Binance's paging holes), OKX funding → Binance funding;
* the ETH price is the Uniswap v3 WETH/USDT open (the bars' `eth_spot`, not the WETH/USD oracle); prices and
  marks are rounded to cents and funding rates to 1e-10, as the bars quantize them;
* weETH liquidity index from the hourly rates file; the WETH borrow index grown hourly from each daily
  snapshot at that day's borrow rate, compounded (`_hourly_from_daily`);
* funding at 00/08/16 UTC: each settlement's own rate (the exchanges' funding history), paid on size × the
  venue's mark then (the replay feed's convention).

    NAV_t = USDT (venues, wallet) + wallet ETH·P + A·L·o·P − d·B·P + Σ_v s_v·(m_v − entry_v) + funding so far

with A, d the scaled aWeETH and variableDebtWETH balances. The perps (size, entry) come from summary.json's
initial positions; the USDT balances, wallet ETH and scaled AAVE balances from the entry hour of
balance_sheet.csv beside it (the summary rounds AAVE to 1e-6 ETH and has no cash), checked against the
summary's AAVE figures. It then compares with the daemon's hourly.csv: the largest |ΔNAV| over the hold
(every hour before the daemon's first ledger change after entry that is not a funding payment, from
events.jsonl), the final NAVs and the P&L components. Some of the daemon's funding payments are booked in
the hour before their settlement (the settlement time is in each payment's `ref`); the comparison counts
them and gives the NAV difference again with each moved to its settlement hour.

    .venv/bin/python tests/bench/bench_pandas_floor.py --summary /tmp/bt/summary.json [--data ../shared/data]
    .venv/bin/python tests/bench/bench_pandas_floor.py --summary /tmp/bt/summary.json --runs 3

`--runs N` re-executes the script N times as child processes and reports the median wall time and peak RSS
of the whole process (os.wait4), as bench_backtest.py does for the daemon.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # first line of the script: interpreter start-up itself is only in --runs

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

T_STDLIB = time.perf_counter()

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import pandas as pd  # noqa: E402

T_IMPORTS = time.perf_counter()

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import cpu_model, git_revision  # noqa: E402

HOUR = 3600
YEAR_S = 365 * 24 * HOUR
MAX_AGE_S = 2 * HOUR
HOURS_PER_YEAR = 24 * 365
VENUES = ("binance", "bybit", "okx")
COMPONENTS = ("supply_yield", "staking_yield_oracle", "borrow_costs", "funding_pnl", "delta_pnl", "basis_pnl",
              "transaction_costs")
Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Source:
    pattern: str  # glob under the data directory; the first match in sorted order, as the daemon takes it
    time_column: str
    columns: tuple[str, ...]


SOURCES: dict[str, Source] = {
    **{f"perp:{v}": Source(f"cex/perp_ohlcv_1h/{v}_ETHUSDT_perp_1h_*.csv", "timestamp", ("open",)) for v in VENUES},
    **{f"funding:{v}": Source(f"cex/funding_rates/{v}_ETHUSDT_funding_rates_*.csv", "funding_timestamp",
                              ("funding_rate",)) for v in VENUES},
    "spot": Source("cex/spot_ohlcv_1h/uniswapv3_WETHUSDT_1h_*.csv", "timestamp", ("open",)),
    "oracle": Source("aave/oracle/weETH_ETH_oracle_*.csv", "timestamp", ("oracle_price_eth",)),
    "weeth": Source("aave/rates/*_weETH_rates_*_hourly.csv", "timestamp", ("liquidityIndex",)),
    "weth": Source("aave/rates/*_WETH_rates_2*[0-9].csv", "timestamp",
                   ("variableBorrowIndex", "currentVariableBorrowRate")),
}


# --- reading -------------------------------------------------------------------------------------------------

def read(data_dir: Path, src: Source) -> pd.DataFrame:
    """One file as a frame `t` (unix seconds, sorted, unique: first row wins) + the value columns."""
    path = min(p for p in data_dir.glob(src.pattern) if p.is_file())
    with open(path, encoding="utf-8-sig") as f:
        comments = 0
        for line in f:
            if not line.startswith("#"):
                break
            comments += 1
    df = pd.read_csv(path, skiprows=comments, usecols=[src.time_column, *src.columns], encoding="utf-8-sig")
    raw = df[src.time_column]
    if pd.api.types.is_integer_dtype(raw):  # unix seconds (or milliseconds)
        t = raw.to_numpy(np.int64)
        t = np.where(t > 10**11, t // 1000, t)
    else:  # ISO 8601 with Z or +00:00; naive read as UTC
        t = pd.to_datetime(raw, utc=True, format="ISO8601").dt.as_unit("s").astype("int64").to_numpy()
    out = pd.DataFrame({"t": t, **{c: df[c].to_numpy(np.float64) for c in src.columns}})
    return out.sort_values("t", kind="stable").drop_duplicates("t", keep="first", ignore_index=True)


# --- aligning ------------------------------------------------------------------------------------------------

def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def asof(frame: pd.DataFrame, column: str, grid: Ints, max_age_s: int) -> Array:
    """The last value at or before each grid time, if at most `max_age_s` old; NaN otherwise."""
    t = frame["t"].to_numpy()
    i = np.searchsorted(t, grid, side="right") - 1
    j = np.maximum(i, 0)
    fresh = (i >= 0) & (grid - t[j] <= max_age_s)
    return np.where(fresh, frame[column].to_numpy()[j], np.nan)


def hourly_borrow_index(daily: pd.DataFrame) -> pd.DataFrame:
    """24 hourly points per daily snapshot, each compounded from that snapshot at that snapshot's rate."""
    hours = np.arange(24)
    t = (daily["t"].to_numpy()[:, None] + hours * HOUR).ravel()
    growth = np.exp(daily["currentVariableBorrowRate"].to_numpy()[:, None] * (hours * HOUR / YEAR_S))
    index = (daily["variableBorrowIndex"].to_numpy()[:, None] * growth).ravel()
    frame = pd.DataFrame({"t": t, "index": index})
    return frame.sort_values("t", kind="stable").drop_duplicates("t", keep="first", ignore_index=True)


def with_proxy(own: Array, proxy: Array) -> tuple[Array, int]:
    """`own` with its missing values taken from `proxy`, and how many were taken."""
    missing = np.isnan(own)
    return np.where(missing, proxy, own), int(missing.sum())


def require(name: str, values: Array, times: Ints) -> Array:
    """Fail as the daemon does (MissingData) where a value is still missing after the proxies."""
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise SystemExit(f"{name}: no value at {iso(int(times[missing[0]]))} and no proxy ({missing.size} in all)")
    return values


@dataclass(frozen=True)
class Market:
    grid: Ints  # unix seconds, hourly
    spot: Array  # ETH price, USD (cents)
    marks: dict[str, Array]  # venue → its own ETH perp mark (cents)
    settlements: Ints  # grid positions of the funding settlements (00/08/16 UTC)
    rates: dict[str, Array]  # venue → funding rate recorded at each settlement
    oracle: Array  # weETH/ETH
    liquidity: Array  # weETH liquidity index
    borrow: Array  # WETH variable borrow index
    proxied: dict[str, int]  # "series → proxy" → hours (settlements, for funding) taken from the proxy


def align(frames: dict[str, pd.DataFrame], grid: Ints) -> Market:
    def hourly(key: str, column: str) -> Array:
        return asof(frames[key], column, grid, MAX_AGE_S)

    proxied: dict[str, int] = {}
    bybit = hourly("perp:bybit", "open")
    binance, proxied["perp:binance → bybit"] = with_proxy(hourly("perp:binance", "open"), bybit)
    okx, proxied["perp:okx → binance"] = with_proxy(hourly("perp:okx", "open"), binance)
    marks = {v: np.round(require(f"perp:{v}", m, grid), 2) for v, m in zip(VENUES, (binance, bybit, okx),
                                                                            strict=True)}
    settlements = np.flatnonzero(grid % (8 * HOUR) == 0)
    at = grid[settlements]
    rates = {v: asof(frames[f"funding:{v}"], "funding_rate", at, 0) for v in VENUES}  # exactly at settlement
    rates["okx"], proxied["funding:okx → binance"] = with_proxy(rates["okx"], rates["binance"])
    return Market(
        grid=grid,
        spot=np.round(require("spot:ETH", hourly("spot", "open"), grid), 2),
        marks=marks,
        settlements=settlements,
        rates={v: np.round(require(f"funding:{v}", r, at), 10) for v, r in rates.items()},
        oracle=require("oracle:weETH/ETH", hourly("oracle", "oracle_price_eth"), grid),
        liquidity=require("aave:weETH:liquidity_index", hourly("weeth", "liquidityIndex"), grid),
        borrow=require("aave:WETH:borrow_index",
                       asof(hourly_borrow_index(frames["weth"]), "index", grid, MAX_AGE_S), grid),
        proxied=proxied,
    )


# --- the position and its P&L --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Position:
    start: int  # unix seconds of the entry hour
    hours: int  # NAV rows in the backtest
    capital: float
    usdt: float  # on the venues and in the wallet
    wallet_eth: float  # negative: gas debt
    a_weeth: float  # scaled aWeETH
    d_weth: float  # scaled variableDebtWETH
    sizes: dict[str, float]  # venue → signed perp size
    entries: dict[str, float]  # venue → entry price
    summary_collateral_eth: float
    summary_debt_eth: float


def load_position(summary_path: Path) -> Position:
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    start = int(pd.Timestamp(summary["window"]["start"]).timestamp())
    entry_hour = iso(start)
    holdings: dict[tuple[str, str], float] = {}
    with open(summary_path.parent / "balance_sheet.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["ts"] != entry_hour:
                break
            holdings[(row["account"], row["holding"])] = float(row["amount"])
    usdt = sum(v for (_, h), v in holdings.items() if h == "USDT")
    known = {"USDT", "ETH", "aWeETH", "variableDebtWETH", "perp:ETHUSDT"}
    unknown = [k for k in holdings if k[1] not in known or (k[1] == "ETH" and k[0] != "wallet")]
    if unknown:
        raise SystemExit(f"entry holdings this floor does not model: {unknown}")
    initial = summary["initial_positions"]
    perps = initial["perps"]
    return Position(
        start=start, hours=int(summary["window"]["hours"]), capital=float(summary["capital"]), usdt=usdt,
        wallet_eth=holdings.get(("wallet", "ETH"), 0.0), a_weeth=holdings[("wallet", "aWeETH")],
        d_weth=holdings[("wallet", "variableDebtWETH")],
        sizes={v: float(p["size"]) for v, p in perps.items()}, entries={v: float(p["entry"]) for v, p in perps.items()},
        summary_collateral_eth=float(initial["aave_collateral_eth"]),
        summary_debt_eth=float(initial["aave_debt_eth"]),
    )


@dataclass(frozen=True)
class Result:
    nav: Array
    components: dict[str, Array]  # per hour; hour 0 carries the entry costs
    collateral_eth0: float
    debt_eth0: float


def held(pos: Position, m: Market) -> Result:
    """Hourly NAV and P&L components of the entry position held unchanged (DOMAIN §5, one step at a time)."""
    p, o, li, b = m.spot, m.oracle, m.liquidity, m.borrow
    a, d = pos.a_weeth, pos.d_weth
    funding = np.zeros_like(p)
    # Each settlement pays its own rate (the exchanges' funding history); at the first bar nothing is held yet.
    held_then = m.settlements > 0
    paid = m.settlements[held_then]
    for v, s in pos.sizes.items():
        funding[paid] += np.round(-s * m.marks[v][paid] * m.rates[v][held_then], 8)  # as the simulated venue
    perps = sum((s * (m.marks[v] - pos.entries[v]) for v, s in pos.sizes.items()), np.zeros_like(p))
    nav = pos.usdt + pos.wallet_eth * p + (a * li * o - d * b) * p + perps + np.cumsum(funding)

    def step(x: Array) -> Array:
        return np.diff(x, prepend=x[0])  # 0 at the entry hour

    dp = step(p)
    lag = np.r_[0, np.arange(len(p) - 1)]  # previous hour's index (hour 0: itself)
    short = sum(pos.sizes.values())
    basis = sum((s * (step(m.marks[v]) - dp) for v, s in pos.sizes.items()), np.zeros_like(p))
    entry_costs = np.zeros_like(p)
    entry_costs[0] = nav[0] - pos.capital
    components = {
        "supply_yield": a * o[lag] * p * step(li),
        "staking_yield_oracle": a * li * p * step(o),
        "borrow_costs": -d * p * step(b),
        "funding_pnl": funding,
        "delta_pnl": (a * li[lag] * o[lag] - d * b[lag] + pos.wallet_eth + short) * dp,
        "basis_pnl": basis,
        "transaction_costs": entry_costs,
    }
    return Result(nav, components, a * li[0] * o[0], d * b[0])


def apr(capital: float, nav: Array) -> float:
    """Simple annualized return over the NAV rows: the floor and the daemon compared on the same figure."""
    return float((nav[-1] / capital - 1) / (len(nav) / HOURS_PER_YEAR))


# --- comparing with the daemon -------------------------------------------------------------------------------

def seconds(hour: str) -> int:
    """A backtest output's hour label ("2024-05-12 01:00", UTC) in unix seconds."""
    return int(datetime.fromisoformat(hour).replace(tzinfo=UTC).timestamp())


def reasons(names: list[str]) -> str:
    return ", ".join(f"{r} ×{names.count(r)}" if names.count(r) > 1 else r for r in dict.fromkeys(names))


def compare(pos: Position, m: Market, res: Result, out_dir: Path) -> list[str]:
    daemon = pd.read_csv(out_dir / "hourly.csv", usecols=["ts", "nav", *COMPONENTS])
    if len(daemon) != len(m.grid) or seconds(daemon["ts"].iloc[0]) != m.grid[0]:
        raise SystemExit(f"hourly.csv has {len(daemon)} rows from {daemon['ts'].iloc[0]}, the floor "
                         f"{len(m.grid)} from {iso(int(m.grid[0]))}")
    d_nav = daemon["nav"].to_numpy()
    changes: dict[int, list[str]] = {}  # hour → reasons of the daemon's non-funding changes after entry
    # Funding the daemon booked in another hour than its settlement's (the settlement is in the report's ref):
    # + amount on every row that holds it too early, − on every row that lacks it.
    misbooked = np.zeros_like(d_nav)
    misbooked_payments = 0
    with open(out_dir / "events.jsonl", encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            booked = seconds(event["ts"])
            if event["reason"] != "FUNDING_PAYMENT":
                if booked > pos.start:
                    changes.setdefault(booked, []).append(event["reason"])
            elif (settled := int(event["ref"].rsplit("-", 1)[1]) // 10**9) != booked:
                amount = sum(float(t[2]) for t in event["tokens"])
                b, s = (booked - pos.start) // HOUR, (settled - pos.start) // HOUR
                misbooked[min(b, s):max(b, s)] += amount if b < s else -amount
                misbooked_payments += 1
    first = min(changes, default=int(m.grid[-1]) + HOUR)
    hold = m.grid < first
    n = int(hold.sum())
    diff = res.nav - d_nav
    worst = int(np.argmax(np.abs(diff[:n])))
    shifted = diff + misbooked  # as if the daemon had booked every payment in its settlement's hour
    worst_shifted = int(np.argmax(np.abs(shifted[:n])))
    lines = [
        f"Daemon's first change after entry other than funding: {iso(first)} ({reasons(changes.get(first, []))})",
        f"Hold: {iso(int(m.grid[0]))} .. {iso(int(m.grid[n - 1]))}, {n:,} hours. NAV at its last hour: floor "
        f"{res.nav[n - 1]:,.6f}, daemon {d_nav[n - 1]:,.6f} (difference {diff[n - 1]:+.6f})",
        f"  max |NAV floor − daemon| over the hold: {abs(diff[worst]):.6f} USDT at {iso(int(m.grid[worst]))}; "
        f"hours off by more than a cent: {int((np.abs(diff[:n]) > 0.01).sum())}",
        f"  the daemon booked {misbooked_payments} funding payments in another hour than their settlement's "
        f"({int((misbooked != 0).sum())} hours, {int((misbooked[:n] != 0).sum())} in the hold); with them moved "
        f"to their settlement hour: max |ΔNAV| over the hold {abs(shifted[worst_shifted]):.1e} USDT",
    ]
    if n < len(m.grid):
        lines.append(f"  at {iso(first)}: floor − daemon = {diff[n]:+.6f} (daemon's transaction costs that hour "
                     f"{daemon['transaction_costs'].iloc[n]:+.6f})")
    lines += ["", "| P&L, USDT | floor, hold | daemon, hold | floor, full window | daemon, full window | "
              "floor − daemon, full |", "|---|---:|---:|---:|---:|---:|"]
    for c in COMPONENTS:
        f_c, d_c = res.components[c], daemon[c].to_numpy()
        lines.append(f"| {c} | {f_c[:n].sum():,.6f} | {d_c[:n].sum():,.6f} | {f_c.sum():,.2f} | {d_c.sum():,.2f} | "
                     f"{f_c.sum() - d_c.sum():+,.2f} |")
    lines.append(f"| **NAV at the end** | {res.nav[n - 1]:,.6f} | {d_nav[n - 1]:,.6f} | {res.nav[-1]:,.2f} | "
                 f"{d_nav[-1]:,.2f} | {res.nav[-1] - d_nav[-1]:+,.2f} |")
    lines.append(f"| APR | | | {apr(pos.capital, res.nav):.2%} | {apr(pos.capital, d_nav):.2%} | |")
    lines += ["", "The daemon's changes after entry, other than funding (the floor makes none):"]
    lines += [f"  {iso(t)}: {reasons(rs)}" for t, rs in sorted(changes.items())]
    return lines


# --- the run -------------------------------------------------------------------------------------------------

def floor(args: argparse.Namespace) -> dict[str, float]:
    summary = Path(args.summary)
    pos = load_position(summary)
    t_read = time.perf_counter()
    frames = {key: read(Path(args.data), src) for key, src in SOURCES.items()}
    t_compute = time.perf_counter()
    grid = pos.start + np.arange(pos.hours, dtype=np.int64) * HOUR
    market = align(frames, grid)
    res = held(pos, market)
    t_done = time.perf_counter()
    times = {"import_s": T_IMPORTS - T_START, "numpy_pandas_s": T_IMPORTS - T_STDLIB,
             "read_s": t_compute - t_read, "compute_s": t_done - t_compute, "total_s": t_done - T_START}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    residual = np.abs(np.diff(res.nav) - sum(c[1:] for c in res.components.values())).max()
    if not args.timings:
        print(f"bench_pandas_floor.py — {cpu_model()}, {os.cpu_count()} CPUs, commit {git_revision()}")
    print(f"numpy {np.__version__}, pandas {pd.__version__}. Window {iso(int(grid[0]))} .. {iso(int(grid[-1]))} "
          f"UTC, {len(grid):,} hours (from {summary}); {len(SOURCES)} CSV files, "
          f"{sum(len(f) for f in frames.values()):,} rows")
    print("Proxied: " + ", ".join(f"{k} {n:,} {'settlements' if k.startswith('funding') else 'h'}"
                                  for k, n in market.proxied.items()))
    print(f"Entry check: AAVE collateral {res.collateral_eth0:.6f} ETH (summary {pos.summary_collateral_eth:.6f}), "
          f"debt {res.debt_eth0:.6f} ETH (summary {pos.summary_debt_eth:.6f})")
    print()
    print("| Floor, in one process | value |")
    print("|---|---:|")
    print(f"| script start → imports done | {times['import_s'] * 1000:,.0f} ms "
          f"(numpy + pandas {times['numpy_pandas_s'] * 1000:,.0f} ms) |")
    print(f"| read + parse {len(SOURCES)} CSV files (pandas) | {times['read_s'] * 1000:,.0f} ms |")
    print(f"| compute: align, proxies, index derivation, NAV, funding, P&L | {times['compute_s'] * 1000:,.1f} ms |")
    print(f"| script start → result | {times['total_s'] * 1000:,.0f} ms |")
    print(f"| peak RSS | {rss:,.1f} MiB |")
    print(f"| final NAV ({iso(int(grid[-1]))}) | {res.nav[-1]:,.6f} USDT |")
    print(f"| APR | {apr(pos.capital, res.nav):.4%} |")
    print(f"| max \\|NAV step − Σ components\\| | {residual:.1e} USDT |")
    if not args.no_compare:
        print()
        print("\n".join(compare(pos, market, res, summary.parent)))
    return times


def runs(args: argparse.Namespace) -> None:
    """Re-execute this script `args.runs` times (floor only) for whole-process wall time and peak RSS from
    os.wait4, then once more with the comparison, whose report is printed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--summary", str(Path(args.summary).resolve()),
           "--data", str(Path(args.data).resolve()), "--timings"]
    walls, rss, timings = [], [], []
    for i in range(args.runs + 1):
        with tempfile.TemporaryFile("w+") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd + (["--no-compare"] if i < args.runs else []), cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            out.seek(0)
            text = out.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"run failed:\n{text}")
        report, _, times = text.rpartition("#timings ")
        if i < args.runs:
            walls.append(wall)
            rss.append(usage.ru_maxrss / 1024)
            timings.append(json.loads(times))
    print(f"bench_pandas_floor.py — {cpu_model()}, {os.cpu_count()} CPUs, commit {git_revision()}")
    print(report.rstrip())
    print()
    print(f"| Floor, {args.runs} runs of the whole process (without the comparison) | median | runs |")
    print("|---|---:|---|")
    print(f"| wall, interpreter start → exit (os.wait4) | {statistics.median(walls) * 1000:,.0f} ms | "
          f"{', '.join(f'{w * 1000:.0f}' for w in walls)} |")
    for key, label in (("import_s", "script start → imports done"), ("read_s", "read + parse CSV"),
                       ("compute_s", "compute (no CSV reading)"), ("total_s", "script start → result")):
        values = [t[key] * 1000 for t in timings]
        print(f"| {label} | {statistics.median(values):,.1f} ms | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"| peak RSS (os.wait4) | {max(rss):,.1f} MiB (max) | {', '.join(f'{r:.1f}' for r in rss)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description="The pandas/numpy floor for the full-window backtest.")
    parser.add_argument("--summary", required=True, help="summary.json of a `basisd backtest` run")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--runs", type=int, default=0, help="time N whole-process runs (child processes)")
    parser.add_argument("--no-compare", action="store_true", help="skip the comparison with the daemon's run")
    parser.add_argument("--timings", action="store_true", help=argparse.SUPPRESS)  # a child of --runs
    args = parser.parse_args()
    if args.runs:
        runs(args)
        return
    times = floor(args)
    if args.timings:
        print(f"#timings {json.dumps(times)}")


if __name__ == "__main__":
    main()
