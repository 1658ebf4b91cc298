"""The journal's disk full or read-only mid-session (issue 14 §3): trading halts, the daemon says why in its log
and in `basisd status`, nothing already journaled is damaged, and a restart with the disk writable again works.

Two full disks. Any user: the child's own file-size limit (RLIMIT_FSIZE lowered on the running daemon with
prlimit(2)), so every write past the first byte of any file fails (EFBIG), as writes fail on a full disk. As root:
a real one, a 4 MiB tmpfs under `runtime.state_dir` filled up (ENOSPC); then restarts while it is still full and
while it is read-only (a filesystem with the journal open for writing cannot be remounted read-only, so read-only
is tried at the restart) are refused with exit 78 naming the journal, and once it is writable again the daemon
comes back. `tests/integration/test_journal.py` covers SIGKILL; `tests/unit/test_journal.py` a closed file.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT, DaemonProcess
from tests.integration.test_process import replay_config

pytestmark = [pytest.mark.chaos, pytest.mark.subprocess,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit(2) is Linux's")]

TABLES = ("runs", "venue_reports", "orders", "trading_state", "reconciliations", "risk_actions", "recoveries")
JSON_COLUMNS = {"venue_reports": "body", "orders": "body", "reconciliations": "drifts", "recoveries": "body"}


def status(sock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "status", "--socket", str(sock)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def read_all(journal: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, each JSON column parsed: a damaged row or page raises here."""
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}
        for table, column in JSON_COLUMNS.items():
            for (value,) in db.execute(f"SELECT {column} FROM {table}"):
                json.loads(value)
    return rows


def halts_and_says_why(daemon: DaemonProcess, journal: Path, sock: Path, cause: str, fill: Callable[[], None]) -> None:
    """Fill the disk under a running, trading daemon: it halts trading, names the journal and the cause in its
    log and its status, and stops cleanly (exit 0) when told to."""
    daemon.wait_ready()
    daemon.wait_for_event("instruction_finished", type="ENTRY")
    fill()
    failed = daemon.wait_for_event("journal_write_failed", timeout_s=20)
    assert failed["level"] == "critical" and str(journal) in failed["detail"] and cause in failed["detail"], failed
    halt = daemon.wait_for_event("trading_state_changed", current="HALTED")
    assert halt["source"] == "journal" and "cannot be written" in halt["reason"], halt
    shown = status(sock)
    assert shown.returncode == 0, shown.stderr
    assert f"trading: HALTED (the journal {journal} cannot be written" in shown.stdout, shown.stdout
    assert f"WRITES FAILING: OperationalError: {cause}" in shown.stdout, shown.stdout
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout_s=10) == 0


def intact(before: dict[str, list[tuple[object, ...]]], journal: Path) -> int:
    """Nothing journaled before the fault was lost or changed, every order's intent is there with its outcome
    (none was cut in half by the fault), and the run could not write its end marker. Its run number."""
    after = read_all(journal)
    for table in TABLES:
        assert after[table][:len(before[table])] == before[table], table
    ((first, *_, ended_ns, _, _),) = after["runs"]
    assert ended_ns is None
    events: dict[str, list[str]] = {}
    for row in after["orders"]:
        events.setdefault(str(row[4]), []).append(str(row[6]))
    assert events and all(e == ["intent", "filled"] for e in events.values()), events
    return int(str(first))


def comes_back(config: Path, tmp: Path, sock: Path, journal: Path, run: int) -> None:
    """The disk writable again: the next run starts, names the run that could not mark its end, trades, and
    journals (its own end marker included)."""
    tmp.mkdir()
    daemon = DaemonProcess(config, tmp)
    try:
        assert daemon.wait_for_event("previous_run_unclean")["run"] == run
        daemon.wait_ready()
        daemon.wait_for_event("reconciled")
        shown = status(sock)
        assert shown.returncode == 0 and "trading: ACTIVE" in shown.stdout, shown.stdout
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout_s=10) == 0
    finally:
        daemon.close()
    final = read_all(journal)
    assert [(r[0], r[4] is not None) for r in final["runs"]] == [(run, False), (run + 1, True)]
    assert [r for r in final["reconciliations"] if r[1] == run + 1]  # the new run journals again


def test_a_full_disk_under_the_journal_halts_trading_says_why_corrupts_nothing_and_a_restart_works(
        catalog: Path, tmp_path: Path) -> None:
    state, sock = tmp_path / "state", tmp_path / "control.sock"
    journal = state / "journal.sqlite"
    config = replay_config(catalog, runtime={"state_dir": str(state)}, control={"socket": str(sock)})
    daemon = DaemonProcess(config, tmp_path)
    before: dict[str, list[tuple[object, ...]]] = {}

    def fill() -> None:
        before.update(read_all(journal))
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (1, 1))  # the disk is full from here on

    try:
        halts_and_says_why(daemon, journal, sock, "disk I/O error", fill)  # how SQLite reports EFBIG
    finally:
        daemon.close()
    comes_back(config, tmp_path / "next", sock, journal, intact(before, journal))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only: where mounting is not allowed, the test skips)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    disk = tmp_path / "state"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "basisd-chaos", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True, capture_output=True)


def refused(config: Path, tmp: Path, journal: Path, cause: str) -> None:
    """A start on a journal that cannot be written: exit 78 naming the journal and the cause, before trading."""
    tmp.mkdir()
    daemon = DaemonProcess(config, tmp)
    try:
        assert daemon.wait_exit(timeout_s=20) == 78, daemon.output()[-2000:]
    finally:
        daemon.close()
    (failure,) = [e for e in daemon.events() if e.get("event") == "daemon_failed"]
    assert f"the journal {journal} cannot be opened" in failure["error"] and cause in failure["error"], failure
    assert not [e for e in daemon.events() if e.get("event") in ("daemon_ready", "order_sent", "order_filled")]


def test_a_real_full_then_read_only_disk_halts_refuses_restarts_until_writable_and_corrupts_nothing(
        catalog: Path, tmp_path: Path, small_disk: Path) -> None:
    sock, journal = tmp_path / "control.sock", small_disk / "journal.sqlite"
    config = replay_config(catalog, runtime={"state_dir": str(small_disk)}, control={"socket": str(sock)})
    filler = small_disk / "filler"
    before: dict[str, list[tuple[object, ...]]] = {}

    def fill() -> None:
        before.update(read_all(journal))
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass  # ENOSPC: the disk is full

    daemon = DaemonProcess(config, tmp_path)
    try:
        halts_and_says_why(daemon, journal, sock, "database or disk is full", fill)
    finally:
        daemon.close()
    run = intact(before, journal)
    refused(config, tmp_path / "still-full", journal, "database or disk is full")
    filler.unlink()
    remount(small_disk, "ro")
    refused(config, tmp_path / "read-only", journal, "readonly database")
    remount(small_disk, "rw")
    assert intact(before, journal) == run  # the refused starts touched nothing
    comes_back(config, tmp_path / "next", sock, journal, run)
