"""The project's error tree.

The type of an error decides what happens next: a retry, a halt of trading, or the process's exit code.
Library errors (ccxt, web3, pydantic) are mapped onto this tree once, at the edge that calls the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, chosen so systemd's `RestartPreventExitStatus=78` stops config loops."""

    OK = 0
    FAILURE = 1
    USAGE = 64  # EX_USAGE: a bad command-line flag
    DATA = 65  # EX_DATAERR: the market history is malformed, or lacks what the run needs
    NO_INPUT = 66  # EX_NOINPUT: a data directory or file that is not there, or cannot be read
    UNAVAILABLE = 69  # EX_UNAVAILABLE: no daemon answers on the control socket, it refused, or answered nonsense
    SOFTWARE = 70  # EX_SOFTWARE: an actor kept failing, a run stopped short of its window, or an internal error
    CANT_CREATE = 73  # EX_CANTCREAT: the report (output) directory cannot be written
    CONFIG = 78  # EX_CONFIG: the configuration is invalid; restarting will not help
    INTERRUPTED = 130  # 128 + SIGINT: stopped with Ctrl-C before it finished
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`basisd status | head -1`)


class BasisdError(Exception):
    """Base of every error the daemon raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, located precisely enough to fix it."""

    source: str  # a file path, or "environment variable BASISD_..."
    key: str  # dotted path of the offending key, e.g. "risk.margin_warning_ratio"
    message: str  # what was expected

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}"


class ConfigError(BasisdError):
    """Raised when the configuration cannot be loaded; carries one problem per mistake."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class FatalError(BasisdError):
    """Raised by an actor for a failure no restart can fix; the supervisor escalates it at once."""


class DataError(FatalError):
    """The market history cannot be used: a malformed file (named with its line and value), or a value the run
    needs that is missing. Restarting the reader would read the same bytes again, so it is fatal."""

    exit_code = ExitCode.DATA


class MissingDataError(DataError):
    """The history lacks a value the run needs, and the configuration allows no proxy for it."""


class NoInputError(FatalError):
    """A data directory or file the run needs is not there, or cannot be read."""

    exit_code = ExitCode.NO_INPUT


class FeedError(FatalError):
    """The market feed failed in a way it did not foresee. A replay cannot skip bars and stay honest, and a feed
    that raised is dead (its generator is closed): reading it again would look like the end of the replay."""

    exit_code = ExitCode.SOFTWARE


class OutputError(FatalError):
    """The report directory, or a file in it, cannot be written."""

    exit_code = ExitCode.CANT_CREATE


class IncompleteRunError(BasisdError):
    """A replay stopped before it covered its window: its report would describe a shorter run than asked for."""

    exit_code = ExitCode.SOFTWARE


class RestartBudgetExceeded(BasisdError):
    """Raised when an actor failed more often than its restart budget allows within the window."""

    exit_code = ExitCode.SOFTWARE

    def __init__(self, actor: str, restarts: int, window_s: float, last_error: str) -> None:
        self.actor = actor
        self.restarts = restarts
        self.window_s = window_s
        self.last_error = last_error
        super().__init__(
            f"actor {actor!r} failed {restarts} times within {window_s:g}s "
            f"(last error: {last_error}); trading halted"
        )


class VenueError(BasisdError):
    """Base for errors that come back from a venue (exchange or chain)."""


class RetryableVenueError(VenueError):
    """The call may succeed if repeated later; `retry_after_s` says when, if the venue told us."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NonRetryableVenueError(VenueError):
    """The request was refused on its merits (bad size, insufficient funds); repeating it changes nothing."""


class FatalVenueError(VenueError):
    """The venue cannot be used any more (bad credentials, account disabled); trading must halt."""


def find_basisd_error(exc: BaseException) -> BasisdError | None:
    """The first error raised on purpose inside `exc` (itself, or inside nested exception groups)."""
    if isinstance(exc, BasisdError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_basisd_error(inner)
            if found is not None:
                return found
    return None
