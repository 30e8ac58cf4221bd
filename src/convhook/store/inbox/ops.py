"""The inbox's operations: every statement that reads or changes it, as functions of a
connection and plain arguments.

:class:`~convhook.store.inbox.store.DatabaseInbox` runs the writes through its database's
writer (a thread, or for ``convhook listen`` on SQLite a child process: the arguments and
results then cross as msgspec values) and the reads on its reader threads. The statements are
the same on both engines except the claim, the insert (SQLite's writer is exclusive) and the
order of arrival; PostgreSQL also notifies the other receiving processes.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from convhook.store.engine.connection import Connection, PerDialect
from convhook.store.inbox.base import HandlerStatus, InboxEntry, Received

FROM = "FROM convhook_inbox i JOIN convhook_inbox_state s ON s.event_id = i.event_id"
COLUMNS = (
    "i.event_id, i.webhook_id, i.event_type, i.body, i.headers, i.received_at, s.status, "
    "s.attempts, s.next_attempt_at, s.handlers_done, s.last_error, s.updated_at, "
    "i.conversation_id, i.sequence, i.traceparent, i.origin"
)
_INSERT = (
    "INSERT INTO convhook_inbox (event_id, webhook_id, event_type, body, headers, received_at, "
    "conversation_id, sequence, traceparent, origin) VALUES "
)
_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_STATE = (
    "INSERT INTO convhook_inbox_state (event_id, status, attempts, next_attempt_at, updated_at) "
    "VALUES "
)
_STATE_ROW = "(?, ?, ?, ?, ?)"
# Runs on the writer thread with the GIL held, once per row: msgspec's encoder is ~10x faster
# than json.dumps and writes the same compact text.
_ENCODER = msgspec.json.Encoder()


def encode_json(value: Any) -> str:
    return _ENCODER.encode(value).decode()


# Well under SQLite's 32766 bound variables per statement (and PostgreSQL's 65535).
_ROWS_PER_STATEMENT = 500
# NOTIFY channel of a PostgreSQL inbox: "work may be due", sent by replays and by events stored
# pending, so the workers of every process look at once instead of at their next poll.
CHANNEL = "convhook_inbox"
NOTIFY = "SELECT pg_notify(?, '')"
_DUE = (
    "SELECT event_id FROM convhook_inbox_state WHERE status IN ('pending', 'running') "
    "AND next_attempt_at <= :now ORDER BY next_attempt_at LIMIT :limit"
)
_CLAIM_SET = (
    "UPDATE convhook_inbox_state SET status = 'running', attempts = attempts + 1, "
    "next_attempt_at = :until, updated_at = :now "
)
_CLAIM = PerDialect(
    # SQLite has one writer at a time, so the due rows cannot change under the claim.
    sqlite=_CLAIM_SET + f"WHERE event_id IN ({_DUE}) RETURNING event_id",
    # Several processes claim at once: each locks the due rows it takes and skips the rows
    # another is taking, so no event is claimed twice and no claimer waits for another. The
    # CTE is evaluated once, which an IN (subquery) with LIMIT is not guaranteed to be.
    postgres=f"WITH due AS ({_DUE} FOR UPDATE SKIP LOCKED) "
    + _CLAIM_SET
    + "FROM due WHERE convhook_inbox_state.event_id = due.event_id "
    "RETURNING convhook_inbox_state.event_id",
)
# Arrival order: SQLite's rowid, PostgreSQL's identity column.
_ORDER = PerDialect(sqlite="i.rowid", postgres="i.seq")


# A claimed event past its attempts: an attempt that records no outcome (its process stopped
# or died, or a graceful stop handed back an event that never started) earns one more try, so
# nothing acknowledged is failed unrun; past that the event is failed, never claimed forever.
# Any earlier error is kept in front of the reason.
_GIVE_UP = (
    "UPDATE convhook_inbox_state SET status = 'failed', next_attempt_at = NULL, "
    "last_error = COALESCE(last_error || '; ', '') || ?, updated_at = ? WHERE event_id IN "
)
_NO_OUTCOME = (
    "gave up: the last attempt recorded no outcome (its process stopped, or recording failed)"
)


def _first_of_each(items: list[Received]) -> tuple[list[bool], list[Received]]:
    """Which items are the first with their eventId and webhook-id in this batch."""
    seen_events: set[str] = set()
    seen_hooks: set[str] = set()
    first: list[bool] = []
    unique: list[Received] = []
    for item in items:
        hook = item.webhook_id
        repeat = item.event_id in seen_events or (hook is not None and hook in seen_hooks)
        first.append(not repeat)
        if not repeat:
            seen_events.add(item.event_id)
            if hook is not None:
                seen_hooks.add(hook)
            unique.append(item)
    return first, unique


def _rows(chunk: list[Received]) -> tuple[list[Any], list[Any]]:
    """Parameters of the inbox rows and of their state rows."""
    params: list[Any] = []
    states: list[Any] = []
    for r in chunk:
        headers = encode_json(r.headers)
        params += (
            r.event_id,
            r.webhook_id,
            r.event_type,
            r.body,
            headers,
            r.received_at,
            r.conversation_id,
            r.sequence,
            r.traceparent,
            r.origin,
        )
        if r.done:
            states += (r.event_id, "done", 0, None, r.received_at)
        elif r.claimed_until is None:
            states += (r.event_id, "pending", 0, r.received_at, r.received_at)
        else:
            states += (r.event_id, "running", 1, r.claimed_until, r.received_at)
    return params, states


def _insert_shared(conn: Connection, items: list[Received]) -> list[bool]:
    """Insert new events in as few statements as possible; True for each one inserted.

    Concurrent writers (several PostgreSQL processes) may insert the same event at once, so
    ON CONFLICT decides and RETURNING names the rows really inserted.
    """
    first, unique = _first_of_each(items)
    inserted: set[str] = set()
    for at in range(0, len(unique), _ROWS_PER_STATEMENT):
        chunk = unique[at : at + _ROWS_PER_STATEMENT]
        # ON CONFLICT without a target skips a row clashing on eventId or on webhook-id.
        sql = (
            _INSERT
            + ", ".join([_INSERT_ROW] * len(chunk))
            + " ON CONFLICT DO NOTHING RETURNING event_id"
        )
        params, _ = _rows(chunk)
        new = {row[0] for row in conn.execute(sql, params)}
        if not new:
            continue
        inserted |= new
        _, states = _rows([r for r in chunk if r.event_id in new])
        conn.execute(_INSERT_STATE + ", ".join([_STATE_ROW] * len(new)), states)
    return [is_first and r.event_id in inserted for is_first, r in zip(first, items, strict=True)]


def _insert_exclusive(conn: Connection, items: list[Received]) -> list[bool]:
    """:func:`_insert_shared` for a writer nobody else writes beside (SQLite's write lock).

    Known ids are looked up first, so the inserts need no RETURNING: SQLite steps a RETURNING
    statement once per row, and each step hands the GIL over and back, which under load
    stalls the writer thread behind the event loop. Here a batch is four statements.
    """
    first, unique = _first_of_each(items)
    inserted: set[str] = set()
    for at in range(0, len(unique), _ROWS_PER_STATEMENT):
        chunk = unique[at : at + _ROWS_PER_STATEMENT]
        ids = [r.event_id for r in chunk]
        hooks = [r.webhook_id for r in chunk if r.webhook_id is not None]
        sql = f"SELECT event_id, webhook_id FROM convhook_inbox WHERE event_id IN ({_marks(ids)})"
        if hooks:
            sql += f" OR webhook_id IN ({_marks(hooks)})"
        known = conn.execute(sql, [*ids, *hooks]).fetchall()
        if known:
            old_ids = {row[0] for row in known}
            old_hooks = {row[1] for row in known}
            chunk = [
                r for r in chunk if r.event_id not in old_ids and r.webhook_id not in old_hooks
            ]
            if not chunk:
                continue
        params, states = _rows(chunk)
        conn.execute(_INSERT + ", ".join([_INSERT_ROW] * len(chunk)), params)
        conn.execute(_INSERT_STATE + ", ".join([_STATE_ROW] * len(chunk)), states)
        inserted.update(r.event_id for r in chunk)
    return [is_first and r.event_id in inserted for is_first, r in zip(first, items, strict=True)]


# -- writes ----------------------------------------------------------------------------


def add(conn: Connection, items: list[Received]) -> list[bool]:
    """Store new events; True for each one stored (False: its eventId or webhook-id was)."""
    if not conn.dialect.shared:
        # SQLite's BEGIN IMMEDIATE makes the writer exclusive, even across processes.
        return _insert_exclusive(conn, items)
    inserted = _insert_shared(conn, items)
    if any(
        new and r.claimed_until is None and not r.done
        for new, r in zip(inserted, items, strict=True)
    ):
        conn.execute(NOTIFY, (CHANNEL,))
    return inserted


def claim(
    conn: Connection, now: float, limit: int, lease: float, max_attempts: int | None
) -> list[InboxEntry]:
    """Lease up to ``limit`` due events until ``now + lease``, in order of arrival. With
    ``max_attempts``, a claimed event on its ``max_attempts + 2``-th attempt (attempts that
    recorded no outcome get one more) is marked ``failed`` instead, and not returned."""
    params = {"until": now + lease, "now": now, "limit": limit}
    ids = [r[0] for r in conn.execute(_CLAIM.of(conn), params)]
    if not ids:
        return []
    rows = conn.execute(f"SELECT {COLUMNS} {FROM} WHERE i.event_id IN ({_marks(ids)})", ids)
    entries = sorted((entry(r) for r in rows), key=lambda e: e.received_at)
    if max_attempts is None:
        return entries
    spent = [e.event_id for e in entries if e.attempts > max_attempts + 1]
    if not spent:
        return entries
    # Only rows this claim holds: bounded by its limit, and locked by it on PostgreSQL.
    conn.execute(_GIVE_UP + f"({_marks(spent)})", [_NO_OUTCOME, now, *spent])
    return [e for e in entries if e.attempts <= max_attempts + 1]


def fail(
    conn: Connection,
    event_id: str,
    now: float,
    error: str,
    handlers_done: list[str],
    retry_at: float | None,
) -> None:
    """Record a failed attempt: pending again at ``retry_at``, or ``failed`` if None."""
    status = HandlerStatus.PENDING if retry_at is not None else HandlerStatus.FAILED
    conn.execute(
        "UPDATE convhook_inbox_state SET status = ?, next_attempt_at = ?, handlers_done = ?, "
        "last_error = ?, updated_at = ? WHERE event_id = ?",
        (status.value, retry_at, json.dumps(handlers_done), error, now, event_id),
    )


def requeue(conn: Connection, ids: list[str], now: float) -> list[str]:
    """Make events due again from their first handler attempt; return those found."""
    found = []
    for event_id in ids:
        row = conn.execute(
            "UPDATE convhook_inbox_state SET "
            "handlers_done = CASE WHEN status = 'done' THEN '[]' ELSE handlers_done END, "
            "status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
            "WHERE event_id = ? RETURNING event_id",
            (now, now, event_id),
        ).fetchone()
        if row is not None:
            found.append(row[0])
    if found and conn.dialect.shared:
        conn.execute(NOTIFY, (CHANNEL,))
    return found


def release_running(conn: Connection, now: float) -> int:
    """Make every running event due now (an exclusive inbox at start)."""
    count: int = conn.execute(
        "UPDATE convhook_inbox_state SET status = 'pending', next_attempt_at = ?, "
        "updated_at = ? WHERE status = 'running'",
        (now, now),
    ).rowcount
    return count


def extend(conn: Connection, ids: list[str], until: float) -> None:
    """Renew the leases of events still running here (a finished one stays as recorded)."""
    for at in range(0, len(ids), _ROWS_PER_STATEMENT):
        chunk = ids[at : at + _ROWS_PER_STATEMENT]
        # Only a lease still held moves: a finished or failed event stays as recorded.
        conn.execute(
            "UPDATE convhook_inbox_state SET next_attempt_at = ? WHERE status = 'running' "
            f"AND event_id IN ({', '.join('?' * len(chunk))})",
            [until, *chunk],
        )


def _marks(values: list[Any]) -> str:
    return ", ".join("?" * len(values))


def complete(conn: Connection, items: list[tuple[str, str, float]]) -> list[None]:
    """Mark events done, one statement per distinct set of succeeded handlers."""
    groups: dict[str, list[str]] = {}
    now = 0.0
    for event_id, done, at in items:
        groups.setdefault(done, []).append(event_id)
        now = max(now, at)
    for done, ids in groups.items():
        for at in range(0, len(ids), _ROWS_PER_STATEMENT):
            chunk = ids[at : at + _ROWS_PER_STATEMENT]
            conn.execute(
                "UPDATE convhook_inbox_state SET status = 'done', next_attempt_at = NULL, "
                "handlers_done = ?, last_error = NULL, updated_at = ? "
                f"WHERE event_id IN ({', '.join('?' * len(chunk))})",
                [done, now, *chunk],
            )
    return [None] * len(items)


# -- reads -----------------------------------------------------------------------------


def next_due(conn: Connection) -> float | None:
    """The earliest ``next_attempt_at`` of work still to do."""
    row = conn.execute(
        "SELECT min(next_attempt_at) FROM convhook_inbox_state "
        "WHERE status IN ('pending', 'running')"
    ).fetchone()
    value: float | None = row[0]
    return value


def get(conn: Connection, event_id: str) -> InboxEntry | None:
    """One stored event, or None."""
    row = conn.execute(f"SELECT {COLUMNS} {FROM} WHERE i.event_id = ?", (event_id,)).fetchone()
    return None if row is None else entry(row)


def recent(conn: Connection, status: str | None, limit: int) -> list[InboxEntry]:
    """The newest events first, optionally only those with ``status``."""
    order = _ORDER.of(conn)
    if status is None:
        rows = conn.execute(f"SELECT {COLUMNS} {FROM} ORDER BY {order} DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute(
            f"SELECT {COLUMNS} {FROM} WHERE s.status = ? ORDER BY {order} DESC LIMIT ?",
            (status, limit),
        )
    return [entry(r) for r in rows]


def failed_ids(conn: Connection, limit: int) -> list[str]:
    """The ids of ``failed`` events, oldest first."""
    rows = conn.execute(
        "SELECT s.event_id FROM convhook_inbox_state s JOIN convhook_inbox i "
        f"ON i.event_id = s.event_id WHERE s.status = 'failed' ORDER BY {_ORDER.of(conn)} "
        "LIMIT ?",
        (limit,),
    )
    return [r[0] for r in rows]


def entry(row: Any) -> InboxEntry:
    return InboxEntry(
        event_id=row["event_id"],
        webhook_id=row["webhook_id"],
        event_type=row["event_type"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        received_at=row["received_at"],
        status=HandlerStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        handlers_done=tuple(json.loads(row["handlers_done"])),
        last_error=row["last_error"],
        updated_at=row["updated_at"],
        conversation_id=row["conversation_id"],
        sequence=row["sequence"],
        traceparent=row["traceparent"],
        origin=row["origin"],
    )
