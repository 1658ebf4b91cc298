"""Routing, authentication and client-message parsing for the positions API. Pure: a request in, a verdict out.

Every refusal is a 4xx with a JSON body that says why (`{"status": 404, "error": "..."}`); none changes
anything (the API is read-only). Order: unknown path 404, wrong method 405, then the caller's checks of host
and token (401 with `WWW-Authenticate: Bearer`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass

from daemon.api.views import encode

PREFIX = "/api/v1/positions"
SUMMARY, HEALTH, STREAM = "summary", "health", "stream"
ROUTES = {f"{PREFIX}/{name}": name for name in (SUMMARY, HEALTH, STREAM)}
GET_SUMMARY, PING = "get_summary", "ping"
ACTIONS = (GET_SUMMARY, PING)
REALM = 'Bearer realm="basisd"'


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        return encode({"status": self.status, "error": self.error})

    def frame(self) -> bytes:
        """The same refusal as a WebSocket message (the connection stays open)."""
        return encode({"type": "error", "status": self.status, "error": self.error})


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def route(method: str, target: str) -> str | Refusal:
    """The endpoint a request line names (query strings are ignored), or why there is none."""
    path = target.split("?", 1)[0]
    endpoint = ROUTES.get(path)
    if endpoint is None:
        return Refusal(404, f"no endpoint {_shown(path)}: the API serves GET {PREFIX}/summary, {PREFIX}/health "
                            f"and the WebSocket {PREFIX}/stream")
    if method != "GET":
        return Refusal(405, f"{_shown(method, 16)} is not allowed on {path}: use GET", (("Allow", "GET"),))
    return endpoint


class BearerAuth:
    """`Authorization: Bearer <token>`, compared in constant time (digests of equal length, `hmac`)."""

    def __init__(self, token: str | None) -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    @property
    def required(self) -> bool:
        return self._digest is not None

    def check(self, authorization: str | None) -> Refusal | None:
        if self._digest is None:
            return None
        if not authorization:
            return Refusal(401, "a bearer token is required (Authorization: Bearer <token>)", (("WWW-Authenticate",
                                                                                                 REALM),))
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Refusal(401, "expected Authorization: Bearer <token>",
                           (("WWW-Authenticate", f'{REALM}, error="invalid_request"'),))
        given = hashlib.sha256(credentials.strip().encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(given, self._digest):
            return Refusal(401, "invalid token", (("WWW-Authenticate", f'{REALM}, error="invalid_token"'),))
        return None


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine (`localhost`, `127.0.0.1:8765`, `[::1]:8765`, or none at all).

    Without a token the API answers only requests addressed to loopback: a web page that rebinds its own DNS
    name to 127.0.0.1 still sends that name as its Host, and is refused.
    """
    if not host_header:
        return True
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_action(message: str | bytes) -> str | Refusal:
    """A client's `{"action": "get_summary"}` or `{"action": "ping"}`; anything else is a 400 error frame."""
    expected = 'expected {"action": "get_summary"} or {"action": "ping"}'
    if not isinstance(message, str):
        return Refusal(400, f"binary frames are not accepted: {expected}")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser allows
        return Refusal(400, f"malformed JSON: {expected}")
    action = data.get("action") if isinstance(data, dict) else None
    if not isinstance(action, str):
        return Refusal(400, expected)
    if action not in ACTIONS:
        return Refusal(400, f"unknown action {_shown(action, 40)}: {expected}")
    return action
