"""Caches of parsed history, so a second run does not parse the CSV files again.

`SeriesCache`: one file per series under the cache directory (`$BASISD_CACHE_DIR`, else `$XDG_CACHE_HOME/basisd`, else
`~/.cache/basisd`), keyed by the series, its spec, and the source file's path, size and modification time:
an edited or replaced file is simply parsed again. Entries are written atomically; an unreadable entry is
treated as a miss, never as data.

`BarCache`: the whole run's market bars, with the proxy decisions taken on the way, keyed by the window, the
venues, the history's options and the identity (path, size, modification time) of every file in the data
directory. Building the bars from the series costs about a second on the full window; a warm run unpickles them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from array import array
from collections.abc import Iterator
from pathlib import Path

from daemon.data.bars import History, ProxyUsed
from daemon.data.history import CATALOG, find_file, read_series
from daemon.data.series import Series
from daemon.domain.bars import MarketBar

FORMAT = 1


def default_cache_dir() -> Path:
    explicit = os.environ.get("BASISD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "basisd"


class SeriesCache:
    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or default_cache_dir()
        self.hits = 0
        self.misses = 0

    def _entry(self, data_dir: Path, key: str) -> Path:
        source = find_file(data_dir, CATALOG[key])
        stat = source.stat()
        ident = f"{FORMAT}|{key}|{CATALOG[key]!r}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return self._dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.series"

    def load(self, data_dir: Path, key: str) -> Series:
        entry = self._entry(data_dir, key)
        try:
            with open(entry, "rb") as f:
                name, duplicates, ts, values = pickle.load(f)  # written only by `_store` below
            series = Series(name, ())
            series.duplicates = duplicates
            series.ts, series.values = array("q"), array("d")
            series.ts.frombytes(ts)
            series.values.frombytes(values)
            self.hits += 1
            return series
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
            self.misses += 1
        series = read_series(data_dir, key)
        self._store(entry, series)
        return series

    def _store(self, entry: Path, series: Series) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "wb") as f:
                pickle.dump((series.name, series.duplicates, series.ts.tobytes(), series.values.tobytes()), f,
                            protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, entry)
        except OSError:
            return  # a read-only or full cache directory costs speed, never correctness


BarsWithProxies = Iterator[tuple[MarketBar, tuple[ProxyUsed, ...]]]


class BarCache:
    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or default_cache_dir()
        self.hit = False

    def _entry(self, history: History, start_ns: int, hours: int, venues: tuple[str, ...], btc: bool) -> Path:
        root = history.data_dir.resolve()
        files = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in root.rglob("*") if p.is_file())
        ident = (f"{FORMAT}|bars|{root}|{files!r}|{start_ns}|{hours}|{venues!r}|{btc}|{history.identity}|"
                 f"{sorted((k, repr(v)) for k, v in CATALOG.items())!r}")
        return self._dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.bars"

    def bars(self, history: History, start_ns: int, hours: int, venues: tuple[str, ...], btc: bool) -> BarsWithProxies:
        """Each bar with the proxy decisions first taken at it; from the cache when this exact run was built
        before, else from `history` (stored once the whole window has been built: a run that stops early, on
        missing data say, leaves nothing behind)."""
        entry = self._entry(history, start_ns, hours, venues, btc)
        try:
            with open(entry, "rb") as f:
                cached: list[tuple[MarketBar, tuple[ProxyUsed, ...]]] = pickle.load(f)  # written by us, below
            self.hit = True
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
            cached = []
        if cached:
            yield from cached
            return
        built, reported = [], 0
        for bar in history.bars(start_ns, hours, venues, btc):
            events = tuple(history.proxy_events[reported:])
            reported = len(history.proxy_events)
            built.append((bar, events))
            yield bar, events
        _store(self._dir, entry, built)


def _store(directory: Path, entry: Path, value: object) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except OSError:
        return  # a read-only or full cache directory costs speed, never correctness
