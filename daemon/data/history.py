"""Readers for the project's history layout (the `data/` folder beside the project; see its README).

Each series has a key, a file, the column it reads, its cadence and its staleness limit. The open of an hourly
candle is the price at its timestamp (DOMAIN §7). Comment lines (`#`) before the header are skipped, rows are
de-duplicated, timestamps normalized to UTC. AAVE indexes for reserves that have only daily snapshots (USDT,
WETH) are made hourly by growing each day's index at that day's own rate — linear for the liquidity index,
compounded for the borrow index, as AAVE itself accrues them — never by interpolating towards the next day's
value, which would look ahead.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.data.series import Series
from daemon.data.timeparse import NS, parse_ts, quoted
from daemon.errors import DataError, ExitCode, NoInputError

HOUR_S = 3600
SECONDS_PER_YEAR = 365 * 24 * HOUR_S


class DataLayoutError(DataError, ValueError):
    """A file is malformed (a bad timestamp or value, a missing column), named with its line and the value; fatal
    to a run (exit 65): reading the same bytes again gives the same error."""


class MissingFileError(DataLayoutError, NoInputError):
    """No file matches a series' pattern, or it cannot be read (exit 66)."""

    exit_code = ExitCode.NO_INPUT


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    key: str
    pattern: str  # glob under the data directory
    column: str
    time_column: str = "timestamp"
    cadence_s: int = HOUR_S
    max_age_s: int = 2 * HOUR_S  # DOMAIN §8 #22: 2 h for prices, 9 h for funding
    derive: str = ""  # "" | "hourly_liquidity" | "hourly_borrow" (from a daily file, see the module doc)
    rate_column: str = ""


def _perp(venue: str, asset: str, column: str = "open") -> SeriesSpec:
    key = f"perp:{venue}:{asset}" if column == "open" else f"perp_{column}:{venue}:{asset}"
    return SeriesSpec(key, f"cex/perp_ohlcv_1h/{venue}_{asset}USDT_perp_1h_*.csv", column)


def _funding(venue: str, asset: str) -> SeriesSpec:
    return SeriesSpec(f"funding:{venue}:{asset}", f"cex/funding_rates/{venue}_{asset}USDT_funding_rates_*.csv",
                      "funding_rate", "funding_timestamp", cadence_s=8 * HOUR_S, max_age_s=9 * HOUR_S)


CATALOG: dict[str, SeriesSpec] = {s.key: s for s in [
    _perp("binance", "ETH"), _perp("bybit", "ETH"), _perp("okx", "ETH"), _perp("binance", "BTC"),
    _perp("bybit", "BTC"),
    # Each candle's extremes: how far the price went within the hour (the open is the bar's price).
    *(_perp(v, a, c) for v, a in (("binance", "ETH"), ("bybit", "ETH"), ("okx", "ETH"), ("binance", "BTC"),
                                  ("bybit", "BTC")) for c in ("high", "low")),
    _funding("binance", "ETH"), _funding("bybit", "ETH"), _funding("okx", "ETH"),
    _funding("binance", "BTC"), _funding("bybit", "BTC"), _funding("okx", "BTC"),
    SeriesSpec("spot:ETH", "cex/spot_ohlcv_1h/uniswapv3_WETHUSDT_1h_*.csv", "open"),
    SeriesSpec("spot:bybit:ETH", "cex/spot_ohlcv_1h/bybit_ETHUSDT_spot_1h_*.csv", "open"),
    SeriesSpec("spot:BTC", "cex/spot_ohlcv_1h/bybit_BTCUSDT_spot_1h_*.csv", "open"),
    SeriesSpec("spot:binance:BTC", "cex/spot_ohlcv_1h/binance_BTCUSDT_1h_*.csv", "open"),
    # Reward tokens, ETH per 1 token: the pools' base is the token and their quote WETH (0.0015 WETH per EIGEN
    # × ~$2,400 = ~$3.6), so no inversion; EIGEN only from 2024-10-05 (see `daemon.data.rewards`).
    SeriesSpec("spot:EIGEN/ETH", "cex/spot_ohlcv_1h/uniswapv3_EIGENWETH_1h_*.csv", "open"),
    SeriesSpec("spot:ETHFI/ETH", "cex/spot_ohlcv_1h/uniswapv3_ETHFIWETH_1h_*.csv", "open"),
    SeriesSpec("oracle:weETH/ETH", "aave/oracle/weETH_ETH_oracle_*.csv", "oracle_price_eth"),
    SeriesSpec("oracle:wstETH/ETH", "aave/oracle/wstETH_ETH_oracle_*.csv", "oracle_price_eth"),
    SeriesSpec("oracle:ETH/USD", "aave/oracle/WETH_USD_oracle_*.csv", "oracle_price_usd"),
    SeriesSpec("aave:weETH:liquidity_index", "aave/rates/*_weETH_rates_*_hourly.csv", "liquidityIndex"),
    SeriesSpec("aave:weETH:borrow_index", "aave/rates/*_weETH_rates_*_hourly.csv", "variableBorrowIndex"),
    SeriesSpec("aave:wstETH:liquidity_index", "aave/rates/*_wstETH_rates_*_hourly.csv", "liquidityIndex"),
    SeriesSpec("aave:WETH:liquidity_index", "aave/rates/*_WETH_rates_2*[0-9].csv", "liquidityIndex",
               derive="hourly_liquidity", rate_column="currentLiquidityRate", max_age_s=2 * HOUR_S),
    SeriesSpec("aave:WETH:borrow_index", "aave/rates/*_WETH_rates_2*[0-9].csv", "variableBorrowIndex",
               derive="hourly_borrow", rate_column="currentVariableBorrowRate", max_age_s=2 * HOUR_S),
    SeriesSpec("aave:USDT:liquidity_index", "aave/rates/*_USDT_rates_2*[0-9].csv", "liquidityIndex",
               derive="hourly_liquidity", rate_column="currentLiquidityRate", max_age_s=2 * HOUR_S),
    SeriesSpec("gas:gwei", "chain/gas/ethereum_gas_prices_*.csv", "gas_price_avg_gwei"),
]}


