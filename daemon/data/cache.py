"""Caches of parsed history, so a second run does not parse the CSV files again.

`SeriesCache`: one file per series under the cache directory (`$BASISD_CACHE_DIR`, else `$XDG_CACHE_HOME/basisd`, else
`~/.cache/basisd`), keyed by the series, its spec, and the source file's path, size and modification time:
an edited or replaced file is simply parsed again. Entries are written atomically; an unreadable entry is
treated as a miss, never as data.

`BarCache`: the whole run's market bars, with the proxy decisions taken on the way, keyed by the window, the
venues, the history's options and the identity (path, size, modification time) of every file in the data
directory. Building the bars from the series costs about a second on the full window; a warm run unpickles them.

Both keys include the code that builds what they hold (`code_version()`: a hash of the parsing and bar-building
modules' source, the package version and `FORMAT`): a cache written by another version of the code is never
read, whatever the files. An entry that cannot be read, or holds something else than this version writes, is a
miss with a warning, never data and never a crash. Entries are pickles, and unpickling runs code: the cache is
used only in a directory this user owns that nobody else can write (created 0700), and only entries this user
owns are read; otherwise it is bypassed with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import pickle
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import structlog

from daemon import __version__
from daemon.data.bars import DuplicatesResolved, History, ProxyUsed
from daemon.data.history import CATALOG, find_file, read_series
from daemon.data.series import Series
from daemon.domain.bars import MarketBar

FORMAT = 3
# The modules whose code decides what an entry holds: a change to any of them makes every entry a miss.
BUILDERS = ("daemon.data.bars", "daemon.data.cache", "daemon.data.history", "daemon.data.series",
            "daemon.data.timeparse", "daemon.domain.bars")

log = structlog.get_logger()
T = TypeVar("T")


@functools.cache
def code_version() -> str:
    """A hash of this code's version: the package version, `FORMAT`, the byte order (the arrays are stored
    raw) and the source of every module in `BUILDERS` (so an edit without a version bump counts too)."""
    digest = hashlib.sha256(f"{__version__}|{FORMAT}|{sys.byteorder}|{sys.version_info[:2]}".encode())
    for name in BUILDERS:
        source = getattr(importlib.import_module(name), "__file__", None)
        try:
            digest.update(Path(source).read_bytes() if source else name.encode())
        except OSError:
            digest.update(name.encode())  # no readable source (a frozen build): the version alone decides
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    explicit = os.environ.get("BASISD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "basisd"


def _usable(directory: Path) -> bool:
    """Whether entries may be read from and written to `directory`: it is ours and only we can write it."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = directory.lstat()
    except OSError as exc:
        log.warning("cache_unavailable", directory=str(directory), error=exc.strerror or str(exc))
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        log.warning("cache_unsafe", directory=str(directory), owner_uid=info.st_uid, mode=oct(info.st_mode & 0o7777),
                    detail="not a directory owned by this user and writable by it alone: cache bypassed")
        return False
    return True


def _load(entry: Path) -> object | None:
    """The entry's content, or None: missing (silently), or unreadable, foreign or damaged (with a warning)."""
    try:
        with open(entry, "rb") as f:
            if os.fstat(f.fileno()).st_uid != os.geteuid():
                log.warning("cache_entry_ignored", entry=str(entry), detail="owned by another user")
                return None
            content: object = pickle.load(f)  # our own entry, in our own directory (see `_usable`)
            return content
    except FileNotFoundError:
        return None
    except Exception as exc:  # any damage is a miss: the entry is rebuilt from the files
        log.warning("cache_entry_unreadable", entry=str(entry), error=f"{type(exc).__name__}: {exc}")
        return None


class SeriesCache:
    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or default_cache_dir()
        self._usable: bool | None = None
        self.hits = 0
        self.misses = 0

    def _entry(self, data_dir: Path, key: str) -> Path:
        source = find_file(data_dir, CATALOG[key])
        info = source.stat()
        ident = (f"{code_version()}|{key}|{CATALOG[key]!r}|{source.resolve()}|{info.st_size}|"
                 f"{info.st_mtime_ns}")
        return self._dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.series"

    def load(self, data_dir: Path, key: str) -> Series:
        if self._usable is None:
            self._usable = _usable(self._dir)
        entry = self._entry(data_dir, key)
        series = _valid(entry, _load(entry) if self._usable else None, lambda c: _series(c, key))
        if series is not None:
            self.hits += 1
            return series
        self.misses += 1
        series = read_series(data_dir, key)
        if self._usable:
            _store(self._dir, entry, (series.name, series.duplicates, series.ts.tobytes(), series.values.tobytes(),
                                      series.conflicts))
        return series


