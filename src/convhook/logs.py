"""Logging for every command: one structured record, written as text or as JSON lines.

Records carry an ``action`` (``event_recorded``, ``claim_failed`` ...) and context fields
passed with ``extra=``; both formats keep them. ``json`` writes one object per line for log
collectors; ``text`` writes ``time level logger action message key=value ...``, through rich
only when stderr is a terminal (colours, no wrapping surprises in files). Formatting and
writing happen on a thread of their own: a server's event loop only queues the record.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Loggers of the servers convhook runs, routed the same way.
_OTHERS = ("uvicorn", "uvicorn.error", "aiohttp")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "action"}


def _when(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, action, message, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _when(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "action": getattr(record, "action", None),
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger action message key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _when(record),
            record.levelname.lower(),
            record.name,
            str(getattr(record, "action", "-")),
            record.getMessage(),
        ]
        parts += (f"{k}={v}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def check(log_format: str, level: str) -> tuple[LogFormat, str]:
    """The format and level as given on the command line, or :class:`ValueError` saying
    which values are allowed."""
    fmt = log_format.lower()
    if fmt not in FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    lvl = level.lower()
    if lvl not in LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LEVELS)}, got {level!r}")
    return fmt, lvl


def configure(
    log_format: LogFormat, level: str = "info", *, stream: Any = None
) -> Callable[[], None]:
    """Send convhook's (and its servers') records to ``stream`` (stderr) in ``log_format``;
    returns the function that flushes what is queued and stops (call it on exit)."""
    stream = stream if stream is not None else sys.stderr
    handler: logging.Handler
    if log_format == "text" and getattr(stream, "isatty", lambda: False)():
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=stream, highlight=False)
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(_RichText())
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    numeric = getattr(logging, level.upper())
    saved = []
    for name in ("convhook", *_OTHERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.level, logger.propagate))
        logger.handlers[:] = [QueueHandler(records)]
        logger.setLevel(numeric if name == "convhook" else max(numeric, logging.INFO))
        logger.propagate = False
    listener.start()

    def stop() -> None:
        # Flush what is queued, then leave the loggers as they were (a command run inside
        # another program, or a test, must not keep them routed here).
        listener.stop()
        for logger, handlers, old_level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(old_level)
            logger.propagate = propagate

    return stop


class _RichText(logging.Formatter):
    """What rich shows after its own time and level columns: logger, action, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.name, str(getattr(record, "action", "-")), record.getMessage()]
        parts += (f"{k}={v}" for k, v in _fields(record).items())
        return " ".join(parts)
