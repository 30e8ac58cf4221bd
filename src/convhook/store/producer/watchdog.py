"""The watchdog's store operations: conversations stale in a phase, and the leader lease.

:func:`stale` finds, in bounded batches, the conversations of one phase whose last change
(``updated_at``, epoch ms, set by every transition) is older than a cutoff, through the
partial index ``conversations_stale`` (migration 0007). :func:`take_lease` lets one process at
a time act among all those sharing the database: a row of ``leader_leases`` taken, renewed and
released in a write, valid until its ``expires_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from convhook.lifecycle import Phase
from convhook.store.engine.connection import Connection

if TYPE_CHECKING:
    from convhook.store.producer.store import ProducerStore

WATCHED = (Phase.CREATED, Phase.DIALING, Phase.ACTIVE, Phase.LEFT)
"""The phases the index covers: every phase a conversation can still leave."""

# The IN term repeats the index's WHERE word for word: SQLite uses a partial index only then.
_STALE = (
    "SELECT id, workspace_id, phase, event_seq, updated_at FROM conversations "
    "WHERE phase IN ('created', 'dialing', 'active', 'left') AND phase = ? "
    "AND updated_at < ? AND (updated_at, id) > (?, ?) "
    "ORDER BY updated_at, id LIMIT ?"
)

# The row is written by whoever finds it free, expired or already theirs; the conflict
# clause runs under the row's lock (PostgreSQL) or the exclusive writer (SQLite), so two
# processes never both hold it.
_TAKE = (
    "INSERT INTO leader_leases (name, owner, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE leader_leases.owner = excluded.owner OR leader_leases.expires_at <= ?"
)


@dataclass(frozen=True)
class Stale:
    """A conversation found stale, as it was read: the watchdog's change is refused should
    its phase or event count differ inside the write."""

    id: str
    workspace_id: str
    phase: Phase
    event_seq: int
    updated_at: int
    """Epoch ms of its last change."""


def _stale(
    conn: Connection, phase: str, cutoff: int, after: tuple[int, str], limit: int
) -> list[Stale]:
    rows = conn.execute(_STALE, (phase, cutoff, after[0], after[1], limit)).fetchall()
    return [
        Stale(r["id"], r["workspace_id"], Phase(r["phase"]), r["event_seq"], r["updated_at"])
        for r in rows
    ]


def _take(conn: Connection, name: str, owner: str, now: int, until: int) -> bool:
    conn.execute(_TAKE, (name, owner, until, now))
    row = conn.execute("SELECT owner FROM leader_leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == owner


def _release(conn: Connection, name: str, owner: str) -> int:
    return int(
        conn.execute(
            "DELETE FROM leader_leases WHERE name = ? AND owner = ?", (name, owner)
        ).rowcount
    )


async def stale(
    store: ProducerStore,
    phase: Phase,
    *,
    before: int,
    after: tuple[int, str] = (-1, ""),
    limit: int = 100,
) -> list[Stale]:
    """Up to ``limit`` conversations in ``phase`` last changed before ``before`` (epoch ms),
    in (``updated_at``, id) order, starting after the key ``after`` (for the next batch)."""
    if phase not in WATCHED:
        raise ValueError(f"phase {phase.value} is final: nothing to watch")
    return await store.db.read(_stale, phase.value, before, after, limit)


async def take_lease(store: ProducerStore, name: str, owner: str, *, now: int, ttl: int) -> bool:
    """Take or renew the lease ``name`` for ``owner`` until ``now + ttl`` (epoch ms); False
    while another owner holds it unexpired."""
    return await store.db.write(_take, name, owner, now, now + ttl)


async def release_lease(store: ProducerStore, name: str, owner: str) -> bool:
    """Give the lease up if ``owner`` holds it, so another process takes over at once."""
    return bool(await store.db.write(_release, name, owner))
