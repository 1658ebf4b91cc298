"""What a route handler sees of a request, and an account's credentials (the secret never in a repr)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Credentials:
    api_key: str
    secret: str = field(repr=False)
    passphrase: str = field(default="", repr=False)  # OKX


@dataclass(frozen=True)
class Call:
    host: str
    method: str
    path: str
    params: dict[str, str]  # query and form body merged (Binance accepts either)
    raw_query: str  # exactly as sent: what the signature covers
    raw_body: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class LoggedRequest:
    host: str
    method: str
    path: str
    params: dict[str, str]  # without the signature
    status: int
    # guest (bench): time.perf_counter_ns() when the handler saw the request (headers parsed) and when its answer
    # was ready to send, so an in-process benchmark can split a round trip into way there, handling, way back.
    ts_ns: int = 0
    done_ns: int = 0
