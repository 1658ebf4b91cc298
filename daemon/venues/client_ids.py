"""The project's client order ids in each venue's form, and back, in one place.

Our ids (`daemon.domain.ids.client_order_id`: the instruction id, `-`, the step) come in four shapes:

    r<run>i<hour>-<seq>-<step>          the strategy, with the journal's run (actors.strategy, daemon.app)
    i<hour>-<seq>-<step>                the strategy without a journal
    flatten-<ns>-<n>-<step>             `basisd halt --flatten` (daemon.app)
    breaker<level>-<ns>-<n>-<step>      a drawdown breaker's unwind (daemon.risk_wiring)

The venues' rules: OKX `clOrdId` is 1–32 case-sensitive alphanumerics (no `-`, no `_`); Binance
`newClientOrderId` matches `^[\\.A-Z\\:/a-z0-9_-]{1,36}$`; Bybit `orderLinkId` is 1–36 of letters, digits, `-`, `_`.
Our ids break OKX's rule (the `-`) and can break every venue's length (a flatten is 19 digits of nanoseconds).

So every id is encoded once, for the strictest rule (OKX), and the same string is sent to every venue: an
operator searches one string on any venue's order history, and a fill from any venue decodes the same way. The
venue form is `bd1` (basisd, encoding version 1) followed by one of:

- the *readable* form, the numbers in decimal with letters where our ids have `-` (lower-case kind letter):
  `r12i494000-3-1` → `bd1r12i494000n3s1`, `flatten-1780000000000000000-2-1` → `bd1f1780000000000000000n2s1`;
- the *compact* form, when the readable one does not fit in 32: upper-case kind letter, then each number as one
  base-62 digit giving its length and its base-62 digits (`r4398046511104i…` → `bd1R7…`);
- the *generic* form `G`, for an id of none of those shapes (the simulated venues' drills): base-62 of its bytes.

Decoding needs no table (a restarted daemon recognises its own orders): a venue id is ours exactly when it parses
and re-encodes to itself, which rejects other software's ids (ccxt's broker ids, manual orders) and any
non-canonical spelling, and makes the mapping injective: two of our ids never share a venue id. The version in the
prefix lets a later encoding be added while ids already on the venues still decode.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from daemon.domain.ids import ClientOrderId
from daemon.errors import NonRetryableVenueError

PREFIX = "bd1"
MAX_LENGTH = 32  # OKX's, the strictest: the one form is valid on every venue
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT = {c: n for n, c in enumerate(ALPHABET)}
_INT = r"(0|[1-9][0-9]*)"  # canonical decimal: what an f-string of an int produces, so parsing is exact


class ClientIdError(NonRetryableVenueError):
    """Our client order id cannot be put in the venue's form (too long even compacted): the order is refused
    before it is sent rather than sent under an id that is not its own."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """One shape of our ids: how to read its numbers from our id, write our id, and name the numbers in the
    readable venue form (one letter before each number after the first)."""

    kind: str  # one lower-case letter; its upper-case is the compact form
    ours: re.Pattern[str]
    render: Callable[[tuple[int, ...]], str]
    letters: str  # the readable form's separators, one per number after the first

    def readable(self, numbers: tuple[int, ...]) -> str:
        return self.kind + str(numbers[0]) + "".join(f"{c}{n}" for c, n in zip(self.letters, numbers[1:], strict=True))


SHAPES = (
    _Shape("r", re.compile(rf"r{_INT}i{_INT}-{_INT}-{_INT}"), lambda n: f"r{n[0]}i{n[1]}-{n[2]}-{n[3]}", "ins"),
    _Shape("i", re.compile(rf"i{_INT}-{_INT}-{_INT}"), lambda n: f"i{n[0]}-{n[1]}-{n[2]}", "ns"),
    _Shape("f", re.compile(rf"flatten-{_INT}-{_INT}-{_INT}"), lambda n: f"flatten-{n[0]}-{n[1]}-{n[2]}", "ns"),
    _Shape("b", re.compile(rf"breaker{_INT}-{_INT}-{_INT}-{_INT}"),
           lambda n: f"breaker{n[0]}-{n[1]}-{n[2]}-{n[3]}", "tns"),
)
_BY_KIND = {s.kind: s for s in SHAPES}
_READABLE = {s.kind: re.compile(s.kind + _INT + "".join(c + _INT for c in s.letters)) for s in SHAPES}


@dataclass(frozen=True, slots=True)
class VenueRule:
    """A venue's own rule for client order ids, checked on every id we send (belt and braces)."""

    field: str  # the venue's parameter name, for messages
    pattern: re.Pattern[str]

    def valid(self, venue_id: str) -> bool:
        return self.pattern.fullmatch(venue_id) is not None


