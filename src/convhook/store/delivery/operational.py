"""Operational events in SQL: ``endpoint.*`` and ``delivery.failed`` recorded in the outbox.

Each is an ordinary row of ``events``, inserted in the transaction of the change that causes
it, so the fan-out trigger queues its deliveries (to the endpoints that list its type: an
endpoint subscribed to every type gets only ``conversation.*``). Its subject is an endpoint:
``conversation_id`` is the endpoint id and ``conversation_seq`` the endpoint's own counter
(``endpoints.event_seq``), moved on by an UPDATE of the endpoint row, which also holds that row's
lock on PostgreSQL until commit, so concurrent writers never take the same sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convhook.events import (
    DeliveryFailed,
    DeliveryFailure,
    EndpointDisabled,
    EndpointEnabled,
    EndpointState,
    OperationalEvent,
    OperationalEventType,
)
from convhook.ids import new_id
from convhook.store.delivery.dialect import is_sqlite
from convhook.store.engine.connection import Connection
from convhook.timefmt import format_ms

DELIVERY_PREFIX = "dlv_"
"""How a delivery's numeric id is written on the wire (as the API writes it)."""
CONVERSATION_EVENTS = "conversation.%"
"""A LIKE pattern of the event types that may cause ``delivery.failed`` (a failed delivery of
an operational event causes none: a failing subscriber would feed itself)."""

_INSERT = (
    "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, "
    "body, created_at, previous_event_id) VALUES (?, ?, ?, ?, ?, ?, ?, "
    "(SELECT p.id FROM events AS p WHERE p.conversation_id = ? AND p.conversation_seq = ?))"
)
_NEXT = (
    "UPDATE endpoints SET event_seq = event_seq + 1 WHERE id = ? "
    "RETURNING event_seq, workspace_id, url, enabled, disabled_reason, failing_since"
)


def _record(
    conn: Connection,
    workspace_id: str,
    endpoint_id: str,
    event: OperationalEvent,
    seq: int,
    now: int,
) -> str:
    conn.execute(
        _INSERT,
        (
            event.event_id,
            workspace_id,
            endpoint_id,
            seq,
            event.event_type,
            event.to_json().decode(),
            now,
            endpoint_id,
            seq - 1,
        ),
    )
    return event.event_id


def endpoint_changed(
    conn: Connection,
    event_type: OperationalEventType,
    endpoint_id: str,
    now: int,
    *,
    failing_since: int | None = None,
) -> str | None:
    """Record ``endpoint.disabled`` or ``endpoint.enabled`` about the endpoint as it stands
    now; ``failing_since`` overrides the row's (a change that cleared it names the old value).
    Return the event id, None if the endpoint is gone."""
    row = conn.execute(_NEXT, (endpoint_id,)).fetchone()
    if row is None:
        return None
    seq, workspace_id, url, enabled, reason, since = row
    cls = {
        OperationalEventType.ENDPOINT_DISABLED: EndpointDisabled,
        OperationalEventType.ENDPOINT_ENABLED: EndpointEnabled,
    }[event_type]
    event = cls(
        event_id=new_id("evt"),
        event_type=event_type.value,
        payload=EndpointState(
            endpoint_id=endpoint_id,
            workspace_id=workspace_id,
            url=url,
            enabled=bool(enabled),
            disabled_reason=reason,
            failing_since=_time(failing_since if failing_since is not None else since),
            at=_time(now),
        ),
    )
    return _record(conn, workspace_id, endpoint_id, event, seq, now)


def ended_failed(conn: Connection, ended: Sequence[tuple[int, int]]) -> dict[str, list[Any]]:
    """Of ``(delivery id, attempted_at)`` pairs, the deliveries that attempt ended failed and
    that get a ``delivery.failed`` (a conversation event's, not a test's), by endpoint."""
    if not ended:
        return {}
    at = dict(ended)
    ids = sorted(at)
    marks = ", ".join("?" for _ in ids)
    rows = conn.execute(
        "SELECT d.id, d.event_id, d.event_type, d.endpoint_id, d.workspace_id, "
        "d.conversation_id, d.attempts, d.last_status_code, d.last_error, d.last_attempt_at "
        f"FROM deliveries AS d WHERE d.id IN ({marks}) AND d.status = 'failed' "
        "AND d.event_seq IS NOT NULL AND d.event_type LIKE ? ORDER BY d.id",
        (*ids, CONVERSATION_EVENTS),
    ).fetchall()
    found: dict[str, list[Any]] = {}
    for row in rows:
        # A lease lost while the attempt ran left the row to another dispatcher: not this one's.
        if row["last_attempt_at"] == at[row["id"]]:
            found.setdefault(row["endpoint_id"], []).append(row)
    return found


