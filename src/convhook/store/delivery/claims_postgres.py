"""Claiming due deliveries on PostgreSQL, where many dispatcher processes claim at once.

SQLite runs one write transaction at a time, so its claim (:func:`.claims.claim_sqlite`) never
races. Here claims by other processes interleave under READ COMMITTED, and two guarantees must
hold across processes: a conversation's next event is not leased while an earlier one is
pending or in flight, and an endpoint never has more than LEASE_FACTOR times its
``max_in_flight`` leased.

A claim is two statements (two round trips) inside the caller's transaction:

1. ``_LOCK``: expired leases go back to pending (``SKIP LOCKED``: a row another claimer is
   resetting is left to it); a lock-free scan finds due deliveries whose conversation has
   nothing earlier pending, skipping endpoints already full by an unlocked count; the
   endpoints of those rows (and of the reset ones) are locked ``FOR NO KEY UPDATE``, in id
   order so claimers never deadlock each other (it does not block the foreign-key checks of
   new deliveries), and returned with what sending needs. This serialises claims per
   endpoint.
2. ``_LEASE``: a new statement, so a fresh snapshot taken under those locks: it includes every
   lease committed by a claimer that held a lock before. It counts each locked endpoint's
   leases, scans its due deliveries (order checked again in this snapshot), numbers them per
   endpoint, keeps those within the endpoint's room, locks them with ``SKIP LOCKED`` (never
   waiting on a row another transaction holds, which could deadlock against its endpoint
   lock; a row leased meanwhile is no longer pending and drops out), leases them and returns
   them with their bodies. Skipped rows only make the claim smaller, never the limits looser.

The per-statement snapshot is why the count cannot join the first statement: a statement's
snapshot predates the locks it waits for.
"""

from __future__ import annotations

from convhook.store.delivery.claims import (
    LEASE_FACTOR,
    TARGET_COLUMNS,
    Claim,
    claims_of,
    targets,
)
from convhook.store.engine.connection import Connection

# An endpoint's lease room is LEASE_FACTOR times its in-flight cap; the cap of a rate-limited
# endpoint is its rate (at least 1), as in claims._cap.
_LEASES = (
    f"{LEASE_FACTOR} * CASE WHEN e.rate_limit IS NULL THEN e.max_in_flight "
    "ELSE GREATEST(1, LEAST(e.max_in_flight, CAST(trunc(e.rate_limit) AS INTEGER))) END"
)

_ORDERED = """NOT EXISTS (
    SELECT 1 FROM deliveries AS p
    WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
      AND p.status IN ('pending', 'delivering') AND p.conversation_seq < d.conversation_seq)"""

_LOCK = f"""
WITH reset AS (
    UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
    WHERE id IN (SELECT id FROM deliveries
                 WHERE status = 'delivering' AND lease_expires_at <= :now
                 FOR UPDATE SKIP LOCKED)
    RETURNING endpoint_id
),
saturated AS MATERIALIZED (
    SELECT f.endpoint_id FROM deliveries AS f JOIN endpoints AS e ON e.id = f.endpoint_id
    WHERE f.status = 'delivering'
    GROUP BY f.endpoint_id, e.max_in_flight, e.rate_limit
    HAVING count(*) >= {_LEASES}
),
due AS (
    SELECT d.endpoint_id
    FROM deliveries AS d
    WHERE d.status = 'pending' AND d.next_attempt_at <= :now
      AND d.endpoint_id NOT IN (SELECT endpoint_id FROM saturated)
      AND {_ORDERED}
    ORDER BY d.next_attempt_at, d.id
    LIMIT :scan
)
SELECT {TARGET_COLUMNS} FROM endpoints
WHERE enabled = 1
  AND id IN (SELECT endpoint_id FROM due UNION SELECT endpoint_id FROM reset)
ORDER BY id
FOR NO KEY UPDATE
"""

_LEASE = f"""
WITH room AS MATERIALIZED (
    SELECT r.id, r.leases - (SELECT count(*) FROM deliveries AS f
                             WHERE f.endpoint_id = r.id AND f.status = 'delivering') AS room
    FROM unnest(CAST(:ids AS TEXT[]), CAST(:leases AS INTEGER[])) AS r (id, leases)
),
due AS (
    SELECT d.id, d.endpoint_id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.endpoint_id
                              ORDER BY d.next_attempt_at, d.id) AS rank
    FROM (SELECT d.id, d.endpoint_id, d.next_attempt_at FROM deliveries AS d
          WHERE d.status = 'pending' AND d.next_attempt_at <= :now
            AND d.endpoint_id IN (SELECT id FROM room) AND {_ORDERED}
          ORDER BY d.next_attempt_at, d.id
          LIMIT :scan) AS d
),
picked AS (
    SELECT due.id FROM due JOIN room ON room.id = due.endpoint_id
    WHERE due.rank <= room.room
    ORDER BY due.next_attempt_at, due.id
    LIMIT :limit
),
locked AS (
    SELECT id FROM deliveries
    WHERE id IN (SELECT id FROM picked) AND status = 'pending'
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
SET status = 'delivering', lease_owner = :owner, lease_expires_at = :until
FROM locked
WHERE d.id = locked.id
RETURNING d.id, d.event_id, d.event_type, d.endpoint_id, d.conversation_id, d.attempts,
          d.event_seq, d.next_attempt_at,
          coalesce(d.body, (SELECT ev.body FROM events AS ev WHERE ev.seq = d.event_seq)) AS body
"""


def claim_postgres(
    conn: Connection, owner: str, now: int, lease_ms: int, limit: int
) -> list[Claim]:
    """Lease up to ``limit`` due deliveries, keeping per-conversation order and per-endpoint
    limits across every process claiming from this database."""
    caps = targets(conn.execute(_LOCK, {"now": now, "scan": limit * 2}).fetchall())
    if not caps:
        return []
    ids = list(caps)
    leases = [caps[i].leases for i in ids]
    params = {
        "ids": ids,
        "leases": leases,
        "now": now,
        "scan": min(limit * 2, sum(leases)),
        "limit": limit,
        "owner": owner,
        "until": now + lease_ms,
    }
    leased = conn.execute(_LEASE, params).fetchall()
    if not leased:
        return []
    chosen = [r["id"] for r in sorted(leased, key=lambda r: (r["next_attempt_at"], r["id"]))]
    return claims_of(conn, leased, chosen, caps, owner, now)
