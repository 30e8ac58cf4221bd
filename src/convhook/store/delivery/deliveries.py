"""Deliveries in SQL: claim due work with a lease, record attempts, redeliver and recover.

A delivery is one (event, endpoint) pair; the ``events_fan_out`` trigger creates them in the
event's own transaction. Status moves ``pending -> delivering -> delivered | pending (retry)
| failed``. A claim is a lease: if the worker dies, the lease expires and the delivery is
pending again, so every event is delivered at least once. Per endpoint and conversation the
claim only takes the earliest undelivered event; a ``failed`` one no longer blocks the rest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from convhook.retry import Verdict
from convhook.store.delivery.endpoints import fail_pending


class Status:
    """Delivery statuses as stored."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"


# Not frozen: one is built per attempt, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class Claim:
    """A leased delivery with everything needed to send it."""

    delivery_id: int
    event_id: str
    event_type: str
    endpoint_id: str
    conversation_id: str
    url: str
    body: bytes = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    attempts: int
    rate_limit: float | None
    lease_owner: str
    max_in_flight: int = 10


# Not frozen: one is built per attempt, and a frozen dataclass sets each field through
# object.__setattr__.
@dataclass(slots=True)
class Result:
    """The outcome of one attempt of a claimed delivery, ready to record."""

    claim: Claim
    attempted_at: int
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str
    verdict: Verdict
    next_attempt_at: int = 0


# An endpoint's deliveries are leased up to this many times its request limit, so the next
# requests are ready to go as soon as one finishes instead of waiting for a commit (the
# dispatcher still sends at most the limit at once). Twice was too few once the writes left
# the dispatcher's process: a record-and-claim round trip includes an fsync, and with only
# one batch in hand the sender ran dry in between (measured: 63-66% of a bare client's rate
# at 2x, 69-77% at 4x, no better at 8x).
LEASE_FACTOR = 4

# Only ids are scanned: rows that a busy endpoint cannot take now are skipped cheaply.
_PAGE = 16
_PAGES = 8

# Read in pages from a keyset position: a claim limited by its endpoints' room reads about
# as many rows as it takes, not a fixed multiple of its limit.
_SCAN = """
SELECT d.id, d.endpoint_id, d.next_attempt_at
FROM deliveries AS d INDEXED BY deliveries_due
JOIN endpoints AS e ON e.id = d.endpoint_id
WHERE d.status = 'pending' AND d.next_attempt_at <= :now AND e.enabled = 1
  AND (d.next_attempt_at, d.id) > (:after_at, :after_id)
  AND d.endpoint_id NOT IN (SELECT value FROM json_each(:full))
  AND NOT EXISTS (
    SELECT 1 FROM deliveries AS p INDEXED BY deliveries_order
    WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
      AND p.status IN ('pending', 'delivering') AND p.conversation_seq < d.conversation_seq)
ORDER BY d.next_attempt_at, d.id
LIMIT :scan
"""

_LEASE = """
UPDATE deliveries SET status = 'delivering', lease_owner = :owner, lease_expires_at = :until
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, event_id, event_type, endpoint_id, conversation_id, attempts, event_seq, body
"""


def is_sqlite(conn: Any) -> bool:
    """Whether ``conn`` is SQLite's (the few statements that differ branch on this)."""
    return isinstance(conn, sqlite3.Connection)


def indexed_by(conn: Any, index: str) -> str:
    """SQLite's ``INDEXED BY`` hint (its planner needs it here); nothing on PostgreSQL."""
    return f"INDEXED BY {index}" if is_sqlite(conn) else ""


def notify(conn: Any) -> None:
    """Wake dispatchers in other processes (PostgreSQL NOTIFY, sent at commit)."""
    if not is_sqlite(conn):
        conn.execute("SELECT pg_notify('convhook_deliveries', '')")