def delivery_failed(conn: Connection, row: Any, now: int) -> str | None:
    """Record ``delivery.failed`` for a delivery row of :func:`ended_failed`; its event id,
    None if the endpoint is gone."""
    endpoint_id = row["endpoint_id"]
    nxt = conn.execute(_NEXT, (endpoint_id,)).fetchone()
    if nxt is None:
        return None
    event = DeliveryFailed(
        event_id=new_id("evt"),
        event_type=OperationalEventType.DELIVERY_FAILED.value,
        payload=DeliveryFailure(
            delivery_id=f"{DELIVERY_PREFIX}{row['id']}",
            event_id=row["event_id"],
            event_type=row["event_type"],
            endpoint_id=endpoint_id,
            workspace_id=row["workspace_id"],
            url=nxt["url"],
            conversation_id=row["conversation_id"],
            attempts=row["attempts"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            at=_time(row["last_attempt_at"]),
        ),
    )
    return _record(conn, row["workspace_id"], endpoint_id, event, nxt["event_seq"], now)


def _time(ms: int | None) -> Any:
    # The wire form, which the model's Timestamp reads back exactly (milliseconds, UTC).
    return None if ms is None else format_ms(ms)


# ``endpoint.recovered`` is written by one statement per engine, body included, so that it can
# go in the same pipeline as the batch's other statements (on PostgreSQL a batch of successes
# commits in that pipeline, with no round trip to read anything first). The body is the one
# EndpointRecovered.to_json() writes: tests/integration/test_operational_events.py holds that.
_RECOVERED_SQLITE = """
INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, body,
                    created_at, previous_event_id)
SELECT ?, e.workspace_id, e.id, e.event_seq + 1, 'endpoint.recovered',
       json_object('eventId', ?, 'eventType', 'endpoint.recovered', 'payload', json_object(
           'endpointId', e.id, 'workspaceId', e.workspace_id, 'url', e.url,
           'enabled', json(CASE WHEN e.enabled = 1 THEN 'true' ELSE 'false' END),
           'disabledReason', e.disabled_reason,
           'failingSince', strftime('%Y-%m-%dT%H:%M:%fZ', e.failing_since / 1000.0, 'unixepoch'),
           'at', ?)),
       ?, (SELECT p.id FROM events AS p
           WHERE p.conversation_id = e.id AND p.conversation_seq = e.event_seq)
FROM endpoints AS e WHERE e.id = ? AND e.failing_since IS NOT NULL
"""

_RECOVERED_POSTGRES = """
INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, body,
                    created_at, previous_event_id)
SELECT r.event_id, e.workspace_id, e.id, e.event_seq + 1, 'endpoint.recovered',
       '{"eventId":' || to_json(r.event_id)::text
       || ',"eventType":"endpoint.recovered","payload":{"endpointId":' || to_json(e.id)::text
       || ',"workspaceId":' || to_json(e.workspace_id)::text
       || ',"url":' || to_json(e.url)::text
       || ',"enabled":' || CASE WHEN e.enabled = 1 THEN 'true' ELSE 'false' END
       || ',"disabledReason":' || coalesce(to_json(e.disabled_reason)::text, 'null')
       || ',"failingSince":"'
       || to_char(TIMESTAMP '1970-01-01' + e.failing_since * INTERVAL '1 millisecond',
                  'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
       || '","at":' || to_json(CAST(:at AS TEXT))::text || '}}',
       :now, (SELECT p.id FROM events AS p
              WHERE p.conversation_id = e.id AND p.conversation_seq = e.event_seq)
FROM endpoints AS e
JOIN unnest(CAST(:endpoints AS TEXT[]), CAST(:event_ids AS TEXT[])) AS r (endpoint_id, event_id)
  ON r.endpoint_id = e.id
WHERE e.failing_since IS NOT NULL
ORDER BY e.id
FOR NO KEY UPDATE OF e
"""

_LOCK_POSTGRES = """
SELECT e.id FROM endpoints AS e
WHERE e.id = ANY(CAST(:endpoints AS TEXT[])) AND e.failing_since IS NOT NULL
ORDER BY e.id
FOR NO KEY UPDATE
"""

RECOVERED_SET = (
    "UPDATE endpoints SET failing_since = NULL, event_seq = event_seq + 1 "
    "WHERE id = ? AND failing_since IS NOT NULL"
)
"""Run after :func:`record_recovered` for the same endpoints: ends their failure."""


def record_recovered(conn: Connection, endpoint_ids: Sequence[str], now: int) -> None:
    """Record ``endpoint.recovered`` for those of ``endpoint_ids`` (sorted) that were failing,
    without reading an answer; :data:`RECOVERED_SET` then clears their ``failing_since``."""
    event_ids = [new_id("evt") for _ in endpoint_ids]
    at = format_ms(now)
    if is_sqlite(conn):
        conn.executemany(
            _RECOVERED_SQLITE,
            [(ev, ev, at, now, ep) for ep, ev in zip(endpoint_ids, event_ids, strict=True)],
        )
        return
    # The endpoints are locked by a statement of their own first: a statement that waits for
    # a row lock reads the row as committed by the other transaction, but its subquery for the
    # previous event would keep the older snapshot and miss an event committed with it. The
    # insert then starts after the locks are held, with a fresh snapshot (same pipeline).
    conn.execute(_LOCK_POSTGRES, {"endpoints": list(endpoint_ids)})
    conn.execute(
        _RECOVERED_POSTGRES,
        {"at": at, "now": now, "endpoints": list(endpoint_ids), "event_ids": event_ids},
    )
