"""Timestamps on the wire: any ISO-8601 in, ``2023-01-01T12:00:00.000Z`` out."""

from __future__ import annotations

from datetime import UTC, datetime

MIN_YEAR = 1000
"""Earliest UTC year accepted: the wire format has four-digit years."""
MAX_YEAR = 9998
"""Latest UTC year accepted: one year short of the datetime range, so that a timestamp can
still be shown in any time zone (9999-12-31T23:00Z is past the range at UTC+01:00)."""


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


def parse_ts(value: str) -> datetime:
    """Parse any ISO-8601 date-time; a time without offset is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def in_range(value: datetime) -> datetime:
    """``value`` in UTC (a naive time is taken as UTC) when its UTC year is within
    :data:`MIN_YEAR`..:data:`MAX_YEAR`; ValueError naming the range otherwise."""
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        utc = None  # the offset moves it past year 1 or 9999
    if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(
            f"must be between {MIN_YEAR}-01-01T00:00:00Z and {MAX_YEAR}-12-31T23:59:59.999Z"
        )
    return utc
