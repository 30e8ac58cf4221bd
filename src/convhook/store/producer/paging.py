"""Shared pieces of the producer store: cursors, pages, per-item results and its errors."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convhook.errors import ConflictError as ConflictError  # re-exported: its old home
from convhook.errors import FieldProblem, PayloadError
from convhook.errors import NotFoundError as NotFoundError  # re-exported: its old home
from convhook.store.engine.connection import Connection

MAX_LIMIT = 500
MAX_SEQ = 2**63 - 1
"""Largest row sequence (SQLite INTEGER, PostgreSQL BIGINT)."""


class RaceLost(Exception):
    """A write lost a race with another process (a unique key or a version check): the
    store re-reads and tries again. Never reaches callers."""


@dataclass(frozen=True)
class Page:
    """One page of a list: wire JSON documents and the cursor of the next page, if any."""

    items: list[str]
    next_cursor: str | None

    def to_json(self) -> str:
        """``{"data": [...], "nextCursor": ...}`` without re-encoding the stored documents."""
        return f'{{"data":[{",".join(self.items)}],"nextCursor":{json.dumps(self.next_cursor)}}}'


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one item of a batch: its document, or the problems that refused it."""

    index: int
    document: dict[str, Any] | None = None
    problems: tuple[FieldProblem, ...] = field(default=())


def encode_cursor(seq: int) -> str:
    """An opaque cursor pointing after row ``seq``."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The row sequence a cursor points after; 0 for the first page."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text[1:]
        # int() also takes signs, "_", spaces and non-ASCII digits; a row sequence is plain
        # ASCII digits that fit the databases' 64-bit integers.
        if not text.startswith("s") or not (digits.isascii() and digits.isdigit()):
            raise ValueError(text)
        seq = int(digits)
        if seq > MAX_SEQ:
            raise ValueError(text)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise PayloadError(
            "cursor is not one this API returned: pass nextCursor from the previous page",
            [FieldProblem("cursor", "malformed cursor")],
        ) from None


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def page(
    conn: Connection, sql: str, args: list[Any], limit: int, render: Callable[[Any], str]
) -> Page:
    """Run ``sql`` (selecting ``seq`` first) ordered by ``seq``; one page of rendered rows."""
    limit = max(1, min(limit, MAX_LIMIT))
    rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1]["seq"]) if more else None
    return Page([render(r) for r in rows], cursor)


def filters(sql: str, args: list[Any], given: tuple[tuple[str, Any], ...]) -> str:
    """``sql`` with ``AND <condition>`` for every condition whose value is not None (the
    values are appended to ``args``)."""
    for condition, value in given:
        if value is not None:
            sql += f" AND {condition}"
            args.append(value)
    return sql
