"""A backtest's progress: on a terminal a bar that log lines never break (a real pty, read back through a small
terminal model); off a terminal, `backtest_progress` events every 10 % in the log."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.daemon_process import ROOT

pytestmark = pytest.mark.timeout(180)  # a real backtest each, on 2 shared cores
COLUMNS, LINES = 220, 50


def config_with(catalog: Path, **sections: object) -> Path:
    settings = yaml.safe_load((catalog / "replay.yaml").read_text())
    settings.update(sections)
    path = catalog / "progress.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


class Terminal:
    """What a terminal shows: printable text, CR, LF, backspace, and the CSI sequences rich and a progress bar
    use (cursor up/down/column, erase in line); colours and modes are ignored."""

    CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")
    OSC = re.compile(r"\x1b\][^\x07\x1b]*(\x07|\x1b\\)")

    def __init__(self, width: int = COLUMNS) -> None:
        self.width = width
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0

    def _line(self) -> list[str]:
        while len(self.lines) <= self.row:
            self.lines.append([])
        return self.lines[self.row]

    def _csi(self, params: str, command: str) -> None:
        n = int(params) if params.isdigit() else None
        if command in "ABCDG":
            moves = {"A": (-(n or 1), 0), "B": (n or 1, 0), "C": (0, n or 1), "D": (0, -(n or 1))}
            if command == "G":
                self.col = (n or 1) - 1
            else:
                self.row = max(0, self.row + moves[command][0])
                self.col = max(0, self.col + moves[command][1])
        elif command == "K":
            line = self._line()
            if n == 2:
                line.clear()
            elif n == 1:
                line[:self.col + 1] = [" "] * min(self.col + 1, len(line))
            else:
                del line[self.col:]

    def _char(self, ch: str) -> None:
        if ch == "\r":
            self.col = 0
        elif ch == "\n":
            self.row, self.col = self.row + 1, 0
        elif ch == "\b":
            self.col = max(0, self.col - 1)
        elif ch >= " ":
            if self.col >= self.width:
                self.row, self.col = self.row + 1, 0
            line = self._line()
            line.extend(" " * (self.col + 1 - len(line)))
            line[self.col] = ch
            self.col += 1

    def feed(self, raw: str) -> list[str]:
        i = 0
        while i < len(raw):
            if raw[i] == "\x1b":
                m = self.CSI.match(raw, i)
                if m is not None:
                    self._csi(m.group(1), m.group(2))
                m = m or self.OSC.match(raw, i)
                i = m.end() if m is not None else i + 1
                continue
            self._char(raw[i])
            i += 1
        return ["".join(line).rstrip() for line in self.lines]


def screen(raw: str) -> list[str]:
    return Terminal().feed(raw)


def run_on_a_pty(args: list[str], timeout_s: float = 240) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(LINES)}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(args, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the pty
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = process.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_log_lines_print_above_the_bar_and_never_break_it(catalog: Path) -> None:
    """A status actor that fails every 0.3 s logs `actor_restarting` warnings all through the run: each must
    stand on its own line of the screen, and the bar must end whole, at 100 %, below them."""
    config = config_with(catalog, replay={"source": "synthetic", "seed": 7, "start": "2024-06-01T00:00:00Z",
                                          "hours": 24 * 240, "speed": None},
                         chaos={"fail_actor": "status", "fail_after_s": 0.3},
                         supervisor={"restart_budget_count": 1000, "restart_backoff_initial_s": 0.05,
                                     "restart_backoff_max_s": 0.1})
    code, raw = run_on_a_pty([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out",
                              str(catalog.parent / "out")])
    assert code == 0, raw[-3000:]
    shown = [line for line in screen(raw) if line.strip()]
    logs = [line for line in shown if "actor_restarting" in line]
    assert len(logs) >= 2, "\n".join(shown[-40:])  # the drill logged during the run
    bars = [line for line in shown if "backtest" in line and "/5760 h" in line]
    assert bars, "\n".join(shown[-40:])
    for line in logs:  # a log line alone on its line: no bar before or after it
        assert "━" not in line and "/5760 h" not in line, line
        assert re.match(r"^\S", line), line  # it starts at the left edge, not after a bar
    assert len(bars) == 1 and "100%" in bars[0] and "5760/5760 h" in bars[0], bars  # one bar, finished
    assert shown.index(bars[0]) > shown.index(logs[-1])  # below every log line
    assert shown[-1] == f"report: {catalog.parent / 'out' / 'report.html'}"


def test_off_a_terminal_progress_is_an_event_every_ten_percent(catalog: Path) -> None:
    config = config_with(catalog, replay={"source": "synthetic", "seed": 7, "start": "2024-06-01T00:00:00Z",
                                          "hours": 24 * 60, "speed": None}, logging={"format": "json"})
    result = subprocess.run([sys.executable, "-m", "daemon", "backtest", "--config", str(config), "--out",
                             str(catalog.parent / "out")], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stderr.splitlines() if '"backtest_progress"' in line]
    assert [e["percent"] for e in events] == list(range(10, 101, 10))
    assert all(e["level"] == "info" and e["hours"] == 24 * 60 for e in events)
    done = [e["hours_done"] for e in events]
    assert done == sorted(done) and done[-1] == 24 * 60
    assert all(e["hours_done"] * 100 >= e["percent"] * e["hours"] for e in events)  # never ahead of the run
    dates = [e["market_date"] for e in events]
    assert dates == sorted(dates) and dates[0] >= "2024-06-01" and dates[-1].startswith("2024-07-30")
    assert "\r" not in result.stderr and "━" not in result.stderr  # no bar off a terminal