def has_due(conn: Any, now: int) -> bool:
    """Whether any delivery is due or any lease has expired (a read: takes no write lock)."""
    row = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM deliveries {indexed_by(conn, 'deliveries_due')} "
        "WHERE status = 'pending' AND next_attempt_at <= :now) OR EXISTS (SELECT 1 "
        f"FROM deliveries {indexed_by(conn, 'deliveries_leased')} WHERE status = 'delivering' "
        "AND lease_expires_at <= :now)",
        {"now": now},
    ).fetchone()
    return bool(row[0])


def claim(conn: Any, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries in order, at most LEASE_FACTOR times each endpoint's
    in-flight cap."""
    if not is_sqlite(conn):
        from convhook.store.delivery.claims_postgres import claim_postgres

        return claim_postgres(conn, owner, now, lease_ms, limit)
    # SQLite has one writer at a time: the whole claim is serialised, nothing can interleave.
    # A crashed worker's leases come back first, so its deliveries are not lost.
    conn.execute(
        "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL "
        "WHERE status = 'delivering' AND lease_expires_at <= ?",
        (now,),
    )
    in_flight: dict[str, int] = dict(
        conn.execute(
            "SELECT endpoint_id, count(*) FROM deliveries INDEXED BY deliveries_leased "
            "WHERE status = 'delivering' GROUP BY endpoint_id"
        ).fetchall()
    )
    caps = _endpoints(conn, in_flight)
    full = [ep for ep, n in in_flight.items() if n >= caps[ep].leases]
    # The first page is sized to the room known to be left (the usual case: the endpoints
    # being sent to). Another page is read only while the endpoints reached still have room,
    # at most _PAGES in all.
    room = sum(caps[ep].leases - n for ep, n in in_flight.items() if n < caps[ep].leases)
    page = min(limit, max(_PAGE, room)) if room else limit
    params = {"now": now, "full": json.dumps(full), "scan": page, "after_at": -1, "after_id": -1}
    chosen: list[int] = []
    for _ in range(_PAGES):
        scanned = conn.execute(_SCAN, params).fetchall()
        caps.update(_endpoints(conn, {row[1] for row in scanned} - caps.keys()))
        for delivery_id, endpoint, _at in scanned:
            if len(chosen) >= limit:
                break
            if in_flight.get(endpoint, 0) < caps[endpoint].leases:
                in_flight[endpoint] = in_flight.get(endpoint, 0) + 1
                chosen.append(delivery_id)
        seen = {row[1] for row in scanned}
        if len(chosen) >= limit or len(scanned) < page:
            break
        if all(in_flight.get(ep, 0) >= caps[ep].leases for ep in seen):
            break  # every endpoint this page reached is full now: the next page would be too
        params["after_id"], params["after_at"] = scanned[-1][0], scanned[-1][2]
    if not chosen:
        return []
    leased = conn.execute(
        _LEASE, {"owner": owner, "until": now + lease_ms, "ids": json.dumps(chosen)}
    ).fetchall()
    return claims_of(conn, leased, chosen, caps, owner, now)


def claims_of(
    conn: Any,
    leased: Sequence[Any],
    chosen: Sequence[int],
    caps: dict[str, _Target],
    owner: str,
    now: int,
) -> list[Claim]:
    """The leased rows as :class:`Claim` values, in the order they were chosen."""
    bodies = _bodies(conn, [r["event_seq"] for r in leased if r["body"] is None])
    rank = {delivery_id: i for i, delivery_id in enumerate(chosen)}
    taken = []
    for row in sorted(leased, key=lambda r: rank[r["id"]]):
        ep = caps[row["endpoint_id"]]
        body = row["body"] if row["body"] is not None else bodies.get(row["event_seq"], "")
        taken.append(
            Claim(
                delivery_id=row["id"],
                event_id=row["event_id"],
                event_type=row["event_type"],
                endpoint_id=ep.id,
                conversation_id=row["conversation_id"],
                url=ep.url,
                body=body.encode(),
                secrets=ep.secrets(now),
                attempts=row["attempts"],
                rate_limit=ep.rate_limit,
                lease_owner=owner,
                max_in_flight=ep.cap,
            )
        )
    return taken


@dataclass(frozen=True)
class _Target:
    id: str
    url: str
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_until: int | None
    rate_limit: float | None
    cap: int

    @property
    def leases(self) -> int:
        return LEASE_FACTOR * self.cap

    def secrets(self, now: int) -> tuple[str, ...]:
        if self.previous_secret and (self.previous_until or 0) > now:
            return (self.secret, self.previous_secret)
        return (self.secret,)


# The endpoint columns a claim needs, in the order :func:`targets` reads them.
TARGET_COLUMNS = (
    "id, url, secret, previous_secret, previous_secret_expires_at, rate_limit, max_in_flight"
)


def targets(rows: Iterable[Any]) -> dict[str, _Target]:
    """Endpoint rows selected as :data:`TARGET_COLUMNS`, by id."""
    return {r[0]: _Target(r[0], r[1], r[2], r[3], r[4], r[5], _cap(r[6], r[5])) for r in rows}


def _endpoints(conn: Any, ids: Iterable[str]) -> dict[str, _Target]:
    rows = conn.execute(
        f"SELECT {TARGET_COLUMNS} FROM endpoints WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ).fetchall()
    return targets(rows)


def _bodies(conn: Any, seqs: list[int]) -> dict[int, str]:
    if not seqs:
        return {}
    if is_sqlite(conn):
        rows = conn.execute(
            "SELECT seq, body FROM events WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps(seqs),),
        ).fetchall()
    else:
        rows = conn.execute("SELECT seq, body FROM events WHERE seq = ANY(?)", (seqs,)).fetchall()
    return {r[0]: r[1] for r in rows}


def _cap(max_in_flight: int, rate_limit: float | None) -> int:
    # A rate-limited endpoint holds no more leases than it may send in about a second, so a
    # lease never expires while its delivery waits for the rate limiter.
    if rate_limit is None:
        return max_in_flight
    return max(1, min(max_in_flight, int(rate_limit)))


def record(
    conn: sqlite3.Connection, results: Sequence[Result], now: int, disable_after_ms: int
) -> list[str]:
    """Store attempts and move deliveries on; return the ids of endpoints this disabled."""
    disabled: list[str] = []
    _record_rows(conn, results, now)
    succeeded = {r.claim.endpoint_id for r in results if r.verdict is Verdict.DELIVERED}
    # Endpoint rows are locked in id order: on PostgreSQL other dispatchers lock them too.
    conn.executemany(
        "UPDATE endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL",
        [(e,) for e in sorted(succeeded)],
    )
    failing: dict[str, int] = {}
    for r in results:
        if r.verdict is Verdict.GONE:
            if _disable(conn, r.claim.endpoint_id, now, "the receiver answered 410 Gone"):
                disabled.append(r.claim.endpoint_id)
        elif r.verdict is not Verdict.DELIVERED and r.claim.endpoint_id not in succeeded:
            failing.setdefault(r.claim.endpoint_id, r.attempted_at)
    for endpoint, since in sorted(failing.items()):
        conn.execute(
            "UPDATE endpoints SET failing_since = ? WHERE id = ? AND failing_since IS NULL",
            (since, endpoint),
        )
        row = conn.execute(
            "SELECT failing_since FROM endpoints WHERE id = ? AND enabled = 1", (endpoint,)
        ).fetchone()
        if row is None or now - row[0] < disable_after_ms:
            continue
        reason = f"failing without a success for {disable_after_ms // 3_600_000} h"
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
        r.claim.delivery_id,
        r.claim.lease_owner,
    )


def _attempt_row(r: Result) -> tuple[Any, ...]:
    return (
        r.claim.delivery_id,
        r.attempted_at,
        r.status_code,
        r.latency_ms,
        r.error,
        r.response_body,
    )


_UPDATE_DELIVERY = (
    "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, "
    "lease_owner = NULL, lease_expires_at = NULL, last_status_code = ?, last_error = ?, "
    "last_attempt_at = ?, delivered_at = ?, updated_at = ? "
    "WHERE id = ? AND status = 'delivering' AND lease_owner = ?"
)


def _record_rows(conn: Any, results: Sequence[Result], now: int) -> None:
    """Store each attempt and move its delivery on."""
    conn.executemany(
        # An endpoint deleted while its request ran took the delivery with it: skip those.
        "INSERT INTO attempts (delivery_id, attempted_at, status_code, latency_ms, error, "
        "response_body) SELECT ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?)",
        [(*_attempt_row(r), r.claim.delivery_id) for r in results],
    )
    conn.executemany(_UPDATE_DELIVERY, [_outcome_row(r, now) for r in results])


_STATUS = {
    Verdict.DELIVERED: Status.DELIVERED,
    Verdict.RETRY: Status.PENDING,
    Verdict.FAILED: Status.FAILED,
    Verdict.GONE: Status.FAILED,
}


def _disable(conn: sqlite3.Connection, endpoint_id: str, now: int, reason: str) -> bool:
    cur = conn.execute(
        "UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? "
        "WHERE id = ? AND enabled = 1",
        (reason, now, endpoint_id),
    )
    if cur.rowcount:
        fail_pending(conn, endpoint_id, now, f"endpoint disabled: {reason}")
    return cur.rowcount > 0


def enqueue_test(
    conn: sqlite3.Connection,
    *,
    workspace_id: str,
    endpoint_id: str,
    event_id: str,
    event_type: str,
    body: bytes,
    now: int,
) -> int:
    """Queue a test event for one endpoint (its body inline, outside the events table)."""
    row = conn.execute(
        "INSERT INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, conversation_id, "
        "conversation_seq, event_type, body, next_attempt_at, created_at, updated_at) "
        "VALUES (NULL, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?) RETURNING id",
        (event_id, endpoint_id, workspace_id, event_id, event_type, body.decode(), now, now, now),
    ).fetchone()
    notify(conn)
    return int(row[0])


# The retention job empties the body of old, finished events: those cannot be sent again.
_LIVE = (
    "NOT EXISTS (SELECT 1 FROM events AS pruned WHERE pruned.seq = deliveries.event_seq "
    "AND pruned.body = '')"
)


def redeliver(
    conn: sqlite3.Connection,
    workspace_id: str,
    event_id: str,
    endpoint_ids: Iterable[str] | None,
    now: int,
) -> int:
    """Send an event again (to the given endpoints, or all it went to); return how many."""
    wanted = None if endpoint_ids is None else json.dumps(list(endpoint_ids))
    cur = conn.execute(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
        "updated_at = ? WHERE event_id = ? AND workspace_id = ? AND status != 'delivering' "
        "AND (CAST(? AS TEXT) IS NULL OR endpoint_id IN (SELECT value FROM json_each(?))) AND "
        + _LIVE,
        (now, now, event_id, workspace_id, wanted, wanted),
    )
    count = cur.rowcount
    # An endpoint created after the event never had a delivery for it: create one.
    if endpoint_ids is not None:
        count += conn.execute(
            "INSERT OR IGNORE INTO deliveries (event_seq, event_id, endpoint_id, workspace_id, "
            "conversation_id, conversation_seq, event_type, next_attempt_at, created_at, "
            "updated_at) SELECT ev.seq, ev.id, e.id, ev.workspace_id, ev.conversation_id, "
            "ev.conversation_seq, ev.event_type, ?, ?, ? FROM events AS ev JOIN endpoints AS e "
            "ON e.workspace_id = ev.workspace_id WHERE ev.id = ? AND ev.workspace_id = ? "
            "AND ev.body <> '' AND e.id IN (SELECT value FROM json_each(?))",
            (now, now, now, event_id, workspace_id, wanted),
        ).rowcount
    if count:
        notify(conn)
    return count


def recover(
    conn: sqlite3.Connection, workspace_id: str, endpoint_id: str, since: int, now: int
) -> int:
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
