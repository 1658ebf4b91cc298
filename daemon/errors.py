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


# --- a venue's answers as ccxt reports them, mapped once at the edge (daemon.venues.ccxt_errors) ----------


class UnknownOrderOutcome(VenueError):
    """A request that may have changed the venue's state (an order, a cancel, a transfer) got no answer we can
    trust: a timeout, a dropped connection, a 5xx after it was received, OKX's "timed out, check the status".
    It is neither done nor failed: its fate is looked up by client order id before anything is sent again (and
    a resend reuses the id). Not a `RetryableVenueError` on purpose: a blind retry could place it twice."""

    def __init__(self, message: str, client_order_id: str | None = None, venue_degraded: bool = False) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id
        self.venue_degraded = venue_degraded  # the venue itself said it is struggling (5xx, not available)


class DuplicateClientOrderId(UnknownOrderOutcome):
    """The venue refused an order because it already has one with this client id: the first one was placed
    (a resend after an unknown outcome). Its fate is looked up, never treated as a rejection."""


class VenueRateLimited(RetryableVenueError):
    """The venue refused the request for its rate: nothing was done. `retry_after_s` is the wait the venue asked
    for (Retry-After, or the rest of Binance's 418 ban), `banned_until_ms` the end of a ban if it named one."""

    def __init__(self, message: str, retry_after_s: float | None = None, banned_until_ms: int | None = None) -> None:
        super().__init__(message, retry_after_s)
        self.banned_until_ms = banned_until_ms


class VenueDegraded(RetryableVenueError):
    """The venue is not available or under maintenance: no new orders there until it answers normally again."""


class VenueClockSkew(RetryableVenueError):
    """The venue refused the request's timestamp (outside its receive window): nothing was done; the clock offset
    must be measured again before the next signed request."""


class VenueBadPayload(RetryableVenueError):
    """A venue's answer we cannot read exactly (a missing field, a number that is not a decimal string, a value that
    disagrees with ccxt's own reading of it): nothing is booked from it, and it is asked for again."""


class VenueRejected(NonRetryableVenueError):
    """The venue refused the request on its merits (insufficient funds, an invalid order, a bad symbol), with the
    venue's own reason; nothing was done."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class VenueInsufficientFunds(VenueRejected):
    """The venue refused an order or a withdrawal for lack of balance or margin."""


class VenueOrderNotFound(VenueRejected):
    """The venue has no such order: never placed, or long gone (what a lookup by client id may conclude)."""


class VenueCredentialsRejected(FatalVenueError):
    """The venue refused our credentials at start-up: the configuration is wrong, restarting will not help. Names
    the venue and the setting that holds the key, never the secret."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, venue: str, key: str) -> None:
        super().__init__(message)
        self.venue = venue
        self.key = key


class VenueAccessLost(FatalVenueError):
    """The venue refused credentials it had accepted (revoked, permissions changed, account suspended) while
    trading: trading halts until an operator looks."""


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
