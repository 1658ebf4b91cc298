"""What may be sent to a venue's host right now: one `RequestGate` per ccxt exchange (per host: Binance's USDⓈ-M
`fapi.binance.com` and spot `api.binance.com` are throttled and banned separately), and `GatedClient`, the ccxt
client seen through it. Every request the adapter makes goes through a `GatedClient`, so this is the one place that
decides.

- **Rate limited** (429 with Retry-After, Binance's 418 ban "until <ms>", Bybit's 10006, OKX's 50011): the gate
  closes until the venue's time has passed, plus a random jitter (so every client throttled at once does not come
  back at once). While it is closed **no request at all** goes to that host: a read that would wait longer than
  `max_read_wait_s` fails at once with `GateClosed` (a `VenueRateLimited` saying until when), a shorter wait is
  slept through; an order is refused before it is sent (never queued: by the time the gate opens the reason for the
  order may be gone).
- **Degraded** (5xx, connection refused, maintenance): no new orders to that host. Risk-reducing orders (reduce-only,
  and the flatten's sells) and cancels are still tried: a desk wants out of a position even on a bad day, and the
  worst they can do is come back unknown and be looked up. Reads are retried with exponential backoff and jitter;
  the first read that succeeds ends the degraded state.
- **Access lost** (credentials refused after start-up): every later request fails at once with the same
  `VenueAccessLost`, so a revoked key is not used again; trading halts.
- **Unreadable answers** (a 2xx whose body is not JSON: ccxt then returns a structure of Nones, or an empty list,
  without raising): a read raises `VenueBadPayload` naming the call (after its retries); a write raises ccxt's
  `BadResponse`, which the adapter maps to an unknown outcome and looks up. Nothing is booked from such an answer.

Production keeps ccxt's own limiter on (`enableRateLimit`), which spaces requests by the venue's published weights;
the gate handles what gets through anyway. The retry policy is a few lines here rather than a library (stamina,
tenacity): it needs the venue's own wait as a floor and the gate's state between attempts, which a decorator would
hide.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ccxt

from daemon.errors import (
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueAccessLost,
    VenueBadPayload,
    VenueClockSkew,
    VenueDegraded,
    VenueError,
    VenueRateLimited,
    VenueRejected,
)
from daemon.venues.ccxt_errors import Call, backoff_s
from daemon.venues.ccxt_quirks import corrected

# The ccxt methods that may change the venue's state; every other coroutine method is a read.
WRITES = frozenset({"create_order", "create_orders", "edit_order", "cancel_order", "cancel_orders",
                    "cancel_all_orders", "transfer", "withdraw", "set_leverage", "set_margin_mode",
                    "set_position_mode"})
HOSTS = {"binanceusdm": "fapi.binance.com", "binance": "api.binance.com", "bybit": "api.bybit.com",
         "okx": "www.okx.com"}


@dataclass(frozen=True, slots=True)
class GatePolicy:
    read_attempts: int = 3  # a read is tried this many times on a retryable failure
    backoff_base_s: float = 0.5  # exponential step between read attempts (full jitter on top of the venue's wait)
    backoff_cap_s: float = 8.0
    jitter_s: float = 1.0  # added (uniformly at random) to the venue's wait before the gate reopens
    default_wait_s: float = 1.0  # a rate limit that names no wait
    max_read_wait_s: float = 2.0  # a read waits for the gate this long at most; beyond, it fails at once


class GateClosed(VenueRateLimited):
    """Refused by our gate, without sending: the venue asked us to wait (a rate limit or a ban) and the time has not
    passed. `retry_after_s` is what is left of it, `banned_until_ms` the ban's end if it was one."""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RequestGate:
    """The state of one venue host, and its counters (read by the metrics)."""

    def __init__(self, venue: str, exchange_id: str, *, now_ms: Callable[[], int], rng: random.Random,
                 policy: GatePolicy = GatePolicy()) -> None:
        self.venue = venue
        self.exchange_id = exchange_id
        self.host = HOSTS.get(exchange_id, exchange_id)
        self.policy = policy
        self._now_ms = now_ms
        self.rng = rng  # jitter, here and in the client's backoff
        self.closed_until_ms = 0  # no request before this (wall-clock ms)
        self.banned_until_ms: int | None = None  # the end of the venue's ban, as it said
        self.closed_reason = ""
        self.degraded_reason: str | None = None
        self.access_lost: VenueAccessLost | None = None
        # counters
        self.requests_sent = 0
        self.requests_refused = 0  # not sent: the gate was closed, the venue degraded, or access lost
        self.rate_limits_seen = 0  # 429s and 418s answered by the venue
        self.bans_seen = 0  # distinct bans (a 418 naming a new end)
        self.degraded_episodes = 0
        self.clock_resyncs = 0  # the venue refused a timestamp and the clocks were measured again
        self.read_retries = 0
        self.bad_payloads = 0

    def __repr__(self) -> str:
        return f"RequestGate({self.host}, {self.state})"

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    @property
    def state(self) -> str:
        if self.access_lost is not None:
            return "access_lost"
        if self._now_ms() < self.closed_until_ms:
            return "banned" if self.banned_until_ms is not None else "rate_limited"
        return "degraded" if self.degraded else "open"

    def counters(self) -> dict[str, int | bool | str]:
        return {"state": self.state, "degraded": self.degraded, "requests_sent": self.requests_sent,
                "requests_refused": self.requests_refused, "rate_limits_seen": self.rate_limits_seen,
                "bans_seen": self.bans_seen, "degraded_episodes": self.degraded_episodes,
                "read_retries": self.read_retries, "bad_payloads": self.bad_payloads}

    def wait_s(self) -> float:
        """How long until a request may go (0: now)."""
        return max(0.0, (self.closed_until_ms - self._now_ms()) / 1000)

    # --- admission -------------------------------------------------------------------------------------------

    def check(self, what: str) -> None:
        """Raise if no request may be sent now: access lost, or the gate closed."""
        if self.access_lost is not None:
            self.requests_refused += 1
            raise VenueAccessLost(f"{self.access_lost} (not sent: {what})")
        wait = self.wait_s()
        if wait > 0:
            self.requests_refused += 1
            raise GateClosed(f"{self.venue}: no request to {self.host} until {_iso(self.closed_until_ms)} "
                             f"({self.closed_reason}); {what} was not sent", wait, self.banned_until_ms)

    def admit_order(self, what: str, *, risk_reducing: bool) -> None:
        """Raise if this order may not be sent now. A degraded venue takes no new exposure; risk-reducing orders
        and cancels are still tried."""
        self.check(what)
        if self.degraded and not risk_reducing:
            self.requests_refused += 1
            raise VenueDegraded(f"{self.venue}: {self.host} is degraded ({self.degraded_reason}): no new orders "
                                f"there until a read succeeds; {what} was not sent")

    # --- what the venue said ---------------------------------------------------------------------------------

    def record(self, error: VenueError) -> None:
        if isinstance(error, VenueAccessLost):
            self.access_lost = error
        elif isinstance(error, VenueRateLimited) and not isinstance(error, GateClosed):
            self._close(error)
        elif isinstance(error, VenueDegraded) or (isinstance(error, UnknownOrderOutcome) and error.venue_degraded):
            if not self.degraded:
                self.degraded_episodes += 1
            self.degraded_reason = str(error)[:200]

    def _close(self, error: VenueRateLimited) -> None:
        now = self._now_ms()
        self.rate_limits_seen += 1
        jitter_ms = int(self.rng.uniform(0.0, self.policy.jitter_s) * 1000)
        if error.banned_until_ms is not None:
            if error.banned_until_ms != self.banned_until_ms:
                self.bans_seen += 1
            self.banned_until_ms = error.banned_until_ms
            until = error.banned_until_ms + jitter_ms
            reason = f"banned by the venue until {_iso(error.banned_until_ms)}"
        else:
            wait = error.retry_after_s if error.retry_after_s is not None else self.policy.default_wait_s
            until = now + int(wait * 1000) + jitter_ms
            reason = f"rate limited, the venue asked for {wait:g} s"
        if until > self.closed_until_ms:
            self.closed_until_ms = until
            self.closed_reason = reason

    def succeeded(self, call: Call) -> None:
        if call is Call.READ:
            self.degraded_reason = None  # the venue answers again
        if self._now_ms() >= self.closed_until_ms:
            self.banned_until_ms = None


