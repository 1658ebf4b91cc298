"""Every timestamp format found in the history files, normalized to integer nanoseconds UTC.

Seen in the data: `2024-01-01T00:00:00Z`, `2024-05-12 01:00:00+00:00`, `2024-01-01T00:00:00+00:00Z`
(Uniswap's `date_utc`), unix seconds (`1704067200`), plain dates (`2024-01-01`), and naive date-times (read
as UTC). Anything else, or an instant outside 1970–2100 (a unix time in the wrong unit, a typo in the year),
is an error that names the value, never a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime

NS = 1_000_000_000
EARLIEST_NS = 0  # 1970-01-01
LATEST_NS = 4_102_444_800 * NS  # 2100-01-01: past it, a number is a unit mistake, not market history


class BadTimestamp(ValueError):
    """Raised for a timestamp in no known format."""


def quoted(text: str, limit: int = 60) -> str:
    """`text` for an error message: quoted, and cut short (a malformed file may hold a field of any size)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def parse_ts(text: str) -> int:
    ns = _parse(text)
    if not EARLIEST_NS <= ns < LATEST_NS:
        raise BadTimestamp(f"timestamp {quoted(text)} is outside 1970-01-01 … 2100-01-01")
    return ns


def _parse(text: str) -> int:
    value = text.strip()
    if not value:
        raise BadTimestamp("empty timestamp")
    if len(value) > 64:
        raise BadTimestamp(f"unrecognized timestamp {quoted(text)}")
    if value.isascii() and value.isdigit():  # not "²": str.isdigit accepts digits int() refuses
        seconds = int(value)
        if seconds > 10**11:  # milliseconds
            return seconds * 1_000_000
        return seconds * NS
    if value.endswith("+00:00Z"):
        value = value[:-1]
    elif value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadTimestamp(f"unrecognized timestamp {quoted(text)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * NS + parsed.microsecond * 1000
