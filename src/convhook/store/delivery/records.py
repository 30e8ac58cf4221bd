"""Moving deliveries on: record attempts (then claim more), redeliver, recover, test events.

Status moves ``pending -> delivering -> delivered | pending (retry) | failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from convhook.events import OperationalEventType
from convhook.retry import Verdict
from convhook.store.delivery import operational
from convhook.store.delivery.dialect import in_list, is_sqlite, list_param, notify
from convhook.store.delivery.endpoints import fail_pending
from convhook.store.engine.arrays import number_array, text_array
from convhook.store.engine.connection import Connection


class Status:
    """Delivery statuses as stored."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


# A struct, not a dataclass: one is built per attempt, and it crosses to the SQLite writer
# process as it is. It names its claim by id only: recording reads nothing else of it, and
# the claim's body would be most of the bytes sent.
class Result(msgspec.Struct, array_like=True, gc=False):
    """The outcome of one attempt of a claimed delivery, ready to record."""

    delivery_id: int
    endpoint_id: str
    lease_owner: str
    attempted_at: int
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str
    verdict: Verdict
    next_attempt_at: int = 0


def record(conn: Connection, results: Sequence[Result], now: int, disable_cutoff: int) -> list[str]:
    """Store attempts and move deliveries on; return the ids of endpoints this disabled (an
    endpoint failing without a success since ``disable_cutoff`` or earlier, or gone)."""
    with conn.pipeline():
        record_outcomes(conn, results, now)
    return record_failures(conn, results, now, disable_cutoff)


def record_outcomes(conn: Connection, results: Sequence[Result], now: int) -> None:
    """Store each attempt, move its delivery on, and for the endpoints that succeeded after
    failing record ``endpoint.recovered`` and clear ``failing_since``: statements whose answers
    are not read, so a pipeline sends them at once."""
    _record_rows(conn, results, now)
    succeeded = sorted({r.endpoint_id for r in results if r.verdict is Verdict.DELIVERED})
    if succeeded:
        # Endpoint rows are locked in id order: on PostgreSQL other dispatchers lock them too.
        operational.record_recovered(conn, succeeded, now)
        conn.executemany(operational.RECOVERED_SET, [(e,) for e in succeeded])


def all_delivered(results: Sequence[Result]) -> bool:
    """Whether :func:`record_failures` has nothing to do for ``results``."""
    return all(r.verdict is Verdict.DELIVERED for r in results)


def record_failures(
    conn: Connection, results: Sequence[Result], now: int, disable_cutoff: int
) -> list[str]:
    """After :func:`record_outcomes`: record ``delivery.failed`` for the deliveries that ended
    failed, note when failing endpoints started failing and disable those failing since
    ``disable_cutoff`` or earlier, or gone; return the ids disabled."""
    disabled: list[str] = []
    if all_delivered(results):
        return disabled
    succeeded = {r.endpoint_id for r in results if r.verdict is Verdict.DELIVERED}
    failing: dict[str, int] = {}
    gone: set[str] = set()
    for r in results:
        if r.verdict is Verdict.GONE:
            gone.add(r.endpoint_id)
        elif r.verdict is not Verdict.DELIVERED and r.endpoint_id not in succeeded:
            failing.setdefault(r.endpoint_id, r.attempted_at)
    ended = operational.ended_failed(
        conn, [(r.delivery_id, r.attempted_at) for r in results if r.verdict in _ENDED_FAILED]
    )
    # Endpoint rows are locked in id order (see record_outcomes); each delivery's failure is
    # told before its endpoint's disabling, which it may cause.
    for endpoint in sorted(gone | set(failing) | set(ended)):
        for row in ended.get(endpoint, ()):
            operational.delivery_failed(conn, row, now)
        if endpoint in gone:
            if _disable(conn, endpoint, now, "the receiver answered 410 Gone"):
                disabled.append(endpoint)
            continue
        since = failing.get(endpoint)
        if since is None:
            continue
        conn.execute(
            "UPDATE endpoints SET failing_since = ? WHERE id = ? AND failing_since IS NULL",
            (since, endpoint),
        )
        row = conn.execute(
            "SELECT failing_since FROM endpoints WHERE id = ? AND enabled = 1", (endpoint,)
        ).fetchone()
        if row is None or row[0] > disable_cutoff:
            continue
        reason = f"failing without a success for {(now - disable_cutoff) // 3_600_000} h"
        if _disable(conn, endpoint, now, reason):
            disabled.append(endpoint)
    return disabled


