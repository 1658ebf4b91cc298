"""Every timestamp format found in the history files, normalized to integer nanoseconds UTC.

Seen in the data: `2024-01-01T00:00:00Z`, `2024-05-12 01:00:00+00:00`, `2024-01-01T00:00:00+00:00Z`
(Uniswap's `date_utc`), unix seconds (`1704067200`), plain dates (`2024-01-01`), and naive date-times (read
as UTC). Anything else is an error that names the value, never a guess.
"""

from __future__ import annotations

from datetime import UTC, datetime

NS = 1_000_000_000


class BadTimestamp(ValueError):
    """Raised for a timestamp in no known format."""


def parse_ts(text: str) -> int:
    value = text.strip()
    if not value:
        raise BadTimestamp("empty timestamp")
    if value.isdigit():
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
        raise BadTimestamp(f"unrecognized timestamp {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * NS + parsed.microsecond * 1000