OKX = VenueRule("clOrdId", re.compile(r"[A-Za-z0-9]{1,32}"))
BINANCE = VenueRule("newClientOrderId", re.compile(r"[\.A-Z\:/a-z0-9_-]{1,36}"))
BYBIT = VenueRule("orderLinkId", re.compile(r"[A-Za-z0-9_-]{1,36}"))
# By ccxt exchange id and by the project's venue names.
RULES = {"okx": OKX, "binance": BINANCE, "binanceusdm": BINANCE, "bybit": BYBIT}


def rule_for(venue: str) -> VenueRule:
    """The rule of `venue`: a ccxt exchange id (`binanceusdm`) or the project's venue name (`binance`)."""
    try:
        return RULES[venue]
    except KeyError:
        raise ClientIdError(f"no client order id rule for venue {venue!r} (known: {', '.join(RULES)})") from None


def to_venue(client_order_id: ClientOrderId, venue: str) -> str:
    """Our client order id in `venue`'s form (the same string for every venue; checked against the venue's rule).

    Raises `ClientIdError` when the id cannot be encoded within 32 characters.
    """
    encoded = encode(client_order_id)
    rule = rule_for(venue)
    if not rule.valid(encoded):  # cannot happen for the rules above; a new venue's stricter rule would
        raise ClientIdError(f"{venue} {rule.field} {encoded!r} (for {client_order_id}) breaks the venue's rule")
    return encoded


def from_venue(venue_id: str | None) -> ClientOrderId | None:
    """Our client order id behind a venue's client id, or None when the order is not one of ours."""
    if not venue_id or not venue_id.startswith(PREFIX):
        return None
    body = venue_id[len(PREFIX):]
    try:
        ours = _decode(body)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError):
        return None
    # Ours exactly when it re-encodes to itself: rejects non-canonical spellings and foreign ids alike.
    return ours if ours is not None and encode(ours) == venue_id else None


def encode(client_order_id: str) -> str:
    """The venue form of our id (venue-independent). Readable if it fits, else compact, else refused."""
    for shape in SHAPES:
        match = shape.ours.fullmatch(client_order_id)
        if match is None:
            continue
        numbers = tuple(int(g) for g in match.groups())
        readable = PREFIX + shape.readable(numbers)
        if len(readable) <= MAX_LENGTH:
            return readable
        compact = PREFIX + shape.kind.upper() + "".join(_field(n) for n in numbers)
        if len(compact) <= MAX_LENGTH:
            return compact
        raise ClientIdError(f"client order id {client_order_id!r} does not fit in {MAX_LENGTH} characters "
                            f"even compacted ({len(compact)})")
    generic = PREFIX + "G" + _b62(int.from_bytes(b"\x01" + client_order_id.encode())) if client_order_id else ""
    if not generic or len(generic) > MAX_LENGTH:
        raise ClientIdError(f"client order id {client_order_id!r} has no venue form: not one of the daemon's "
                            f"id shapes, and {'empty' if not generic else f'{len(generic)} characters encoded'}")
    return generic


def _decode(body: str) -> ClientOrderId | None:
    kind, rest = body[0], body[1:]
    if kind == "G":
        raw = _b62_value(rest).to_bytes((_b62_value(rest).bit_length() + 7) // 8)
        return ClientOrderId(raw[1:].decode()) if raw[:1] == b"\x01" else None
    if kind in _BY_KIND:
        match = _READABLE[kind].fullmatch(body)
        return None if match is None else ClientOrderId(_BY_KIND[kind].render(tuple(int(g) for g in match.groups())))
    shape = _BY_KIND.get(kind.lower()) if kind.isupper() else None
    if shape is None:
        return None
    numbers = []
    while rest:
        length = _DIGIT[rest[0]]
        digits, rest = rest[1:1 + length], rest[1 + length:]
        if length == 0 or len(digits) != length:
            return None
        numbers.append(_b62_value(digits))
    if len(numbers) != len(shape.letters) + 1:
        return None
    return ClientOrderId(shape.render(tuple(numbers)))


def _field(number: int) -> str:
    digits = _b62(number)
    if len(digits) >= len(ALPHABET):
        raise ClientIdError(f"number {number} too large for a client order id")
    return ALPHABET[len(digits)] + digits


def _b62(number: int) -> str:
    if number < 0:
        raise ClientIdError(f"negative number {number} in a client order id")
    digits = ""
    while True:
        number, digit = divmod(number, 62)
        digits = ALPHABET[digit] + digits
        if number == 0:
            return digits


def _b62_value(digits: str) -> int:
    if not digits:
        raise ValueError("no digits")
    value = 0
    for c in digits:
        value = value * 62 + _DIGIT[c]
    return value
