"""The real history in ../shared/data: ranges, quirks and gaps are what DOMAIN.md §7 documents."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.data.history import CATALOG, read_series
from daemon.data.manifest import manifest
from daemon.data.series import StaleData
from daemon.data.timeparse import parse_ts
from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")


def test_every_catalogued_series_reads() -> None:
    rows = {r.key: r for r in manifest(DATA)}
    assert set(rows) == set(CATALOG)
    assert not [r.key for r in rows.values() if r.error]


def test_documented_quirks_are_found() -> None:
    rows = {r.key: r for r in manifest(DATA)}
    assert len(rows["perp:binance:ETH"].gaps) == 15  # the 1000-row paging bug, every ~41 days
    assert rows["perp:bybit:ETH"].duplicates == 15  # duplicated 00:00 rows
    assert rows["funding:okx:ETH"].duplicates == 210
    okx = rows["perp:okx:ETH"]
    assert okx.last.startswith("2025-08-31 23:00")
    assert [round(g.hours) for g in okx.gaps] == [721, 721]  # September 2024 and April 2025


def test_a_lookup_inside_a_gap_fails_naming_the_series_instead_of_using_another_row() -> None:
    okx = read_series(DATA, "perp:okx:ETH")
    with pytest.raises(StaleData, match="perp:okx:ETH: no value at 2024-09-15 00:00 within 2 h"):
        okx.at(parse_ts("2024-09-15T00:00:00Z"), CATALOG["perp:okx:ETH"].max_age_s)
    with pytest.raises(StaleData, match="no value before it"):
        okx.at(parse_ts("2024-06-01T00:00:00Z"), 7200)  # before OKX data starts: never the first row


def test_the_lst_oracle_has_no_look_ahead_at_midnight() -> None:
    oracle = read_series(DATA, "oracle:weETH/ETH")
    with pytest.raises(StaleData):  # the oracle starts at 01:00; the seed's asof returned it for 00:00
        oracle.at(parse_ts("2024-05-12T00:00:00Z"), 7200)
    assert oracle.at(parse_ts("2024-05-12T01:00:00Z"), 7200) == pytest.approx(1.0381626525752412)


def test_manifest_command() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "data", "manifest", "--data", str(DATA)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "perp:okx:ETH" in result.stdout and "721 h" in result.stdout
