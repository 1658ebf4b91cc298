"""A backtest's progress: a live bar on a terminal, events in the log anywhere else.

On a terminal (stderr is a TTY) a rich progress bar shows the hours replayed, the market date and the time taken.
Log lines never break it: while the bar is up, the log's output goes through rich's console (structlog's
logger factory is pointed at a `FileProxy` of that console), which prints each line above the bar and redraws
the bar below it. The factory is put back when the bar is done.

Off a terminal (journald, CI, a pipe) there is no bar: every `EVERY_PERCENT` of the window a `backtest_progress`
event is logged at info (whatever the run's log level: a backtest logs warnings only, and these events are the
point), with the percent, the hours replayed and the market date. The percent is fixed, not a setting: ten lines a
run is what a journal or a CI log can show without drowning anything else. Each threshold crossed is logged once,
in order, so a run always logs 10, 20, … 100 (100 only once every hour of the window is in); the market date is
the one reached when the poll saw the threshold crossed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import anyio
import structlog

EVERY_PERCENT = 10
POLL_S = 0.25  # wall-clock seconds between looks at the run


class BacktestProgress:
    """Follows a run through `hours_done()` (bars delivered, of `hours`) and `now_ns()` (the market clock).

    Use as a context manager around the run (entered before the daemon is built, so its actors log through the
    bar's console), with `follow()` running in the run's task group and `finish()` once the run is over."""

    def __init__(self, hours: int, hours_done: Callable[[], int], now_ns: Callable[[], int], stream: TextIO,
                 tty: bool | None = None) -> None:
        self._hours = max(1, hours)
        self._hours_done = hours_done
        self._now_ns = now_ns
        self._stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._next_percent = EVERY_PERCENT
        self._bar: Any = None
        self._task: Any = None
        self._factory: Any = None

    def __enter__(self) -> BacktestProgress:
        if self.tty:
            self._start_bar()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.file_proxy import FileProxy
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        console = Console(file=self._stream, soft_wrap=True)  # a long log line wraps as the terminal wraps it
        self._bar = Progress(TextColumn("backtest"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.completed:.0f}/{task.total:.0f} h  {task.fields[date]}"),
                             TimeElapsedColumn(), console=console, auto_refresh=False, redirect_stdout=False,
                             redirect_stderr=True)
        self._task = self._bar.add_task("backtest", total=self._hours, date="")
        self._factory = structlog.get_config()["logger_factory"]
        proxy: Any = FileProxy(console, self._stream)  # a TextIO in all but name (io.TextIOBase)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(proxy))
        self._bar.start()

    def _stop_bar(self) -> None:
        if self._bar is None:
            return
        self._bar.stop()
        structlog.configure(logger_factory=self._factory)
        self._bar = None

    def update(self) -> None:
        done = min(self._hours_done(), self._hours)
        date = datetime.fromtimestamp(self._now_ns() / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
        if self._bar is not None:
            self._bar.update(self._task, completed=done, date=date)
            self._bar.refresh()
            return
        if self.tty:
            return
        percent = done * 100 // self._hours
        while self._next_percent <= min(percent, 100):
            _progress_log().info("backtest_progress", percent=self._next_percent, hours_done=done,
                                 hours=self._hours, market_date=date)
            self._next_percent += EVERY_PERCENT

    async def follow(self) -> None:
        while True:
            self.update()
            await anyio.sleep(POLL_S)

    def finish(self) -> None:
        """The last look, once the run is over (the poll may not have seen its end)."""
        self.update()


def _progress_log() -> Any:
    # At info whatever the configured level: the backtest's log filters to warnings, progress is what CI shows.
    return structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)).bind(
        actor="backtest")
