"""ccxt's exceptions mapped once onto the project's error tree (`daemon.errors`), with what the daemon does next.

| ccxt                                                   | read (a fetch)        | write (order, cancel, transfer)   |
|--------------------------------------------------------|-----------------------|-----------------------------------|
| RateLimitExceeded, DDoSProtection, any 429/418         | VenueRateLimited: wait Retry-After / the ban, + jitter    |
| InvalidNonce (timestamp outside recvWindow)            | VenueClockSkew: clocks measured again (request_gate.resync)|
|                                                        |   apart beyond the limit: degraded; else sent once more   |
| OnMaintenance                                          | VenueDegraded: no new orders there (nothing was done)     |
| ExchangeNotAvailable (5xx, connection refused / reset) | VenueDegraded         | UnknownOrderOutcome, degraded     |
| RequestTimeout, other NetworkError, BadResponse,       | RetryableVenueError   | UnknownOrderOutcome: look it up   |
|   OperationFailed (Binance -1000/-1001/-1006: "status  |                       |   by client id before any resend  |
|   unknown"), OKX 50004 (→ RequestTimeout in ccxt)      |                       |                                   |
| DuplicateOrderId, or a venue's duplicate-client-id code| VenueRejected         | DuplicateClientOrderId: look up   |
| InsufficientFunds                                      | VenueInsufficientFunds, with the venue's reason           |
| OrderNotFound                                          | VenueOrderNotFound, with the venue's reason               |
| InvalidOrder, BadRequest, BadSymbol, OperationRejected,| VenueRejected, with the venue's reason                    |
|   NotSupported, InvalidAddress, ArgumentsRequired      |                                                           |
| AuthenticationError, PermissionDenied, AccountSuspended| start-up: VenueCredentialsRejected (exit 78)             |
|                                                        | later: VenueAccessLost (trading halts)                    |
| ExchangeError (code ccxt does not know)                | RetryableVenueError   | VenueRejected; a venue's "system  |
|                                                        |                       |   error" code: UnknownOrderOutcome|

A write whose answer may not reflect what the venue did is never "failed": the venue may have the order. Binance's
docs say as much of a 503 and of -1006/-1007 ("execution status unknown"), OKX of 50004, Bybit of 10016.

Messages are scrubbed before they enter our error: ccxt puts the request URL in its messages, and for a signed
Binance request that URL carries the key's signature and the query; the caller's own secrets are replaced too.
Raise the result `from None`, so a traceback does not print ccxt's original message beside ours.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from enum import Enum

import ccxt

from daemon.errors import (
    DuplicateClientOrderId,
    RetryableVenueError,
    UnknownOrderOutcome,
    VenueAccessLost,
    VenueClockSkew,
    VenueCredentialsRejected,
    VenueDegraded,
    VenueError,
    VenueInsufficientFunds,
    VenueOrderNotFound,
    VenueRateLimited,
    VenueRejected,
)
from daemon.redaction import redact_text


class Call(Enum):
    """Whether the failed request could have changed the venue's state."""

    READ = "read"
    WRITE = "write"  # an order, a cancel, a transfer or a withdrawal


# Codes by which a venue says "this client order id is taken" (ccxt maps them to plain InvalidOrder).
DUPLICATE_ID_CODES = {
    "binance": {"-4116", "-4015"},  # DUPLICATED_CLIENT_ORDER_ID (USDⓈ-M); client order id is not valid / duplicated
    "okx": {"51016"},  # Duplicated clOrdId
    "bybit": {"110072", "10014"},  # OrderLinkedID is duplicate; duplicate request
}
DUPLICATE_ID_MESSAGES = ("Duplicate order sent",)  # Binance spot, -2010 NEW_ORDER_REJECTED
# Codes by which a venue says "something went wrong on our side" without saying whether the write was done,
# where ccxt maps them to a plain ExchangeError.
SERVER_ERROR_CODES = {"bybit": {"10016"}}
_AUTH = (ccxt.AuthenticationError,)  # PermissionDenied, AccountSuspended and AccountNotEnabled are subclasses
_REJECTED = (ccxt.InvalidOrder, ccxt.BadRequest, ccxt.OperationRejected, ccxt.NotSupported, ccxt.InvalidAddress,
             ccxt.ArgumentsRequired)