def _outcome_row(r: Result, now: int) -> tuple[Any, ...]:
    """The delivery's new columns after attempt ``r``, in ``_UPDATE_DELIVERY`` order."""
    return (
        _STATUS[r.verdict],
        r.next_attempt_at if r.verdict is Verdict.RETRY else r.attempted_at,
        r.status_code,
        r.error,
        r.attempted_at,
        r.attempted_at if r.verdict is Verdict.DELIVERED else None,
        now,
        r.delivery_id,
        r.lease_owner,
    )


_UPDATE_DELIVERY = (
    "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, "
    "lease_owner = NULL, lease_expires_at = NULL, last_status_code = ?, last_error = ?, "
    "last_attempt_at = ?, delivered_at = ?, updated_at = ? "
    "WHERE id = ? AND status = 'delivering' AND lease_owner = ?"
)


def _record_rows(conn: Connection, results: Sequence[Result], now: int) -> None:
    """Store each attempt and move its delivery on."""
    if not is_sqlite(conn):
        _record_rows_postgres(conn, results, now)
        return
    conn.executemany(
        # An endpoint deleted while its request ran took the delivery with it: skip those.
        "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, error, "
        "response_body) SELECT ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?)",
        [
            (
                r.delivery_id,
                r.attempted_at,
                r.status_code,
                r.latency_ms,
                r.error,
                r.response_body,
                r.delivery_id,
            )
            for r in results
        ],
    )
    conn.executemany(_UPDATE_DELIVERY, [_outcome_row(r, now) for r in results])


# PostgreSQL takes a batch as arrays, one statement each: row by row, executing the
# statements cost the server more than the rest of a flush (claim included).
_INSERT_ATTEMPTS = """
INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, error, response_body)
SELECT a.delivery_id, a.attempted_at, a.status_code, a.latency_ms, a.error, a.response_body
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:at AS BIGINT[]), CAST(:codes AS INTEGER[]),
            CAST(:latencies AS DOUBLE PRECISION[]), CAST(:errors AS TEXT[]),
            CAST(:bodies AS TEXT[]))
     WITH ORDINALITY AS a (delivery_id, attempted_at, status_code, latency_ms, error,
                           response_body, n)
WHERE EXISTS (SELECT 1 FROM deliveries AS d WHERE d.id = a.delivery_id)
ORDER BY a.n
"""

_UPDATE_DELIVERIES = """
UPDATE deliveries AS d
SET status = u.status, attempts = d.attempts + 1, next_attempt_at = u.next_attempt_at,
    lease_owner = NULL, lease_expires_at = NULL, last_status_code = u.status_code,
    last_error = u.error, last_attempt_at = u.attempted_at, delivered_at = u.delivered_at,
    updated_at = :now
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:statuses AS TEXT[]), CAST(:next AS BIGINT[]),
            CAST(:codes AS INTEGER[]), CAST(:errors AS TEXT[]), CAST(:at AS BIGINT[]),
            CAST(:delivered AS BIGINT[]), CAST(:owners AS TEXT[]))
     AS u (id, status, next_attempt_at, status_code, error, attempted_at, delivered_at, owner)
WHERE d.id = u.id AND d.status = 'delivering' AND d.lease_owner = u.owner
"""


def _record_rows_postgres(conn: Connection, results: Sequence[Result], now: int) -> None:
    ids = number_array(r.delivery_id for r in results)
    at = number_array(r.attempted_at for r in results)
    codes = number_array(r.status_code for r in results)
    errors = text_array(r.error for r in results)
    conn.execute(
        _INSERT_ATTEMPTS,
        {
            "ids": ids,
            "at": at,
            "codes": codes,
            "latencies": number_array(r.latency_ms for r in results),
            "errors": errors,
            "bodies": text_array(r.response_body for r in results),
        },
    )
    rows = [_outcome_row(r, now) for r in results]
    conn.execute(
        _UPDATE_DELIVERIES,
        {
            "ids": ids,
            "statuses": text_array(row[0] for row in rows),
            "next": number_array(row[1] for row in rows),
            "codes": codes,
            "errors": errors,
            "at": at,
            "delivered": number_array(row[5] for row in rows),
            "owners": text_array(r.lease_owner for r in results),
            "now": now,
        },
    )


