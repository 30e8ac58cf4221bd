"""The outbox's events as the API and ``convhook events`` read them.

An event whose payload the retention job removed keeps its row (id, type, conversation,
sequence, time) with an empty ``body``: it is listed as a stub and answers 410 when fetched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from convhook.errors import GoneError as GoneError  # re-exported: its old home
from convhook.store.engine.connection import Connection
from convhook.store.producer.paging import Page, filters, page
from convhook.timefmt import format_ms

PRUNED = ""
"""The ``body`` of an event whose payload was pruned."""


@dataclass(frozen=True)
class EventRow:
    """An outbox row as ``events tail`` shows it."""

    seq: int
    id: str
    workspace_id: str
    conversation_id: str
    conversation_seq: int
    event_type: str
    created_at: int


def stub(event_id: str, event_type: str) -> str:
    """What a list shows for a pruned event: its id and type, no payload."""
    return json.dumps(
        {"eventId": event_id, "eventType": event_type, "payload": None, "pruned": True},
        separators=(",", ":"),
    )


def _render(row: Any) -> str:
    body = str(row["body"])
    return body if body != PRUNED else stub(row["id"], row["event_type"])


def list_page(
    conn: Connection,
    workspace_id: str,
    after: int,
    limit: int,
    given: tuple[tuple[str, Any], ...],
) -> Page:
    """One page of the workspace's events matching ``given`` conditions, oldest first."""
    args: list[Any] = [workspace_id, after]
    sql = filters(
        "SELECT seq, id, event_type, body FROM events WHERE workspace_id = ? AND seq > ?",
        args,
        given,
    )
    return page(conn, sql, args, limit, _render)


def body(conn: Connection, workspace_id: str, event_id: str) -> str | None:
    """The event's exact wire JSON, None when there is no such event; raises
    :class:`GoneError` when its payload was pruned."""
    row = conn.execute(
        "SELECT body, conversation_id FROM events WHERE workspace_id = ? AND id = ?",
        (workspace_id, event_id),
    ).fetchone()
    if row is None:
        return None
    if row["body"] == PRUNED:
        conversation_id = row["conversation_id"]
        raise GoneError(
            f"event {event_id} is older than the retention period and its payload was "
            f"removed; conversation {conversation_id} is still readable at "
            f"/api/v2/conversations/{conversation_id}"
        )
    return str(row["body"])


def after(conn: Connection, seq: int, workspace_id: str | None, limit: int) -> list[EventRow]:
    """Rows with ``seq`` greater than the one given, oldest first (for tailing)."""
    sql = (
        "SELECT seq, id, workspace_id, conversation_id, conversation_seq, event_type, "
        "created_at FROM events WHERE seq > ?"
    )
    args: list[Any] = [seq]
    if workspace_id is not None:
        sql += " AND workspace_id = ?"
        args.append(workspace_id)
    rows = conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit))
    return [EventRow(*r) for r in rows]


def last_seq(conn: Connection) -> int:
    """The sequence number of the newest event, 0 when there is none."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


@dataclass(frozen=True)
class StreamEvent:
    """An outbox row with its wire body (None once pruned), as the live stream sends it."""

    seq: int
    id: str
    workspace_id: str
    conversation_id: str
    conversation_seq: int
    event_type: str
    created_at: int
    body: str | None


def stream_after(
    conn: Connection, seq: int, workspace_id: str | None, upto: int | None, limit: int
) -> list[StreamEvent]:
    """Rows with ``seq`` above ``seq`` (and at most ``upto``, when given), with their bodies,
    oldest first; of one workspace when ``workspace_id`` is given."""
    sql = (
        "SELECT seq, id, workspace_id, conversation_id, conversation_seq, event_type, "
        "created_at, body FROM events WHERE seq > ?"
    )
    args: list[Any] = [seq]
    if workspace_id is not None:
        sql += " AND workspace_id = ?"
        args.append(workspace_id)
    if upto is not None:
        sql += " AND seq <= ?"
        args.append(upto)
    found = []
    for r in conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall():
        seq, id_, workspace, conversation, conversation_seq, event_type, created, text = r
        found.append(
            StreamEvent(
                seq,
                id_,
                workspace,
                conversation,
                conversation_seq,
                event_type,
                created,
                None if text == PRUNED else str(text),
            )
        )
    return found


def of_conversation(
    conn: Connection, workspace_id: str, conversation_id: str, after_sequence: int, limit: int
) -> tuple[list[str], int | None] | None:
    """A conversation's events after ``after_sequence`` in sequence order, each rendered as
    the conversation events API lists it, and the sequence to continue after (None at the
    end); None when the workspace has no such conversation."""
    found = conn.execute(
        "SELECT 1 FROM conversations WHERE id = ? AND workspace_id = ?",
        (conversation_id, workspace_id),
    ).fetchone()
    if found is None:
        return None
    rows = conn.execute(
        "SELECT conversation_seq, id, event_type, previous_event_id, created_at, body "
        "FROM events WHERE conversation_id = ? AND workspace_id = ? AND conversation_seq > ? "
        "ORDER BY conversation_seq LIMIT ?",
        (conversation_id, workspace_id, after_sequence, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    items = [_sequenced(row) for row in rows[:limit]]
    return items, (int(rows[limit - 1][0]) if more else None)


def _sequenced(row: Any) -> str:
    # The stored body is spliced in as it is: the item's "event" is byte for byte what the
    # endpoints were sent, and it is never parsed here.
    head = {
        "sequence": int(row[0]),
        "eventId": row[1],
        "eventType": row[2],
        "previousEventId": row[3],
        "createdAt": format_ms(int(row[4])),
    }
    text = json.dumps(head, separators=(",", ":"))[:-1]
    if row[5] == PRUNED:
        return f'{text},"pruned":true,"event":{stub(row[1], row[2])}}}'
    return f'{text},"event":{row[5]}}}'
