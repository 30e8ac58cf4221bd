"""Timestamps on the wire: any ISO-8601 in, ``2023-01-01T12:00:00.000Z`` out."""

from __future__ import annotations

from datetime import UTC, datetime

MIN_YEAR = 1000
"""Earliest year a timestamp may be written with: the wire format has four-digit years."""
MAX_YEAR = 9998
"""Latest year a timestamp may be written with: a year short of the datetime range, so that
moved to UTC, or shown in any time zone, it is still within the range."""
YEAR_PATTERN = "^(?:1[0-9]{3}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
"""A JSON Schema pattern for text starting with a year from MIN_YEAR to MAX_YEAR."""


def utcnow() -> datetime:
    """The current time, in UTC, truncated to milliseconds (the wire's precision)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_ts(value: datetime) -> str:
    """Format as ISO-8601 UTC with milliseconds and ``Z``; a naive time is taken as UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # isoformat() always writes four-digit years ("%Y" writes year 999 as "999", which
    # no ISO-8601 parser reads back); its first 23 characters stop before the offset.
    return f"{value.isoformat(timespec='milliseconds')[:23]}Z"


def format_ms(ms: int) -> str:
    """An epoch-milliseconds time (as the stores keep them) in the wire form."""
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def in_range(value: datetime) -> datetime:
    """``value`` moved to UTC (a naive time is taken as UTC) when the year it is written with
    is within :data:`MIN_YEAR`..:data:`MAX_YEAR`; ValueError naming the range otherwise.

    Moved to UTC it stays within years 999..9999: :func:`format_ts` writes it with four
    digits, and it parses back to the same instant.
    """
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be in the years {MIN_YEAR} to {MAX_YEAR}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