def _valid(entry: Path, content: object | None, check: Callable[[object], T | None]) -> T | None:
    """`check(content)`: what the entry holds, if it is what this code writes; a miss with a warning if not."""
    if content is None:
        return None
    value = check(content)
    if value is None:
        log.warning("cache_entry_unreadable", entry=str(entry),
                    error=f"holds a {type(content).__name__} this version does not write: rebuilt")
    return value


def _series(cached: object, key: str) -> Series | None:
    """The series an entry holds, if it is what `SeriesCache.load` stores for `key`."""
    if not (isinstance(cached, tuple) and len(cached) == 5):
        return None
    name, duplicates, ts, values, conflicts = cached
    if name != key or not isinstance(duplicates, int) or not isinstance(ts, bytes) or not isinstance(values, bytes) \
            or not isinstance(conflicts, dict):
        return None
    series = Series(key, ())
    series.duplicates = duplicates
    series.conflicts = conflicts
    try:
        series.ts.frombytes(ts)
        series.values.frombytes(values)
    except ValueError:  # not a whole number of items
        return None
    return series if series.ts and len(series.ts) == len(series.values) else None


BarsWithProxies = Iterator[tuple[MarketBar, tuple[ProxyUsed | DuplicatesResolved, ...]]]


class BarCache:
    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory or default_cache_dir()
        self.hit = False

    def _entry(self, history: History, start_ns: int, hours: int, venues: tuple[str, ...], btc: bool) -> Path:
        root = history.data_dir.resolve()
        files = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in root.rglob("*") if p.is_file())
        ident = (f"{code_version()}|bars|{root}|{files!r}|{start_ns}|{hours}|{venues!r}|{btc}|{history.identity}|"
                 f"{sorted((k, repr(v)) for k, v in CATALOG.items())!r}")
        return self._dir / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.bars"

    def bars(self, history: History, start_ns: int, hours: int, venues: tuple[str, ...], btc: bool) -> BarsWithProxies:
        """Each bar with the proxy decisions first taken at it; from the cache when this exact run was built
        before, else from `history` (stored once the whole window has been built: a run that stops early, on
        missing data say, leaves nothing behind)."""
        usable = _usable(self._dir)
        entry = self._entry(history, start_ns, hours, venues, btc)
        cached = _valid(entry, _load(entry) if usable else None, lambda c: _bars(c, hours))
        if cached is not None:
            self.hit = True
            yield from cached
            return
        built, reported = [], 0
        for bar in history.bars(start_ns, hours, venues, btc):
            events: tuple[ProxyUsed | DuplicatesResolved, ...] = tuple(history.proxy_events[reported:])
            reported = len(history.proxy_events)
            built.append((bar, events))
            yield bar, events
        if usable:
            _store(self._dir, entry, built)


def _bars(cached: object, hours: int) -> list[tuple[MarketBar, tuple[ProxyUsed | DuplicatesResolved, ...]]] | None:
    """The bars an entry holds, if it is what `BarCache.bars` stores: one (bar, proxy events) per hour."""
    if not isinstance(cached, list) or len(cached) != hours:
        return None
    for item in cached:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], MarketBar)
                and isinstance(item[1], tuple) and all(isinstance(e, ProxyUsed | DuplicatesResolved) for e in item[1])):
            return None
    return cached


def _store(directory: Path, entry: Path, value: object) -> None:
    tmp = entry.with_suffix(f".tmp{os.getpid()}")
    try:
        # O_EXCL: never write through a file (or a symlink) someone else put in the way.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # A read-only or full cache directory costs speed, never correctness.
        log.warning("cache_write_failed", entry=str(entry), error=exc.strerror or str(exc))