REDACTED = "<redacted>"
_URL = re.compile(r"((?:https?|wss?)://[^\s\"'?]+)\?[^\s\"']*")
_SECRET_PARAMS = re.compile(r"(?i)\b(signature|sign|apikey|api_key|secret|passphrase|listenkey|x-mbx-apikey|"
                            r"ok-access-key|ok-access-sign|ok-access-passphrase|x-bapi-api-key|x-bapi-sign)"
                            r"(\"?\s*[=:]\s*\"?)[^&\s\"',}]+")
_BAN_UNTIL = re.compile(r"banned until (\d{10,13})")
_HTTP_STATUS = re.compile(r"\s(429|418)\s")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without query strings, signatures, keys or the given secrets (and every registered secret)."""
    text = _URL.sub(r"\1?" + REDACTED, text)
    text = _SECRET_PARAMS.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    for secret in secrets:
        if secret and len(secret) >= 4:  # a shorter one would mangle ordinary words
            text = text.replace(secret, REDACTED)
    return redact_text(text)


def venue_reason(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """The venue's own words: `<code> <message>` from the JSON body in ccxt's message, else the scrubbed message."""
    message = str(exc)
    start = message.find("{")
    if start >= 0:
        try:
            body = json.loads(message[start:message.rfind("}") + 1])
        except ValueError:
            body = None
        if isinstance(body, dict):
            code, msg = _code_and_message(body)
            if msg is not None or code is not None:
                return scrub(" ".join(str(p) for p in (code, msg) if p is not None), secrets)
    return scrub(message, secrets)


def _code_and_message(body: dict[str, object]) -> tuple[object, object]:
    """(code, message) of a Binance (`code`/`msg`), Bybit (`retCode`/`retMsg`) or OKX (`code`/`msg`, or the first
    failed item's `sCode`/`sMsg`) error body."""
    data = body.get("data")
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and item.get("sCode") not in (None, "", "0"):
                return item.get("sCode"), item.get("sMsg")
    code = body.get("retCode", body.get("code"))
    return code, body.get("retMsg", body.get("msg"))


def map_error(exc: BaseException, *, venue: str, call: Call, starting: bool = False,
              key_setting: str = "credentials", client_order_id: str | None = None,
              headers: Mapping[str, str] | None = None, now_ms: int | None = None,
              secrets: Iterable[str] = ()) -> VenueError:
    """The project's error for `exc`, raised by ccxt for `venue` (a ccxt id or our venue name) during `call`.

    `starting`: the daemon is still checking its venues (credentials refused → exit 78). `key_setting`: the
    setting that holds the key, named in the message (never its value). `headers`: the response's headers if the
    caller has them (`exchange.last_response_headers`), for Retry-After. `secrets`: values to scrub.
    """
    secrets = tuple(secrets)
    family = next((f for f in DUPLICATE_ID_CODES if venue.startswith(f)), venue)  # binanceusdm → binance
    what = f"{venue}: {type(exc).__name__}: {scrub(str(exc), secrets)}"
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection) or (
            isinstance(exc, ccxt.ExchangeNotAvailable) and _HTTP_STATUS.search(str(exc))):  # OKX maps 429 here
        return _rate_limited(exc, what, headers, now_ms)
    if isinstance(exc, ccxt.InvalidNonce):
        return VenueClockSkew(what)
    if isinstance(exc, ccxt.OnMaintenance):
        return VenueDegraded(what)
    if isinstance(exc, ccxt.OperationFailed | TimeoutError):  # network, timeouts, bad or no answer
        return _unanswered(exc, what, call, client_order_id)
    if isinstance(exc, _AUTH):
        return _refused_credentials(exc, venue, starting, key_setting, secrets)
    if isinstance(exc, ccxt.BaseError):
        return _refused(exc, what, family, call, client_order_id, secrets)
    return RetryableVenueError(what) if call is Call.READ else UnknownOrderOutcome(what, client_order_id)


