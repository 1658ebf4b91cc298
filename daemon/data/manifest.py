"""`basisd data manifest`: what each series really covers, its duplicates and its gaps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.data.history import CATALOG, DataLayoutError, find_file, read_series
from daemon.data.series import Gap, iso


@dataclass(frozen=True, slots=True)
class ManifestRow:
    key: str
    file: str
    first: str
    last: str
    rows: int
    duplicates: int
    gaps: tuple[Gap, ...]
    error: str = ""


def manifest(data_dir: Path) -> list[ManifestRow]:
    rows = []
    for key, spec in CATALOG.items():
        try:
            series = read_series(data_dir, key)
            path = find_file(data_dir, spec)
        except DataLayoutError as exc:
            rows.append(ManifestRow(key, "", "", "", 0, 0, (), str(exc)))
            continue
        rows.append(ManifestRow(key, str(path.relative_to(data_dir)), iso(series.first_ns), iso(series.last_ns),
                                len(series), series.duplicates, tuple(series.gaps(spec.cadence_s))))
    return rows


def render(rows: list[ManifestRow]) -> str:
    lines = [f"{'series':30} {'first':16} {'last':16} {'rows':>6} {'dups':>5} {'gaps':>5} {'longest':>8}"]
    for r in rows:
        if r.error:
            lines.append(f"{r.key:30} MISSING: {r.error}")
            continue
        longest = max((g.hours for g in r.gaps), default=0.0)
        lines.append(f"{r.key:30} {r.first:16} {r.last:16} {r.rows:6d} {r.duplicates:5d} {len(r.gaps):5d} "
                     f"{longest:7.0f}h")
        for gap in r.gaps[:3]:
            lines.append(f"{'':30}   gap {iso(gap.start_ns)} → {iso(gap.end_ns)} ({gap.hours:.0f} h)")
        if len(r.gaps) > 3:
            lines.append(f"{'':30}   … and {len(r.gaps) - 3} more")
    return "\n".join(lines)
