"""Timestamps on the wire: any ISO-8601 in, ``2023-01-01T12:00:00.000Z`` out."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, in UTC, truncated to milliseconds (the wire's precision)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_ts(value: datetime) -> str:
    """Format as ISO-8601 UTC with milliseconds and ``Z``; a naive time is taken as UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def parse_ts(value: str) -> datetime:
    """Parse any ISO-8601 date-time; a time without offset is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
