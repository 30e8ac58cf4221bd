"""The inbox's statements for ordering each conversation's events: how far a conversation
has been handled, its stored events between two sequences, and the gaps found.

Like :mod:`convhook.store.inbox.ops`, each is a module-level function of a connection and
plain arguments, so the writes also run in a writer process.
"""

from __future__ import annotations

from typing import Any

from convhook.store.engine.connection import Connection
from convhook.store.inbox.base import Gap, GapKind, GapStatus, HandlerStatus, Progress

_GAP_COLUMNS = (
    "event_id, conversation_id, kind, after_sequence, before_sequence, status, reason, "
    "filled, attempts, detected_at, resolved_at"
)
# Only ever raised: two processes handling a conversation's events never move it back.
_HANDLED = (
    "INSERT INTO convhook_inbox_conversations "
    "(conversation_id, last_sequence, last_rank, last_event_id, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET "
    "last_event_id = CASE WHEN excluded.last_sequence > convhook_inbox_conversations.last_sequence "
    "THEN excluded.last_event_id ELSE convhook_inbox_conversations.last_event_id END, "
    "last_sequence = CASE WHEN excluded.last_sequence > convhook_inbox_conversations.last_sequence "
    "THEN excluded.last_sequence ELSE convhook_inbox_conversations.last_sequence END, "
    "last_rank = CASE WHEN excluded.last_rank > convhook_inbox_conversations.last_rank "
    "THEN excluded.last_rank ELSE convhook_inbox_conversations.last_rank END, "
    "updated_at = excluded.updated_at"
)


# -- writes ----------------------------------------------------------------------------


def handled(conn: Connection, items: list[tuple[str, int, int, str, float]]) -> list[None]:
    """Raise each conversation's last sequence and rank to those of an event just handled
    (``(conversation_id, sequence or 0, rank, event_id, now)``)."""
    for item in items:
        conn.execute(_HANDLED, item)
    return [None] * len(items)


def note_gap(conn: Connection, gap: Gap) -> Gap:
    """Insert ``gap`` or, if its event already revealed one, count another look, keep the
    new reason and settle it if ``gap`` is settled; return the stored row."""
    row = conn.execute(
        f"INSERT INTO convhook_inbox_gaps ({_GAP_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
        "reason = CASE WHEN convhook_inbox_gaps.status = 'open' THEN excluded.reason "
        "ELSE convhook_inbox_gaps.reason END, attempts = convhook_inbox_gaps.attempts + excluded.attempts, "
        # A settled status given settles an open gap; an open one given keeps what is there.
        "status = CASE WHEN excluded.status <> 'open' AND convhook_inbox_gaps.status = 'open' "
        "THEN excluded.status ELSE convhook_inbox_gaps.status END, "
        "resolved_at = COALESCE(convhook_inbox_gaps.resolved_at, excluded.resolved_at) "
        f"RETURNING {_GAP_COLUMNS}",
        (
            gap.event_id,
            gap.conversation_id,
            gap.kind.value,
            gap.after_sequence,
            gap.before_sequence,
            gap.status.value,
            gap.reason,
            gap.filled,
            gap.attempts,
            gap.detected_at,
            gap.resolved_at,
        ),
    ).fetchone()
    return _gap(row)


def close_gap(
    conn: Connection, event_id: str, status: GapStatus, reason: str | None, filled: int, now: float
) -> None:
    """Settle an open gap: filled or unfilled, with how many events were filled."""
    conn.execute(
        "UPDATE convhook_inbox_gaps SET status = ?, reason = ?, filled = filled + ?, "
        "resolved_at = ? WHERE event_id = ? AND status = 'open'",
        (status.value, reason, filled, now, event_id),
    )


def defer(conn: Connection, event_id: str, until: float, now: float) -> None:
    """Make a claimed event pending at ``until``, giving back the attempt its claim counted."""
    conn.execute(
        "UPDATE convhook_inbox_state SET status = 'pending', next_attempt_at = ?, "
        "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = ? "
        "WHERE event_id = ? AND status = 'running'",
        (until, now, event_id),
    )


# -- reads -----------------------------------------------------------------------------


def progress(conn: Connection, conversation_id: str) -> Progress:
    """How far a conversation's events have been handled."""
    row = conn.execute(
        "SELECT last_sequence, last_rank FROM convhook_inbox_conversations "
        "WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    return Progress(0, 0) if row is None else Progress(row[0], row[1])


def between(
    conn: Connection, conversation_id: str, after: int, before: int
) -> list[tuple[int, str, HandlerStatus]]:
    """A conversation's stored events with ``after < sequence < before``, in order."""
    rows = conn.execute(
        "SELECT i.sequence, i.event_id, s.status FROM convhook_inbox i "
        "JOIN convhook_inbox_state s ON s.event_id = i.event_id "
        "WHERE i.conversation_id = ? AND i.sequence > ? AND i.sequence < ? "
        "ORDER BY i.sequence",
        (conversation_id, after, before),
    )
    return [(r[0], r[1], HandlerStatus(r[2])) for r in rows]


def covered(conn: Connection, conversation_id: str, sequence: int) -> bool:
    """True if a recorded gap of the conversation missed ``sequence``."""
    row = conn.execute(
        "SELECT 1 FROM convhook_inbox_gaps WHERE conversation_id = ? AND kind = 'gap' "
        "AND after_sequence < ? AND before_sequence > ? LIMIT 1",
        (conversation_id, sequence, sequence),
    ).fetchone()
    return row is not None


def gaps(
    conn: Connection, status: str | None, limit: int, conversation_id: str | None
) -> list[Gap]:
    """Recorded gaps, newest first."""
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if conversation_id is not None:
        where.append("conversation_id = ?")
        params.append(conversation_id)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = conn.execute(
        f"SELECT {_GAP_COLUMNS} FROM convhook_inbox_gaps {clause}ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [_gap(r) for r in rows]


def gaps_of(conn: Connection, event_ids: list[str]) -> list[Gap]:
    """The gaps revealed by these events."""
    if not event_ids:
        return []
    marks = ", ".join("?" * len(event_ids))
    rows = conn.execute(
        f"SELECT {_GAP_COLUMNS} FROM convhook_inbox_gaps WHERE event_id IN ({marks})", event_ids
    )
    return [_gap(r) for r in rows]


def gap_counts(conn: Connection) -> dict[str, int]:
    """Gaps per status, and out-of-order events under ``out_of_order``."""
    rows = conn.execute(
        "SELECT kind, status, count(*) FROM convhook_inbox_gaps GROUP BY kind, status"
    )
    counts: dict[str, int] = {}
    for kind, status, n in rows:
        key = status if kind == GapKind.GAP.value else kind
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def _gap(row: Any) -> Gap:
    return Gap(
        event_id=row[0],
        conversation_id=row[1],
        kind=GapKind(row[2]),
        after_sequence=row[3],
        before_sequence=row[4],
        status=GapStatus(row[5]),
        reason=row[6],
        filled=row[7],
        attempts=row[8],
        detected_at=row[9],
        resolved_at=row[10],
    )
