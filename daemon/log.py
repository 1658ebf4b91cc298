"""Structured logging: JSON lines in production, readable console output on a terminal.

Every event is bound to the actor that logged it (`actor=`; `daemon` for the process itself). Secret values
never reach a line: every setting declared `SecretStr` is registered here at start-up, and a processor
replaces any occurrence of those values, anywhere in an event, with `**********`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

REDACTED = "**********"
_secrets: set[str] = set()

LogFormat = Literal["auto", "json", "console"]


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never be printed (short ones too: a 4-character PIN is still a secret)."""
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


def configure(fmt: LogFormat = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog once for the process; `auto` picks console output when stderr is a TTY."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
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