def _unanswered(exc: BaseException, what: str, call: Call, client_order_id: str | None) -> VenueError:
    degraded = isinstance(exc, ccxt.ExchangeNotAvailable)
    if call is Call.WRITE:
        return UnknownOrderOutcome(what, client_order_id, venue_degraded=degraded)
    return VenueDegraded(what) if degraded else RetryableVenueError(what)


def _refused_credentials(exc: BaseException, venue: str, starting: bool, key_setting: str,
                         secrets: tuple[str, ...]) -> VenueError:
    reason = venue_reason(exc, secrets)
    if starting:
        return VenueCredentialsRejected(
            f"{venue} refused the API key in {key_setting} ({type(exc).__name__}: {reason}): check the key, its "
            f"permissions and its IP allow-list", venue, key_setting)
    return VenueAccessLost(f"{venue} no longer accepts the API key in {key_setting} ({type(exc).__name__}: "
                           f"{reason}): trading halts")


def _refused(exc: BaseException, what: str, family: str, call: Call, client_order_id: str | None,
             secrets: tuple[str, ...]) -> VenueError:
    """An answer from the venue saying no (or an error ccxt could not classify)."""
    reason = venue_reason(exc, secrets)
    code = reason.split(" ", 1)[0]
    duplicate = isinstance(exc, ccxt.DuplicateOrderId) or code in DUPLICATE_ID_CODES.get(family, ()) or any(
        m in reason for m in DUPLICATE_ID_MESSAGES)
    if duplicate and call is Call.WRITE:
        return DuplicateClientOrderId(f"{what} (the venue already has this client order id: look it up)",
                                      client_order_id)
    if isinstance(exc, ccxt.InsufficientFunds):
        return VenueInsufficientFunds(what, reason)
    if isinstance(exc, ccxt.OrderNotFound):
        return VenueOrderNotFound(what, reason)
    if isinstance(exc, _REJECTED):
        return VenueRejected(what, reason)
    if call is Call.WRITE:
        if code in SERVER_ERROR_CODES.get(family, ()):
            return UnknownOrderOutcome(what, client_order_id, venue_degraded=True)
        return VenueRejected(what, reason)
    return RetryableVenueError(what)


def _rate_limited(exc: BaseException, what: str, headers: Mapping[str, str] | None,
                  now_ms: int | None) -> VenueRateLimited:
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    ban = _BAN_UNTIL.search(str(exc))
    banned_until = None
    if ban is not None:
        banned_until = int(ban.group(1)) * (1000 if len(ban.group(1)) == 10 else 1)
    waits = [w for w in (retry_after_s(headers, now), None if banned_until is None else (banned_until - now) / 1000)
             if w is not None]
    return VenueRateLimited(what, max(0.0, *waits) if waits else None, banned_until)


def retry_after_s(headers: Mapping[str, str] | None, now_ms: int) -> float | None:
    """The wait a response asked for: `Retry-After` (seconds, or an HTTP date), or Bybit's
    `X-Bapi-Limit-Reset-Timestamp` (when the limit resets, in ms)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now_ms / 1000)
        except (TypeError, ValueError):
            pass
    reset = lower.get("x-bapi-limit-reset-timestamp")
    if reset is not None and reset.isdigit():
        return max(0.0, (int(reset) - now_ms) / 1000)
    return None


def backoff_s(error: VenueError, attempt: int, rng: random.Random, *, base_s: float = 0.5,
              cap_s: float = 60.0) -> float:
    """How long to wait before attempt `attempt + 1` (attempt ≥ 0): never less than the venue asked for (its
    Retry-After, the rest of a ban), plus full jitter on an exponential step, so that every client a venue
    throttled at once does not come back at once."""
    floor = getattr(error, "retry_after_s", None) or 0.0
    return float(floor) + rng.uniform(0.0, min(cap_s, base_s * 2 ** max(0, attempt)))
