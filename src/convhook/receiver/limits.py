"""Bounds on what a sender's values may cost the receiver: ids, log lines and error texts.

Every value that reaches a log line or the inbox's ``last_error`` comes from a sender or a
handler, so each is cut to a fixed size first: rendering a log line (wrapping, markup) can
cost far more than linear time in its length, and one slow line stalls every request.
"""

from __future__ import annotations

MAX_ID = 256
"""The longest ``webhook-id`` header accepted (``eventId`` has the same bound in the models)."""
LOG_CHARS = 200
"""The longest value written into a log line."""
ERROR_CHARS = 2000
"""The longest ``last_error`` stored for an event."""


def clip(value: object, limit: int = LOG_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters, saying how much was cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def describe(exc: BaseException) -> str:
    """``Type: message`` for an exception, safe whatever its ``__str__`` does."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        text = "(message could not be rendered)"
    return f"{name}: {text}" if text else name


def storable(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` bounded and with what no database text column takes replaced: NUL bytes
    (PostgreSQL refuses them) and lone surrogates (they cannot be encoded as UTF-8)."""
    text = clip(text, limit)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
