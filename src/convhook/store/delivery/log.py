"""Reading the delivery log: deliveries, their attempts, and the backlog for metrics."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from convhook.store.delivery.dialect import indexed_by, is_sqlite
from convhook.store.engine.connection import Connection

_DELIVERY = (
    "id, event_id, endpoint_id, event_type, conversation_id, status, attempts, "
    "next_attempt_at, last_status_code, last_error, last_attempt_at, delivered_at, created_at"
)


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt as recorded."""

    id: int
    delivery_id: int
    attempted_at: int
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str


@dataclass(frozen=True)
class Delivery:
    """One (event, endpoint) pair and where it stands; ``attempt_log`` when asked for."""

    id: int
    event_id: str
    endpoint_id: str
    event_type: str
    conversation_id: str
    status: str
    attempts: int
    next_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: int | None
    delivered_at: int | None
    created_at: int
    attempt_log: tuple[Attempt, ...] = ()


def _delivery(row: Any, attempts: tuple[Attempt, ...] = ()) -> Delivery:
    waiting = row["status"] in ("pending", "delivering")
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        conversation_id=row["conversation_id"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if waiting else None,
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_attempt_at=row["last_attempt_at"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
        attempt_log=attempts,
    )


def attempts_of(conn: Connection, delivery_id: int) -> tuple[Attempt, ...]:
    """Every attempt of one delivery, oldest first."""
    rows = conn.execute(
        "SELECT id, delivery_id, attempted_at, status_code, latency_ms, error, response_body "
        "FROM attempts WHERE delivery_id = ? ORDER BY id",
        (delivery_id,),
    ).fetchall()
    return tuple(Attempt(*r) for r in rows)


def of_endpoint(
    conn: Connection,
    workspace_id: str,
    endpoint_id: str,
    status: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[Delivery]:
    """An endpoint's deliveries, newest first, ``limit`` at a time before id ``before``."""
    if status is not None and status not in _STATUSES:
        return []
    rows = conn.execute(
        f"SELECT {_DELIVERY} FROM deliveries WHERE endpoint_id = ? AND workspace_id = ? "
        f"{_status_terms(status)} AND id < ? ORDER BY id DESC LIMIT ?",
        (endpoint_id, workspace_id, before or 2**62, limit),
    ).fetchall()
    return [_delivery(r) for r in rows]


_STATUSES = ("pending", "delivering", "delivered", "failed")


def _status_terms(status: str | None) -> str:
    # The status is written into the SQL (it is one of _STATUSES) rather than bound: neither
    # planner can use a partial index for a bound value (PostgreSQL's cached generic plans,
    # SQLite always), and SQLite matches a partial index only by the literal term of its
    # WHERE, hence the repeated IN term of deliveries_order for the backlog statuses.
    if status is None:
        return ""
    if status in ("pending", "delivering"):
        return f"AND status = '{status}' AND status IN ('pending', 'delivering')"
    return f"AND status = '{status}'"


def of_event(conn: Connection, workspace_id: str, event_id: str) -> list[Delivery]:
    """Every delivery of one event, each with its attempts."""
    rows = conn.execute(
        f"SELECT {_DELIVERY} FROM deliveries WHERE event_id = ? AND workspace_id = ? ORDER BY id",
        (event_id, workspace_id),
    ).fetchall()
    return [_delivery(r, attempts_of(conn, r["id"])) for r in rows]


def get(conn: Connection, workspace_id: str, delivery_id: int) -> Delivery | None:
    """One delivery with its attempts, or ``None``."""
    row = conn.execute(
        f"SELECT {_DELIVERY} FROM deliveries WHERE id = ? AND workspace_id = ?",
        (delivery_id, workspace_id),
    ).fetchone()
    return _delivery(row, attempts_of(conn, delivery_id)) if row is not None else None


def event_known(conn: Connection, workspace_id: str, event_id: str) -> bool:
    """Whether the workspace recorded this event or queued a delivery of it (a test event)."""
    row = conn.execute(
        "SELECT 1 FROM events WHERE id = ? AND workspace_id = ? UNION ALL "
        "SELECT 1 FROM deliveries WHERE event_id = ? AND workspace_id = ? LIMIT 1",
        (event_id, workspace_id, event_id, workspace_id),
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class Backlog:
    """What waits, per endpoint, at one instant (for ``/metrics``).

    ``by_status`` is exact, except ``delivered`` on PostgreSQL tables above
    :data:`ESTIMATE_ABOVE` rows: it is estimated from the table's statistics there.
    """

    due: dict[str, int]
    in_flight: dict[str, int]
    oldest_pending_age_s: float
    events_recorded: int
    by_status: dict[str, int]


def backlog(conn: Connection, now: int) -> Backlog:
    """Count due and in-flight deliveries per endpoint and the age of the oldest pending one."""
    due = dict(
        conn.execute(
            f"SELECT endpoint_id, count(*) FROM deliveries {indexed_by(conn, 'deliveries_due')} "
            "WHERE status = 'pending' AND next_attempt_at <= ? GROUP BY endpoint_id",
            (now,),
        ).fetchall()
    )
    in_flight = dict(
        conn.execute(
            "SELECT endpoint_id, count(*) FROM deliveries "
            f"{indexed_by(conn, 'deliveries_leased')} WHERE status = 'delivering' GROUP BY endpoint_id"
        ).fetchall()
    )
    oldest = conn.execute(
        "SELECT min(created_at) FROM deliveries WHERE status IN ('pending', 'delivering')"
    ).fetchone()[0]
    recorded = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    # One count per status, each read from that status's partial index.
    by_status = {
        status: n
        for status, n in conn.execute(
            " UNION ALL ".join(
                f"SELECT '{s}', count(*) FROM deliveries WHERE status = '{s}'"
                for s in ("pending", "delivering", "failed")
            )
        ).fetchall()
        if n
    }
    delivered = _delivered(conn, sum(by_status.values()))
    if delivered:
        by_status["delivered"] = delivered
    return Backlog(
        due=due,
        in_flight=in_flight,
        oldest_pending_age_s=max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0,
        events_recorded=recorded,
        by_status=by_status,
    )


# Counting the delivered rows (nearly all of them) reads the whole table: 1.4 s per scrape on
# PostgreSQL and 5.5 s on SQLite at 10 M rows (bench/indexes.py). Above this many rows
# PostgreSQL reports its planner's estimate instead.
ESTIMATE_ABOVE = 1_000_000


def _delivered(conn: Connection, unfinished: int) -> int:
    """The number of delivered deliveries, given the exact number of the others."""
    if is_sqlite(conn):
        # An unfiltered count(*) is counted from the smallest index's pages without reading
        # rows (~50 ms at 10 M), and it is exact: the read runs in one snapshot.
        total: int = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        return total - unfinished
    tuples, pages, now_pages = conn.execute(
        "SELECT reltuples, relpages, pg_relation_size(oid) / "
        "current_setting('block_size')::int FROM pg_class WHERE oid = 'deliveries'::regclass"
    ).fetchone()
    if tuples >= ESTIMATE_ABOVE and pages > 0:
        # The table's row count as the planner estimates it (statistics scaled to the
        # table's current size), less the others.
        return max(0, int(tuples / pages * now_pages + 0.5) - unfinished)
    count: int = conn.execute(
        "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
    ).fetchone()[0]
    return count


@dataclass(frozen=True)
class AttemptLine:
    """One attempt with the delivery it belongs to (for ``convhook events tail``)."""

    id: int
    attempted_at: int
    event_id: str
    event_type: str
    endpoint_id: str
    workspace_id: str
    status_code: int | None
    latency_ms: float
    error: str | None
    delivery_status: str


def attempts_after(
    conn: Connection, after: int, workspace_id: str | None = None, limit: int = 500
) -> list[AttemptLine]:
    """Attempts with an id above ``after``, oldest first (optionally of one workspace)."""
    rows = conn.execute(
        "SELECT a.id, a.attempted_at, d.event_id, d.event_type, d.endpoint_id, d.workspace_id, "
        "a.status_code, a.latency_ms, a.error, d.status FROM attempts AS a "
        "JOIN deliveries AS d ON d.id = a.delivery_id WHERE a.id > ? "
        "AND (CAST(? AS TEXT) IS NULL OR d.workspace_id = ?) ORDER BY a.id LIMIT ?",
        (after, workspace_id, workspace_id, limit),
    ).fetchall()
    return [AttemptLine(*r) for r in rows]


def last_attempt_id(conn: Connection) -> int:
    """The id of the newest attempt (0 when there is none)."""
    value: int = conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()[0]
    return value


def attempt_ids_issued(conn: Connection) -> int:
    """The highest attempt id ever given out, deleted attempts included (an endpoint's
    deletion removes its attempts, the newest possibly): no stream position can be past it."""
    sql = (
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'attempts'), 0)"
        if is_sqlite(conn)
        else "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM attempts_id_seq"
    )
    value: int = conn.execute(sql).fetchone()[0]
    return value


@dataclass(frozen=True)
class StreamAttempt:
    """One attempt with its delivery, its number and whether a later one exists (for the
    live stream)."""

    id: int
    delivery_id: int
    attempted_at: int
    event_id: str
    event_type: str
    endpoint_id: str
    workspace_id: str
    conversation_id: str
    status_code: int | None
    latency_ms: float
    error: str | None
    delivery_status: str
    number: int
    """1 for a delivery's first attempt."""
    last: bool
    """No later attempt of the delivery is recorded."""


def stream_attempts_after(
    conn: Connection, after: int, workspace_id: str | None, upto: int | None, limit: int
) -> list[StreamAttempt]:
    """Attempts with an id above ``after`` (and at most ``upto``, when given), oldest first;
    of one workspace when ``workspace_id`` is given."""
    rows = conn.execute(
        "SELECT a.id, a.delivery_id, a.attempted_at, d.event_id, d.event_type, d.endpoint_id, "
        "d.workspace_id, d.conversation_id, a.status_code, a.latency_ms, a.error, d.status, "
        "(SELECT count(*) FROM attempts AS p WHERE p.delivery_id = a.delivery_id "
        "AND p.id <= a.id), "
        "NOT EXISTS (SELECT 1 FROM attempts AS n WHERE n.delivery_id = a.delivery_id "
        "AND n.id > a.id) "
        "FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id "
        "WHERE a.id > ? AND a.id <= ? AND (CAST(? AS TEXT) IS NULL OR d.workspace_id = ?) "
        "ORDER BY a.id LIMIT ?",
        (after, upto if upto is not None else 2**62, workspace_id, workspace_id, limit),
    ).fetchall()
    names = [f.name for f in fields(StreamAttempt)]
    return [StreamAttempt(**dict(zip(names, (*r[:13], bool(r[13])), strict=True))) for r in rows]
