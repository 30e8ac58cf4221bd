"""Retention: remove the payload of old events whose deliveries are all finished.

The event row stays (id, type, conversation, sequence, time), so ordering and history do;
only ``body`` is emptied. Work is done in small batches, one short transaction each, so the
API and the dispatcher keep writing while it runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convhook.errors import ConfigError
from convhook.store.engine.connection import Connection
from convhook.store.engine.database import Database
from convhook.store.producer.event_log import PRUNED

DEFAULT_PERIOD = "30d"
DEFAULT_BATCH = 1000
_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PERIOD = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
# A delivery in any other state may still need the payload.
FINISHED = ("delivered", "failed")


@dataclass(frozen=True)
class PruneResult:
    """What one retention run did."""

    events: int
    """Events whose payload was removed."""
    batches: int
    """Write transactions it took."""
    cutoff: int
    """Events created before this epoch-ms time were eligible."""


def parse_period(text: str) -> int:
    """``30d``, ``12h``, ``15m`` or ``90s`` in milliseconds."""
    match = _PERIOD.match(text)
    if match is None:
        raise ConfigError(f"period {text!r} is not a number with s, m, h or d, e.g. 30d")
    return int(match[1]) * _UNITS[match[2]]


def _has_deliveries(conn: Connection) -> bool:
    if conn.dialect.name == "postgres":
        row = conn.execute("SELECT to_regclass('deliveries') IS NOT NULL").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
        ).fetchone()
    return bool(row[0])


def _window(conn: Connection, after: int, size: int) -> list[Any]:
    rows: list[Any] = conn.execute(
        "SELECT seq, created_at, CASE WHEN body = ? THEN 0 ELSE 1 END AS live FROM events "
        "WHERE seq > ? ORDER BY seq LIMIT ?",
        (PRUNED, after, size),
    ).fetchall()
    return rows


_PRUNE = "UPDATE events SET body = ? WHERE seq >= ? AND seq <= ? AND created_at < ? AND body <> ?"
_UNDELIVERED = (
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id "
    f"AND d.status NOT IN ({', '.join('?' * len(FINISHED))}))"
)


def _prune(conn: Connection, first: int, last: int, cutoff: int, deliveries: bool) -> int:
    """Empty the payload of old events in ``first..last`` (whose deliveries are finished)."""
    args: tuple[Any, ...] = (PRUNED, first, last, cutoff, PRUNED)
    if deliveries:
        return int(conn.execute(_PRUNE + _UNDELIVERED, args + FINISHED).rowcount)
    return int(conn.execute(_PRUNE, args).rowcount)


async def prune(
    db: Database,
    *,
    older_than_ms: int,
    batch: int = DEFAULT_BATCH,
    clock: Callable[[], float] = time.time,
) -> PruneResult:
    """Empty the payload of events created more than ``older_than_ms`` ago whose deliveries
    are all delivered or failed, ``batch`` events per transaction; return what was done."""
    if batch < 1:
        raise ConfigError(f"batch must be at least 1, got {batch}")
    cutoff = int(clock() * 1000) - older_than_ms
    deliveries = await db.read(_has_deliveries)
    after, pruned, batches = 0, 0, 0
    while True:
        rows = await db.read(_window, after, batch)
        old = [r for r in rows if r["created_at"] < cutoff]
        if any(r["live"] for r in old):
            batches += 1
            first, last = old[0]["seq"], old[-1]["seq"]
            pruned += await db.write(_prune, first, last, cutoff, deliveries)
        # Sequence order follows creation order closely enough that the first young event
        # ends the run; one created a little out of order is pruned by the next run.
        if len(old) < len(rows) or len(rows) < batch:
            return PruneResult(pruned, batches, cutoff)
        after = rows[-1]["seq"]
