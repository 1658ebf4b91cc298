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
    DATA = 65  # EX_DATAERR: the market history lacks what the run needs
    NO_INPUT = 66  # EX_NOINPUT: a data directory or file that is not there
    UNAVAILABLE = 69  # EX_UNAVAILABLE: no daemon answers on the control socket, or it refused the request
    SOFTWARE = 70  # EX_SOFTWARE: an actor kept failing (restart budget exhausted)
    CONFIG = 78  # EX_CONFIG: the configuration is invalid; restarting will not help


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


class MissingDataError(FatalError):
    """The history lacks a value the run needs, and the configuration allows no proxy for it."""

    exit_code = ExitCode.DATA


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
