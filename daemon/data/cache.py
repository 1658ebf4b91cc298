"""A cache of parsed series, so a second run does not parse the CSV files again.

One file per series under the cache directory (`$BASISD_CACHE_DIR`, else `$XDG_CACHE_HOME/basisd`, else
`~/.cache/basisd`), keyed by the series, its spec, and the source file's path, size and modification time:
an edited or replaced file is simply parsed again. Entries are written atomically; an unreadable entry is
treated as a miss, never as data.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from array import array
from pathlib import Path

from daemon.data.history import CATALOG, find_file, read_series
from daemon.data.series import Series

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