_STATUS = {
    Verdict.DELIVERED: Status.DELIVERED,
    Verdict.RETRY: Status.PENDING,
    Verdict.FAILED: Status.FAILED,
    Verdict.GONE: Status.FAILED,
}


_ENDED_FAILED = (Verdict.FAILED, Verdict.GONE)


def _disable(conn: Connection, endpoint_id: str, now: int, reason: str) -> bool:
    cur = conn.execute(
        "UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? "
        "WHERE id = ? AND enabled = 1",
        (reason, now, endpoint_id),
    )
    if not cur.rowcount:
        return False
    # Its waiting deliveries fail with it; endpoint.disabled tells of them all, so none of
    # them gets a delivery.failed of its own.
    fail_pending(conn, endpoint_id, now, f"endpoint disabled: {reason}")
    operational.endpoint_changed(conn, OperationalEventType.ENDPOINT_DISABLED, endpoint_id, now)
    return True


def enqueue_test(
    conn: Connection,
    workspace_id: str,
    endpoint_id: str,
    event_id: str,
    event_type: str,
    body: bytes,
    now: int,
    conversation_id: str,
) -> int:
    """Queue a test event for one endpoint (its body inline, outside the events table), filed
    under the sample conversation its body names: what the receiver sees."""
    row = conn.execute(
        "INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id, "
        "conversation_seq, event_type, body, next_attempt_at, created_at, updated_at) "
        "VALUES (NULL, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?) RETURNING id",
        (
            event_id,
            endpoint_id,
            workspace_id,
            conversation_id,
            event_type,
            body.decode(),
            now,
            now,
            now,
        ),
    ).fetchone()
    notify(conn)
    return int(row[0])


# The retention job empties the body of old, finished events: those cannot be sent again.
_LIVE = (
    "NOT EXISTS (SELECT 1 FROM events AS pruned WHERE pruned.seq = deliveries.event_seq "
    "AND pruned.body = '')"
)


def redeliver(
    conn: Connection,
    workspace_id: str,
    event_id: str,
    endpoint_ids: list[str] | None,
    now: int,
) -> int:
    """Send an event again (to the given endpoints, or all it went to); return how many."""
    params: tuple[Any, ...] = (now, now, event_id, workspace_id)
    only = ""
    if endpoint_ids is not None:
        only = f"AND {in_list(conn, 'endpoint_id')} "
        params = (*params, list_param(conn, endpoint_ids))
    cur = conn.execute(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
        "updated_at = ? WHERE event_id = ? AND workspace_id = ? AND status != 'delivering' "
        f"{only}AND " + _LIVE,
        params,
    )
    count = cur.rowcount
    # An endpoint created after the event never had a delivery for it: create one.
    if endpoint_ids is not None:
        count += conn.execute(
            "INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, "
            "conversation_id, conversation_seq, event_type, next_attempt_at, created_at, "
            "updated_at) SELECT ev.seq, ev.id, e.id, ev.workspace_id, ev.conversation_id, "
            "ev.conversation_seq, ev.event_type, ?, ?, ? FROM events AS ev JOIN endpoints AS e "
            "ON e.workspace_id = ev.workspace_id WHERE ev.id = ? AND ev.workspace_id = ? "
            f"AND ev.body <> '' AND {in_list(conn, 'e.id')} ON CONFLICT DO NOTHING",
            (now, now, now, event_id, workspace_id, list_param(conn, endpoint_ids)),
        ).rowcount
    if count:
        notify(conn)
    return count


def recover(conn: Connection, workspace_id: str, endpoint_id: str, since: int, now: int) -> int:
    """Retry every failed delivery of an endpoint created at or after ``since``."""
    cur = conn.execute(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
        "updated_at = ? WHERE endpoint_id = ? AND workspace_id = ? AND status = 'failed' "
        "AND created_at >= ? AND " + _LIVE,
        (now, now, endpoint_id, workspace_id, since),
    )
    if cur.rowcount:
        notify(conn)
    return cur.rowcount
