"""structlog, configured once for the whole process.

Level policy:

- DEBUG: per event or per request (off unless asked for: it is the hot path);
- INFO: lifecycle (started, listening, checkpoint written, stopped);
- WARNING: a misbehaving device or input (malformed readings, operator failures on data);
- ERROR: something failed that an operator must look at (a crash, a sink that cannot write).

Event names are constant ``noun_verbed`` strings and data goes in fields:
``log.info("checkpoint_written", offset=o, nbytes=n)``. Output is a console renderer on a
TTY and JSON lines otherwise (``--log-format`` overrides). Logs go to stderr so that stdout
stays free for data (``sinks.stdout``, ``fogrt graph``).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "console", "json"]


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (tests and daemons replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_current: tuple[str, LogFormat] = ("info", "auto")


def current() -> tuple[str, LogFormat]:
    """``(level, format)`` of the last :func:`configure` (for processes this one starts)."""
    return _current


def configure(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (idempotent; the last call wins)."""
    global _current
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; expected debug, info, warning or error")
    _current = (level, fmt)
    pretty = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if pretty
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
