"""Webhook endpoints in SQL: create, read, update, enable/disable, rotate secrets, delete.

Every function takes a :class:`~convhook.store.engine.connection.Connection` of either engine
and runs inside the caller's transaction: an operation for ``Database.write``/``read``. Times are epoch milliseconds. Every query
filters by workspace: an endpoint id from another workspace is simply not found.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from convhook.events import OperationalEventType
from convhook.store.delivery.operational import endpoint_changed
from convhook.store.engine.connection import Connection

_COLUMNS = (
    "id, workspace_id, url, description, event_types, enabled, disabled_reason, secret, "
    "previous_secret, previous_secret_expires_at, rate_limit, max_in_flight, failing_since, "
    "created_at, updated_at"
)


@dataclass(frozen=True)
class Endpoint:
    """A subscriber URL; ``event_types`` ``None`` means every type. ``repr`` hides secrets."""

    id: str
    workspace_id: str
    url: str
    description: str
    event_types: tuple[str, ...] | None
    enabled: bool
    disabled_reason: str | None
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_secret_expires_at: int | None
    rate_limit: float | None
    max_in_flight: int
    failing_since: int | None
    created_at: int
    updated_at: int


def _endpoint(row: Any) -> Endpoint:
    types = row["event_types"]
    return Endpoint(
        id=row["id"],
        workspace_id=row["workspace_id"],
        url=row["url"],
        description=row["description"],
        event_types=tuple(json.loads(types)) if types is not None else None,
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        rate_limit=row["rate_limit"],
        max_in_flight=row["max_in_flight"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _types(event_types: Sequence[str] | None) -> str | None:
    return None if event_types is None else json.dumps(sorted(set(event_types)))


def create(
    conn: Connection,
    endpoint_id: str,
    workspace_id: str,
    url: str,
    secret: str,
    now: int,
    description: str = "",
    event_types: Sequence[str] | None = None,
    enabled: bool = True,
    rate_limit: float | None = None,
    max_in_flight: int = 10,
) -> Endpoint:
    """Insert an endpoint; it receives only events recorded from now on."""
    conn.execute(
        f"INSERT INTO endpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, ?, ?, "
        "NULL, ?, ?)",
        (
            endpoint_id,
            workspace_id,
            url,
            description,
            _types(event_types),
            int(enabled),
            secret,
            rate_limit,
            max_in_flight,
            now,
            now,
        ),
    )
    found = get(conn, workspace_id, endpoint_id)
    assert found is not None
    return found


def get(conn: Connection, workspace_id: str, endpoint_id: str) -> Endpoint | None:
    """The endpoint, or ``None`` if this workspace has no such endpoint."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM endpoints WHERE id = ? AND workspace_id = ?",
        (endpoint_id, workspace_id),
    ).fetchone()
    return _endpoint(row) if row is not None else None


def list_(
    conn: Connection, workspace_id: str, limit: int = 100, after: str | None = None
) -> list[Endpoint]:
    """The workspace's endpoints in creation order, ``limit`` at a time after id ``after``."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM endpoints WHERE workspace_id = ? AND id > ? ORDER BY id LIMIT ?",
        (workspace_id, after or "", limit),
    ).fetchall()
    return [_endpoint(r) for r in rows]


_UPDATABLE = {"url", "description", "event_types", "rate_limit", "max_in_flight"}


def update(
    conn: Connection, workspace_id: str, endpoint_id: str, now: int, changes: dict[str, Any]
) -> Endpoint | None:
    """Change the given fields (``url``, ``description``, ``event_types``, limits)."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"cannot update endpoint fields {sorted(unknown)}")
    if "event_types" in changes:
        changes = {**changes, "event_types": _types(changes["event_types"])}
    sets = "".join(f"{name} = ?, " for name in changes)
    cur = conn.execute(
        f"UPDATE endpoints SET {sets}updated_at = ? WHERE id = ? AND workspace_id = ?",
        (*changes.values(), now, endpoint_id, workspace_id),
    )
    return get(conn, workspace_id, endpoint_id) if cur.rowcount else None


def set_enabled(
    conn: Connection,
    workspace_id: str,
    endpoint_id: str,
    enabled: bool,
    now: int,
    reason: str | None = None,
) -> Endpoint | None:
    """Enable or disable; disabling fails the endpoint's pending deliveries (recoverable).
    A change of state records ``endpoint.enabled`` or ``endpoint.disabled``."""
    # Locked before it is read on PostgreSQL: the state it had decides whether an event is due.
    lock = "" if conn.dialect.name == "sqlite" else " FOR NO KEY UPDATE"
    before = conn.execute(
        f"SELECT enabled, failing_since FROM endpoints WHERE id = ? AND workspace_id = ?{lock}",
        (endpoint_id, workspace_id),
    ).fetchone()
    if before is None:
        return None
    conn.execute(
        "UPDATE endpoints SET enabled = ?, disabled_reason = ?, failing_since = NULL, "
        "updated_at = ? WHERE id = ? AND workspace_id = ?",
        (
            int(enabled),
            None if enabled else reason or "disabled by request",
            now,
            endpoint_id,
            workspace_id,
        ),
    )
    if not enabled:
        fail_pending(conn, endpoint_id, now, f"endpoint disabled: {reason or 'by request'}")
    if bool(before[0]) != enabled:
        kind = (
            OperationalEventType.ENDPOINT_ENABLED
            if enabled
            else OperationalEventType.ENDPOINT_DISABLED
        )
        endpoint_changed(conn, kind, endpoint_id, now, failing_since=None if enabled else before[1])
    return get(conn, workspace_id, endpoint_id)


def fail_pending(conn: Connection, endpoint_id: str, now: int, error: str) -> int:
    """Mark the endpoint's waiting deliveries failed, so a disabled endpoint holds no backlog."""
    cur = conn.execute(
        "UPDATE deliveries SET status = 'failed', last_error = ?, updated_at = ? "
        "WHERE endpoint_id = ? AND status = 'pending'",
        (error, now, endpoint_id),
    )
    return cur.rowcount


def rotate_secret(
    conn: Connection,
    workspace_id: str,
    endpoint_id: str,
    new_secret: str,
    now: int,
    grace_ms: int,
) -> Endpoint | None:
    """Make ``new_secret`` current; the old one keeps signing for ``grace_ms``."""
    cur = conn.execute(
        "UPDATE endpoints SET previous_secret = CASE WHEN ? > 0 THEN secret END, "
        "previous_secret_expires_at = CASE WHEN ? > 0 THEN ? END, secret = ?, updated_at = ? "
        "WHERE id = ? AND workspace_id = ?",
        (grace_ms, grace_ms, now + grace_ms, new_secret, now, endpoint_id, workspace_id),
    )
    return get(conn, workspace_id, endpoint_id) if cur.rowcount else None


def delete(conn: Connection, workspace_id: str, endpoint_id: str) -> bool:
    """Remove the endpoint with its deliveries and attempts; False if it did not exist."""
    cur = conn.execute(
        "DELETE FROM endpoints WHERE id = ? AND workspace_id = ?", (endpoint_id, workspace_id)
    )
    return cur.rowcount > 0
