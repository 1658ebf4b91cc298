"""A small history directory in the project's layout, written from the catalog: every series a bar reads, flat
values over a short window. Failure tests damage one file of it (a bad timestamp, a hole) and run the real CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from daemon.data.history import CATALOG, SeriesSpec

START = datetime(2024, 8, 1, tzinfo=UTC)
HOURS = 24
MARGIN_H = 6  # rows before and after the window: the first bar reads the candle of the hour before it

# A plausible flat value per column: the strategy sizes and prices with them, they need not move.
VALUES = {"open": "3000.0", "high": "3010.0", "low": "2990.0", "funding_rate": "0.0001",
          "oracle_price_eth": "1.04", "oracle_price_usd": "3000.0", "liquidityIndex": "1.01",
          "variableBorrowIndex": "1.02", "currentLiquidityRate": "0.02", "currentVariableBorrowRate": "0.03",
          "gas_price_avg_gwei": "5.0"}


def file_name(pattern: str) -> str:
    """A file name the catalog's glob pattern matches: `*` → `x`, `[0-9]` → `0`."""
    return re.sub(r"\[[^]]*\]", "0", pattern).replace("*", "x")


def _columns(specs: list[SeriesSpec]) -> list[str]:
    columns = [specs[0].time_column]
    for spec in specs:
        for column in (spec.column, spec.rate_column):
            if column and column not in columns:
                columns.append(column)
    return columns


def _instants(specs: list[SeriesSpec], start: datetime, hours: int) -> list[datetime]:
    first, last = start - timedelta(hours=MARGIN_H), start + timedelta(hours=hours + MARGIN_H)
    if specs[0].derive:  # a daily snapshot file
        day = first.replace(hour=0)
        return [day + timedelta(days=d) for d in range((last - day).days + 1)]
    step = timedelta(seconds=specs[0].cadence_s)
    out, t = [], first.replace(hour=first.hour - first.hour % (specs[0].cadence_s // 3600))
    while t <= last:
        out.append(t)
        t += step
    return out


def write_history(root: Path, start: datetime = START, hours: int = HOURS) -> Path:
    """Every catalogued file under `root`, covering [start − 6 h, start + hours + 6 h]; returns `root`."""
    by_file: dict[str, list[SeriesSpec]] = {}
    for spec in CATALOG.values():
        by_file.setdefault(file_name(spec.pattern), []).append(spec)
    for name, specs in by_file.items():
        columns = _columns(specs)
        lines = ["# Source: tests (synthetic, flat)", ",".join(columns)]
        for t in _instants(specs, start, hours):
            lines.append(",".join([t.strftime("%Y-%m-%dT%H:%M:%SZ"), *(VALUES[c] for c in columns[1:])]))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def history_file(root: Path, key: str) -> Path:
    return root / file_name(CATALOG[key].pattern)


def replace_line(path: Path, stamp: str, new: str) -> int:
    """Replace the row stamped `stamp` (its first field) by `new`; returns its line number in the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines) if line.startswith(stamp + ","))
    lines[number] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return number + 1


def write_config(catalog: Path, data: Path, **replay: object) -> Path:
    """A root config in the `catalog` copy: eth_basis (no staking, so no reward files) on the history in `data`."""
    config = {
        "runtime": {"mode": "replay"},
        "replay": {"source": "history", "data_dir": str(data), "start": START.isoformat(), "hours": HOURS,
                   "speed": None, **replay},
        "strategy": {"mode": "eth_basis", "share_class": "usdt", "venues": ["binance", "bybit", "okx"],
                     "initial_capital": 100000},
        "metrics": {"enabled": False},
    }
    path = catalog / "synthetic_history.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
