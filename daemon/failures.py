"""Say what went wrong: the real exception inside a task group's wrapper, with where it was raised.

anyio (and asyncio's TaskGroup) wrap a child's failure in an `ExceptionGroup` whose own message is only
"unhandled errors in a TaskGroup (1 sub-exception)" — true, and useless to an operator reading the log at
3 a.m. Every log line and record that reports a failure goes through `describe`, which names each leaf
exception by type and message and the frame that raised it.
"""

from __future__ import annotations

import traceback
from pathlib import Path

MAX_LEAVES = 5  # a group of hundreds of failures is named by its first few and a count
MAX_MESSAGE_CHARS = 500  # an exception's message may quote a whole input; never echo it unbounded


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, depth first; `exc` itself if it is not a group."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(leaves(inner))
        return out
    return [exc]


def where(exc: BaseException) -> str:
    """`file:line in function` of the innermost frame of the exception's traceback ('' if it has none)."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    frame = traceback.extract_tb(tb)[-1]
    return f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"


def describe(exc: BaseException) -> str:
    """`Type: message (at file:line in function)` for each leaf exception, joined by '; '."""
    found = leaves(exc)
    parts = []
    for leaf in found[:MAX_LEAVES]:
        message = str(leaf)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"… ({len(message)} characters)"
        text = f"{type(leaf).__name__}: {message}" if message else type(leaf).__name__
        at = where(leaf)
        parts.append(f"{text} (at {at})" if at else text)
    if len(found) > MAX_LEAVES:
        parts.append(f"and {len(found) - MAX_LEAVES} more")
    return "; ".join(parts)


def _short(filename: str) -> str:
    """A path from the package root (daemon/…, actors/…) when the file is ours, else the file's name."""
    path = Path(filename)
    for anchor in ("daemon", "actors", "tests"):
        if anchor in path.parts:
            index = len(path.parts) - 1 - path.parts[::-1].index(anchor)
            return "/".join(path.parts[index:])
    return path.name