# The unreadable answers seen by the request in flight (per task: concurrent calls on one client do not mix).
_UNREADABLE: ContextVar[list[str] | None] = ContextVar("unreadable_answers", default=None)

Classify = Callable[[BaseException, Call], VenueError]


class GatedClient:
    """A ccxt client whose every request passes its host's gate. Attributes other than the request methods are the
    client's own (`id`, `has`, `markets`, `last_response_headers`, `set_markets`, `close`)."""

    def __init__(self, client: Any, gate: RequestGate, classify: Classify,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.raw = client
        self.gate = gate
        self._classify = classify
        self._sleep = sleep
        # Called when the venue refuses a request's timestamp (`VenueClockSkew`): measures the clocks again and
        # raises `VenueDegraded` (recorded on the gate) if they are apart beyond the limit; else the request, which
        # the venue refused before doing anything, is sent once more (a write too: it was never executed).
        self.resync: Callable[[], Awaitable[None]] | None = None
        client.on_rest_response = _watching(client.on_rest_response)

    def __repr__(self) -> str:
        return f"GatedClient({self.raw.id}, {self.gate!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if not inspect.iscoroutinefunction(attr) or name == "close":
            return attr

        async def gated(*args: Any, **kwargs: Any) -> Any:
            return await self._request(name, attr, args, kwargs)
        return gated

    async def _request(self, name: str, method: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                       kwargs: dict[str, Any], *, resynced: bool = False) -> Any:
        call = Call.WRITE if name in WRITES else Call.READ
        gate, policy = self.gate, self.gate.policy
        attempts = max(1, policy.read_attempts) if call is Call.READ else 1
        what = f"{self.raw.id}.{name}"
        for attempt in range(attempts):
            wait = gate.wait_s()
            if call is Call.READ and 0 < wait <= policy.max_read_wait_s and gate.access_lost is None:
                # A short wait the venue asked for: honoured (a few ms over, as a timer may fire a little early
                # against the wall clock the gate keeps), then the read goes.
                await self._sleep(wait + 0.005)
            gate.check(what)
            unreadable: list[str] = []
            token = _UNREADABLE.set(unreadable)
            gate.requests_sent += 1
            try:
                result = await method(*args, **kwargs)
            except ccxt.BaseError as exc:
                exc = corrected(exc)
                error = self._classify(exc, call)
                if isinstance(error, VenueClockSkew) and self.resync is not None and not resynced:
                    gate.clock_resyncs += 1
                    await self.resync()  # raises if the clocks are apart beyond the limit
                    return await self._request(name, method, args, kwargs, resynced=True)
                gate.record(error)
                if isinstance(error, VenueRejected):
                    gate.succeeded(call)  # a refusal on the merits (not found, bad symbol): the venue answers
                if attempt + 1 < attempts and _retry_read(error, gate):
                    gate.read_retries += 1
                    if not isinstance(error, VenueRateLimited):  # (a rate limit's wait is the gate's, slept above)
                        await self._sleep(backoff_s(error, attempt, gate.rng, base_s=policy.backoff_base_s,
                                                    cap_s=policy.backoff_cap_s))
                    continue
                raise exc from None
            finally:
                _UNREADABLE.reset(token)
            if not unreadable:
                gate.succeeded(call)
                return result
            gate.bad_payloads += 1
            message = (f"{gate.venue}: {gate.host} answered {what} with a body that is not JSON "
                       f"({unreadable[0]}): nothing is read or booked from it")
            if call is Call.WRITE:
                raise ccxt.BadResponse(message)  # the write may have been done: an unknown outcome, looked up
            if attempt + 1 < attempts:
                gate.read_retries += 1
                await self._sleep(backoff_s(VenueBadPayload(message), attempt, gate.rng,
                                            base_s=policy.backoff_base_s, cap_s=policy.backoff_cap_s))
                continue
            raise VenueBadPayload(message)
        raise AssertionError("unreachable")  # the loop returns or raises


def _retry_read(error: VenueError, gate: RequestGate) -> bool:
    """A read worth trying again now: the venue was unavailable, slow or unreadable, or asked for a short wait."""
    if isinstance(error, VenueRateLimited):
        return gate.wait_s() <= gate.policy.max_read_wait_s
    return isinstance(error, RetryableVenueError) and not isinstance(error, VenueClockSkew)


def _watching(on_rest_response: Callable[..., Any]) -> Callable[..., Any]:
    """ccxt's response hook, noting a 2xx answer that is not JSON for the request in flight."""

    def hook(code: Any, reason: Any, url: str, method: str, headers: Any, body: Any, *rest: Any) -> Any:
        body = on_rest_response(code, reason, url, method, headers, body, *rest)
        seen = _UNREADABLE.get()
        if seen is not None and isinstance(code, int) and 200 <= code < 300 and not _is_json(body):
            seen.append(f"{method} {url.split('?', 1)[0]}")
        return body
    return hook


def _is_json(body: Any) -> bool:
    if not isinstance(body, str):
        return False
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
