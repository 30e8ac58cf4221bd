"""Claiming due deliveries on PostgreSQL, where many dispatcher processes claim at once.

SQLite runs one write transaction at a time, so its claim (:func:`.deliveries.claim`) never
races. Here claims by other processes interleave under READ COMMITTED, and two guarantees must
hold across processes: a conversation's next event is not leased while an earlier one is
pending or in flight, and an endpoint never has more than twice its ``max_in_flight`` leased.

1. Expired leases go back to pending (``SKIP LOCKED``: a row another claimer is resetting is
   left to it), so a dead dispatcher's deliveries are sent again.
2. A first, lock-free scan finds due deliveries whose conversation has nothing earlier pending.
3. The endpoints of those rows are locked (``FOR NO KEY UPDATE``, in id order so claimers
   never deadlock each other; it does not block the foreign-key checks of new deliveries).
   This serialises claims per endpoint: the in-flight count taken next, in a fresh snapshot,
   includes every lease committed by a claimer that held the lock before.
4. The scanned rows still pending are locked with ``SKIP LOCKED`` (never waiting on a row
   another transaction holds, which could deadlock against its endpoint lock) and leased up
   to each endpoint's room. A row leased by another claimer meanwhile is no longer pending
   and drops out; a later event of its conversation was not scanned while it was pending.
"""

from __future__ import annotations

from typing import Any

from convhook.store.deliveries import Claim, claims_of, endpoints_of

_RESET = """
UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL
WHERE id IN (SELECT id FROM deliveries WHERE status = 'delivering' AND lease_expires_at <= :now
             FOR UPDATE SKIP LOCKED)
"""

_IN_FLIGHT = """
SELECT endpoint_id, count(*) FROM deliveries
WHERE status = 'delivering' AND (CAST(:only AS TEXT[]) IS NULL OR endpoint_id = ANY(:only))
GROUP BY endpoint_id
"""

_SCAN = """
SELECT d.id, d.endpoint_id
FROM deliveries AS d
JOIN endpoints AS e ON e.id = d.endpoint_id
WHERE d.status = 'pending' AND d.next_attempt_at <= :now AND e.enabled = 1
  AND d.endpoint_id <> ALL(CAST(:full AS TEXT[]))
  AND NOT EXISTS (
    SELECT 1 FROM deliveries AS p
    WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
      AND p.status IN ('pending', 'delivering') AND p.conversation_seq < d.conversation_seq)
ORDER BY d.next_attempt_at, d.id
LIMIT :scan
"""

_LOCK_ENDPOINTS = """
SELECT id FROM endpoints WHERE id = ANY(CAST(:ids AS TEXT[])) AND enabled = 1
ORDER BY id FOR NO KEY UPDATE
"""

_LOCK_ROWS = """
SELECT id FROM deliveries WHERE id = ANY(CAST(:ids AS BIGINT[])) AND status = 'pending'
FOR UPDATE SKIP LOCKED
"""

_LEASE = """
UPDATE deliveries SET status = 'delivering', lease_owner = :owner, lease_expires_at = :until
WHERE id = ANY(CAST(:ids AS BIGINT[]))
RETURNING id, event_id, event_type, endpoint_id, conversation_id, attempts, event_seq, body
"""


def _in_flight(conn: Any, only: list[str] | None) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute(_IN_FLIGHT, {"only": only}).fetchall()}


def claim_postgres(conn: Any, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries, keeping per-conversation order and per-endpoint
    limits across every process claiming from this database."""
    conn.execute(_RESET, {"now": now})
    # Unlocked counts, only to skip endpoints that are certainly full in the scan.
    estimate = _in_flight(conn, None)
    caps = endpoints_of(conn, estimate)
    full = [ep for ep, n in estimate.items() if ep in caps and n >= caps[ep].leases]
    scanned = conn.execute(_SCAN, {"now": now, "full": full, "scan": limit * 2}).fetchall()
    if not scanned:
        return []
    wanted = sorted({row[1] for row in scanned})
    locked = [r[0] for r in conn.execute(_LOCK_ENDPOINTS, {"ids": wanted}).fetchall()]
    if not locked:
        return []
    caps.update(endpoints_of(conn, set(locked) - caps.keys()))
    in_flight = _in_flight(conn, locked)  # a fresh snapshot, taken under the endpoint locks
    mine = set(locked)
    candidates = [row[0] for row in scanned if row[1] in mine]
    still = {r[0] for r in conn.execute(_LOCK_ROWS, {"ids": candidates}).fetchall()}
    chosen: list[int] = []
    for delivery_id, endpoint in scanned:
        if len(chosen) >= limit:
            break
        if delivery_id in still and in_flight.get(endpoint, 0) < caps[endpoint].leases:
            in_flight[endpoint] = in_flight.get(endpoint, 0) + 1
            chosen.append(delivery_id)
    if not chosen:
        return []
    leased = conn.execute(
        _LEASE, {"owner": owner, "until": now + lease_ms, "ids": chosen}
    ).fetchall()
    return claims_of(conn, leased, chosen, caps, owner, now)
