"""Claiming due deliveries on PostgreSQL, where many dispatcher processes claim at once.

SQLite runs one write transaction at a time, so its claim (:func:`.claims.claim_sqlite`) never
races. Here claims by other processes interleave under READ COMMITTED, and two guarantees must
hold across processes: a conversation's next event is not leased while an earlier one is
pending or in flight, and an endpoint never has more than LEASE_FACTOR times its
``max_in_flight`` leased.

A claim is one call of the ``convhook_claim`` function (migration
sql/postgres/producer/0009_claim_fairness.sql), one round trip inside the caller's
transaction, which runs two statements:

1. Expired leases go back to pending; lock-free scans find due first attempts and due
   deliveries whose conversation has nothing earlier pending, skipping endpoints already full
   by an unlocked count; the endpoints of those rows are locked ``FOR NO KEY UPDATE`` in id
   order. This serialises claims per endpoint.
2. A new statement, so a fresh snapshot taken under those locks: it includes every lease
   committed by a claimer that held a lock before. It counts each locked endpoint's leases,
   leases the due deliveries within the endpoint's room, first attempts first up to
   :func:`~.claims.first_quota` of the claim and then in due order (``SKIP LOCKED``: never
   waiting on a row another transaction holds), and returns them with their bodies, their
   events' links and their endpoints.

The per-statement snapshot is why the count cannot join the first statement: a statement's
snapshot predates the locks it waits for. Sent with :func:`start_claim` and read with
:func:`claims_from`, a claim can share the round trip of the statements queued before it in a
pipeline (the flush's records, see :func:`.store.record_then_claim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convhook.store.delivery.claims import LEASE_FACTOR, Claim, first_quota, prepare, targets
from convhook.store.engine.connection import Connection, Cursor

_CLAIM = "SELECT * FROM convhook_claim(:owner, :now, :until, :limit, :factor, :first)"


def start_claim(conn: Connection, owner: str, now: int, lease_ms: int, limit: int) -> Cursor:
    """Send a claim of up to ``limit`` due deliveries (in a pipeline: queue it); its cursor
    is read with :func:`claims_from`."""
    params = {"owner": owner, "now": now, "until": now + lease_ms, "limit": limit}
    return conn.execute(_CLAIM, {**params, "factor": LEASE_FACTOR, "first": first_quota(limit)})


def claims_from(rows: Sequence[Any], owner: str, now: int) -> list[Claim]:
    """The rows of a claim as :class:`Claim` values, due first."""
    # Endpoint columns in targets()' order: id, url, secrets, rate limit, max_in_flight.
    caps = targets((r[3], r[8], r[9], r[10], r[11], r[12], r[13]) for r in rows)
    taken = []
    for row in sorted(rows, key=lambda r: (r[6], r[0])):
        ep = caps[row[3]]
        taken.append(
            Claim(
                row[0],
                row[1],
                row[2],
                ep.id,
                row[4],
                ep.url,
                (row[7] or "").encode(),
                ep.secrets(now),
                row[5],
                ep.rate_limit,
                owner,
                ep.cap,
                row[14],
                row[15],
                row[16],
            )
        )
    return prepare(taken, now)


def claim_postgres(
    conn: Connection, owner: str, now: int, lease_ms: int, limit: int
) -> list[Claim]:
    """Lease up to ``limit`` due deliveries, keeping per-conversation order and per-endpoint
    limits across every process claiming from this database."""
    return claims_from(start_claim(conn, owner, now, lease_ms, limit).fetchall(), owner, now)
