"""Structured logging: JSON lines in production, readable console output on a terminal.

Under systemd, stderr is a stream to journald, which gives every line PRIORITY=6 unless the line starts with
an sd-daemon level prefix (sd-daemon(3)): when `JOURNAL_STREAM` names the stream we write to (the same
device and inode, so a child that inherited the variable but writes elsewhere adds none), each line carries
`<2>` critical, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug, and `journalctl -p warning` works. Console
output has no colours when `NO_COLOR` is set to anything non-empty (no-color.org), or off a terminal.

Every event is bound to the actor that logged it (`actor=`; `daemon` for the process itself). Secret values
never reach a line: every setting declared `SecretStr` is registered here at start-up, and a processor
replaces any occurrence of those values, anywhere in an event, with `**********`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal

import structlog

REDACTED = "**********"
_secrets: set[str] = set()

LogFormat = Literal["auto", "json", "console"]


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never be printed (every secret is at least 8 characters, settings.MIN_SECRET_CHARS:
    a shorter one would blank out common text)."""
    _secrets.update(v for v in values if v)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if _secrets and not isinstance(value, int | float | bool) and value is not None:
        text = str(value)
        scrubbed = _scrub(text)
        return scrubbed if scrubbed != text else value
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event_dict
    return {key: _scrub(value) for key, value in event_dict.items()}


def _default_actor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict.setdefault("actor", "daemon")
    return event_dict


# sd-daemon(3) priorities by structlog level (`exception` is logged at error).
SD_PRIORITY = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def writes_to_journal(stream: Any, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `stream` is the journal stream systemd gave us: `JOURNAL_STREAM` is its `device:inode`."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):  # no descriptor (a StringIO), a closed one, or a malformed value
        return False


def colours_wanted(stream: Any, environ: Mapping[str, str] = os.environ) -> bool:
    return not environ.get("NO_COLOR") and bool(stream.isatty())


class JournalPrefix:
    """Wraps the renderer: every line of a rendered event starts with its sd-daemon priority, `<4>` …"""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        prefix = f"<{SD_PRIORITY.get(str(event_dict.get('level', method_name)), 6)}>"
        rendered = str(self._renderer(logger, method_name, event_dict))
        return "\n".join(prefix + line for line in rendered.split("\n"))  # a traceback's lines too


def configure(fmt: LogFormat = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog once for the process; `auto` picks console output when stderr is a TTY."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=colours_wanted(stream))
    )
    if writes_to_journal(stream):
        renderer = JournalPrefix(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _default_actor,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
