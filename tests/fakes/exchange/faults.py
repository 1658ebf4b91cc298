"""Per-test fault rules: consulted by the server before (and after) each request is handled."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Kind(Enum):
    LATENCY = "latency"  # sleep, then answer normally
    RESPOND = "respond"  # answer with this status/body instead of handling
    BAN = "ban"  # answer 418 -1003 and keep refusing that host until the ban ends
    HOLD = "hold"  # handle (state changes!), then hold the answer: the client times out
    MALFORMED = "malformed"  # handle, then send a truncated body


@dataclass
class Rule:
    kind: Kind
    host: str | None = None  # exact host name or a suffix such as "binance.com"
    method: str | None = None
    path: str | None = None  # exact path or a prefix ending in "*"
    times: int | None = 1  # None: forever
    seconds: float = 0.0
    status: int = 0
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, host: str, method: str, path: str) -> bool:
        if self.host is not None and not (host == self.host or host.endswith("." + self.host)):
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self.path is not None:
            if self.path.endswith("*"):
                return path.startswith(self.path[:-1])
            return path == self.path
        return True


class Faults:
    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.banned_until_ms: dict[str, int] = {}  # host → wall-clock ms

    def clear(self) -> None:
        self.rules.clear()
        self.banned_until_ms.clear()

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def take(self, host: str, method: str, path: str) -> list[Rule]:
        """The rules that fire for this request; each one's count goes down."""
        fired = []
        for rule in list(self.rules):
            if rule.matches(host, method, path):
                fired.append(rule)
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
        return fired

    # ---- helpers named for what a test wants to happen

    def latency(self, seconds: float, *, path: str | None = None, host: str | None = None,
                method: str | None = None, times: int | None = None) -> Rule:
        return self.add(Rule(Kind.LATENCY, host, method, path, times, seconds=seconds))

    def http_error(self, status: int, body: str = "", *, path: str | None = None, host: str | None = None,
                   method: str | None = None, times: int | None = 1, headers: dict[str, str] | None = None,
                   content_type: str = "text/html") -> Rule:
        hdrs = {"Content-Type": content_type, **(headers or {})}
        return self.add(Rule(Kind.RESPOND, host, method, path, times, status=status, body=body, headers=hdrs))

    def binance_error(self, code: int, msg: str, *, status: int = 400, path: str | None = None,
                      host: str | None = None, method: str | None = None, times: int | None = 1) -> Rule:
        body = json.dumps({"code": code, "msg": msg})
        return self.http_error(status, body, path=path, host=host, method=method, times=times,
                               content_type="application/json")

    def rate_limit(self, retry_after: int = 3, *, path: str | None = None, host: str | None = None,
                   times: int | None = 1) -> Rule:
        """429 with Retry-After, in the venue's own body (host None or a Binance host: Binance's -1003)."""
        if host is not None and host.endswith("bybit.com"):
            body = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}}
        elif host is not None and host.endswith("okx.com"):
            body = {"code": "50011", "msg": "Too Many Requests", "data": []}
        else:
            body = {"code": -1003, "msg": "Too many requests; current limit of IP is 2400 requests per minute. "
                                          "Please use the websocket for live updates to avoid polling the API."}
        return self.add(Rule(Kind.RESPOND, host, None, path, times, status=429, body=json.dumps(body),
                             headers={"Content-Type": "application/json", "Retry-After": str(retry_after)}))

    def ban(self, seconds: int = 60, *, host: str = "fapi.binance.com", path: str | None = None) -> Rule:
        """The next matching request gets 418 and the host stays banned for `seconds` (Binance's IP ban)."""
        return self.add(Rule(Kind.BAN, host, None, path, 1, seconds=seconds))

    def ban_response(self, host: str, now_ms: int | None = None) -> tuple[int, str, dict[str, str]]:
        until = self.banned_until_ms[host]
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        msg = (f"Way too many requests; IP(127.0.0.1) banned until {until}. "
               "Please use the websocket for live updates to avoid bans.")
        retry = max(1, (until - now_ms + 999) // 1000)
        return 418, json.dumps({"code": -1003, "msg": msg}), {"Content-Type": "application/json",
                                                              "Retry-After": str(retry)}

    def timeout_after_place(self, *, path: str = "/fapi/v1/order", method: str = "POST", delay: float = 5.0,
                            host: str | None = None, times: int | None = 1) -> Rule:
        """The request is handled (the order exists), the answer is held `delay` s: the client times out."""
        return self.add(Rule(Kind.HOLD, host, method, path, times, seconds=delay))

    def malformed(self, *, path: str | None = None, host: str | None = None, method: str | None = None,
                  times: int | None = 1) -> Rule:
        return self.add(Rule(Kind.MALFORMED, host, method, path, times))

    def maintenance(self, *, host: str | None = None, times: int | None = None) -> Rule:
        """The venue under maintenance: 503 (OKX: its 50001 body; others: an HTML page) → ExchangeNotAvailable."""
        if host is not None and host.endswith("okx.com"):
            body = json.dumps({"code": "50001", "msg": "Service temporarily unavailable. Try again later", "data": []})
            return self.http_error(503, body, host=host, times=times, content_type="application/json")
        return self.http_error(503, "<html><body>System maintenance in progress</body></html>", host=host,
                               times=times)


# ---- stream faults (the private websockets' fill messages)


@dataclass
class StreamFaults:
    """Faults on a venue's private stream, applied to the next n **fill** messages (Binance ORDER_TRADE_UPDATE
    x=TRADE, Bybit `execution`, OKX `orders` pushes that carry a tradeId); other messages pass untouched.

    lose: never sent. duplicate: sent twice. reorder: held until n have gathered, then sent newest first.
    malformed: sent cut in half (not JSON any more).
    """

    lose: int = 0
    duplicate: int = 0
    reorder: int = 0
    malformed: int = 0
    lost: list[Any] = field(default_factory=list)  # what `lose` swallowed, for a test to inspect
    _held: list[Any] = field(default_factory=list)

    def clear(self) -> None:
        self.lose = self.duplicate = self.reorder = self.malformed = 0
        self._held.clear()

    def apply(self, text: Any, *, fill: bool) -> list[Any]:
        """The messages to send now in place of `text` (maybe none, maybe several); a message is whatever the
        stream sends (a text, or a (connection, text) pair)."""
        if not fill:
            return [text]
        if self.lose > 0:
            self.lose -= 1
            self.lost.append(text)
            return []
        if self.malformed > 0:
            self.malformed -= 1
            text = _truncated(text)
        out = [text]
        if self.reorder > 0:
            self._held.append(text)
            self.reorder -= 1
            if self.reorder > 0:
                return []
            out, self._held = list(reversed(self._held)), []
        if self.duplicate > 0:
            self.duplicate -= 1
            out = [t for t in out for _ in (0, 1)]
        return out


def _truncated(message: Any) -> Any:
    if isinstance(message, tuple):  # (connection, text)
        return (*message[:-1], _truncated(message[-1]))
    return message[: max(1, len(message) // 2)]


def as_sent(text: str) -> Any:
    """A sent message for a stream's `sent` log: its JSON, or `{"malformed": text}` for one cut by the fault."""
    try:
        return json.loads(text)
    except ValueError:
        return {"malformed": text}