def catalogued_files(data_dir: Path) -> list[Path]:
    """Every file in `data_dir` that some catalogued series would read (none: not a history directory)."""
    return sorted({p for spec in CATALOG.values() for p in data_dir.glob(spec.pattern) if p.is_file()})


def find_file(data_dir: Path, spec: SeriesSpec) -> Path:
    matches = sorted(p for p in data_dir.glob(spec.pattern) if p.is_file())
    if not matches:
        raise MissingFileError(f"{spec.key}: no file matches {data_dir / spec.pattern}")
    return matches[0]


def _number(path: Path, line_no: int, column: str, text: str | None) -> float:
    if text is None:
        raise DataLayoutError(f"{path}:{line_no}: the row has no {column!r} field (fewer fields than the header)")
    try:
        value = float(text)
    except ValueError:
        raise DataLayoutError(f"{path}:{line_no}: {column}: {quoted(text)} is not a number") from None
    if not math.isfinite(value):
        raise DataLayoutError(f"{path}:{line_no}: {column}: {quoted(text)} is not a finite number")
    return value


def read_series(data_dir: Path, key: str) -> Series:
    """Parse one series from its file (no cache: see `daemon.data.cache`). Every problem with the file is a
    `DataLayoutError` naming the file, the line, the column and the value; one the file cannot be read at all, a
    `MissingFileError`."""
    try:
        spec = CATALOG[key]
    except KeyError:
        raise DataLayoutError(f"unknown series {key!r} (known: {', '.join(sorted(CATALOG))})") from None
    path = find_file(data_dir, spec)
    try:
        values, rates = _parse(path, spec)
    except OSError as exc:
        raise MissingFileError(f"{path}: cannot be read: {exc.strerror or exc} (series {key})") from None
    except UnicodeDecodeError as exc:
        raise DataLayoutError(f"{path}: not UTF-8 text (byte {exc.start}) (series {key})") from None
    except DataLayoutError as exc:
        raise DataLayoutError(f"{exc} (series {key})") from None
    if not values:
        raise DataLayoutError(f"{path}: no data rows (series {key})")
    if spec.derive:
        values = _hourly_from_daily(values, rates, compounded=spec.derive == "hourly_borrow")
    return Series(key, values)


def _parse(path: Path, spec: SeriesSpec) -> tuple[list[tuple[int, float]], list[float]]:
    values: list[tuple[int, float]] = []
    rates: list[float] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        numbers: list[int] = []  # the file's own number of each line the reader is given (comments skipped)

        def lines() -> Iterator[str]:
            for number, line in enumerate(f, start=1):
                if not line.startswith("#"):
                    numbers.append(number)
                    yield line

        reader = csv.DictReader(lines())
        try:
            header = reader.fieldnames or []
            missing = [c for c in (spec.time_column, spec.column, spec.rate_column) if c and c not in header]
            if header and missing:
                raise DataLayoutError(f"{path}: no column {missing[0]!r}")
            for row in reader:
                n = numbers[reader.line_num - 1]
                values.append((_stamp(path, n, spec.time_column, row[spec.time_column]),
                               _number(path, n, spec.column, row[spec.column])))
                if spec.derive:
                    rates.append(_number(path, n, spec.rate_column, row[spec.rate_column]))
        except csv.Error as exc:  # e.g. a NUL byte, or a field larger than the csv module's limit
            raise DataLayoutError(f"{path}:{numbers[-1] if numbers else 1}: {exc}") from None
    return values, rates


def _stamp(path: Path, line_no: int, column: str, text: str | None) -> int:
    if text is None:
        raise DataLayoutError(f"{path}:{line_no}: the row has no {column!r} field (fewer fields than the header)")
    try:
        return parse_ts(text)
    except ValueError as exc:
        raise DataLayoutError(f"{path}:{line_no}: {column}: {exc}") from None


def _hourly_from_daily(daily: list[tuple[int, float]], rates: list[float], compounded: bool
                       ) -> list[tuple[int, float]]:
    """24 hourly points per daily snapshot, each grown from that snapshot at that snapshot's rate."""
    out = []
    for (t, index), rate in zip(daily, rates, strict=True):
        for h in range(24):
            dt = h * HOUR_S / SECONDS_PER_YEAR
            growth = math.exp(rate * dt) if compounded else 1 + rate * dt
            out.append((t + h * HOUR_S * NS, index * growth))
    return out
