"""Claiming due deliveries: the :class:`Claim` a dispatcher sends, and SQLite's claim.

A delivery is one (event, endpoint) pair; the ``events_fan_out`` trigger creates them in the
event's own transaction. A claim is a lease: if the worker dies, the lease expires and the
delivery is pending again, so every event is delivered at least once. Per endpoint and
conversation the claim only takes the earliest undelivered event; a ``failed`` one no longer
blocks the rest. Due first attempts come first, up to a share of each claim, so one endpoint's
backlog of due retries does not hold fresh events back. SQLite's single writer claims here
(:func:`claim_sqlite`); PostgreSQL's concurrent claimers in :mod:`.claims_postgres`. Both
build their claims with :func:`claims_of`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from convhook.errors import SecretError
from convhook.signing import parsed_secrets, signature_header
from convhook.store.delivery.dialect import in_list, indexed_by, list_param
from convhook.store.engine.connection import Connection
from convhook.tracing import child_header


# A struct, not a dataclass: one is built per attempt, and it crosses to the SQLite writer
# process as it is (an array on the wire, no field names).
class Claim(msgspec.Struct, array_like=True, gc=False):
    """A leased delivery with everything needed to send it."""

    delivery_id: int
    event_id: str
    event_type: str
    endpoint_id: str
    conversation_id: str
    url: str
    body: bytes
    secrets: tuple[str, ...]
    attempts: int
    rate_limit: float | None
    lease_owner: str
    max_in_flight: int = 10
    # What the delivery headers carry besides the body: the event's position in its
    # conversation (0 for a test event), the conversation's event before it (None for its
    # first) and the W3C traceparent of the request that caused it (None when there was none).
    sequence: int = 0
    previous_event_id: str | None = None
    traceparent: str | None = None
    # Prepared by the writer (see prepare()), so the sending process does less per request:
    # the ``webhook-signature`` at ``signed_at`` (Unix seconds; empty when the secrets could
    # not be read) and the ``traceparent`` of the attempt's span.
    signed_at: int = 0
    signature: str = ""
    trace_header: str = ""

    def __repr__(self) -> str:
        # The body and the signing secrets never reach a log line.
        return (
            f"Claim(delivery_id={self.delivery_id}, event_id={self.event_id!r}, "
            f"endpoint_id={self.endpoint_id!r}, url={self.url!r}, attempts={self.attempts})"
        )


def prepare(claims: list[Claim], now: int) -> list[Claim]:
    """Sign each claim at ``now`` (ms) and pick its span's ``traceparent``, in the process
    that claims: with a writer process, that work leaves the process sending the requests,
    which is the dispatcher's busiest (the sender signs again when a claim waited long)."""
    signed_at = now // 1000
    for claim in claims:
        with contextlib.suppress(SecretError):  # unsigned: the sender tries, and says why not
            keys = parsed_secrets(claim.secrets)
            claim.signature = signature_header(keys, claim.event_id, signed_at, claim.body)
            claim.signed_at = signed_at
        claim.trace_header = child_header(claim.traceparent)
    return claims


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

# A claim takes first attempts before anything else, up to this share of its limit, then
# fills the rest in due order (retries, and more first attempts when no retry is due): one
# endpoint's backlog of due retries, all due before a fresh event, does not hold that event
# back (with 10,000 retries due elsewhere, fresh events' p99 went from 2.3-4 s to tens of ms:
# bench/dispatch.py --storm), and a flood of fresh events still leaves retries the rest. Any
# share takes the few fresh events a storm's claims see; half splits a claim evenly when both
# kinds are plentiful.
FIRST_SHARE = 0.5


def first_quota(limit: int) -> int:
    """How many of a claim of ``limit`` go to first attempts before anything else."""
    return math.ceil(limit * FIRST_SHARE)


# Read in pages from a keyset position: a claim limited by its endpoints' room reads about
# as many rows as it takes, not a fixed multiple of its limit. First attempts have an index of
# their own, so finding them never reads through the retries due before them.
_SCAN = """
SELECT d.id, d.endpoint_id, d.next_attempt_at
FROM deliveries AS d INDEXED BY {index}
JOIN endpoints AS e ON e.id = d.endpoint_id
WHERE d.status = 'pending' AND d.next_attempt_at <= :now AND e.enabled = 1{first}
  AND (d.next_attempt_at, d.id) > (:after_at, :after_id)
  AND d.endpoint_id NOT IN (SELECT value FROM json_each(:full))
  AND NOT EXISTS (
    SELECT 1 FROM deliveries AS p INDEXED BY deliveries_order
    WHERE p.endpoint_id = d.endpoint_id AND p.conversation_id = d.conversation_id
      AND p.status IN ('pending', 'delivering') AND p.conversation_seq < d.conversation_seq)
ORDER BY d.next_attempt_at, d.id
LIMIT :scan
"""
# Whether an endpoint outside :full has deliveries pending or in flight: the first endpoints
# in id order, one index seek each, until one is not full. The scans skip full endpoints' rows
# inside SQLite but still read them: with every endpoint full (one endpoint's backlog, the
# usual drain) a scan read the whole backlog to find nothing, 2.4 ms a claim at 20,000 due.
_OPEN = """
WITH RECURSIVE reached(endpoint_id) AS (
  SELECT min(endpoint_id) FROM deliveries INDEXED BY deliveries_order
  WHERE status IN ('pending', 'delivering')
  UNION ALL
  SELECT (SELECT min(d.endpoint_id) FROM deliveries AS d INDEXED BY deliveries_order
          WHERE d.status IN ('pending', 'delivering') AND d.endpoint_id > reached.endpoint_id)
  FROM reached WHERE reached.endpoint_id IN (SELECT value FROM json_each(:full))
)
SELECT 1 FROM reached
WHERE endpoint_id IS NOT NULL AND endpoint_id NOT IN (SELECT value FROM json_each(:full))
LIMIT 1
"""

_SCAN_FIRST = _SCAN.format(index="deliveries_first_due", first=" AND d.attempts = 0")
_SCAN_RETRIES = _SCAN.format(index="deliveries_retries_due", first=" AND d.attempts > 0")

_LEASE = """
UPDATE deliveries SET status = 'delivering', lease_owner = :owner, lease_expires_at = :until
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, event_id, event_type, endpoint_id, conversation_id, attempts, event_seq, body,
  conversation_seq
"""


def has_due(conn: Connection, now: int) -> bool:
    """Whether any delivery is due or any lease has expired (a read: takes no write lock)."""
    row = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM deliveries {indexed_by(conn, 'deliveries_due')} "
        "WHERE status = 'pending' AND next_attempt_at <= :now) OR EXISTS (SELECT 1 "
        f"FROM deliveries {indexed_by(conn, 'deliveries_leased')} WHERE status = 'delivering' "
        "AND lease_expires_at <= :now)",
        {"now": now},
    ).fetchone()
    return bool(row[0])


def claim_sqlite(conn: Connection, owner: str, now: int, lease_ms: int, limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries, first attempts first up to their share, then in
    due order, at most LEASE_FACTOR times each endpoint's in-flight cap (SQLite: the
    statements here use its JSON and ``INDEXED BY``)."""
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
    chosen: list[int] = []
    # Three scans, each of its own partial index, none reading a row another read: first
    # attempts up to their share, then retries, then first attempts again from where the
    # first scan stopped (with no retry due, the common case, the claim reads only fresh rows).
    stopped = _pick(conn, _SCAN_FIRST, now, caps, in_flight, chosen, first_quota(limit))
    _pick(conn, _SCAN_RETRIES, now, caps, in_flight, chosen, limit)
    _pick(conn, _SCAN_FIRST, now, caps, in_flight, chosen, limit, after=stopped)
    if not chosen:
        return []
    leased = conn.execute(
        _LEASE, {"owner": owner, "until": now + lease_ms, "ids": json.dumps(chosen)}
    ).fetchall()
    return claims_of(conn, leased, chosen, caps, owner, now)


def _pick(
    conn: Connection,
    scan: str,
    now: int,
    caps: dict[str, Target],
    in_flight: dict[str, int],
    chosen: list[int],
    limit: int,
    after: tuple[int, int] = (-1, -1),
) -> tuple[int, int]:
    """Add the deliveries ``scan`` finds after the keyset position ``after`` (due time,
    id), in its order, to ``chosen`` until it holds ``limit``, each while its endpoint has room
    (counted in ``in_flight``); the position of the last row it looked at."""
    wanted = limit - len(chosen)
    if wanted <= 0:
        return after
    full = [ep for ep, n in in_flight.items() if n >= caps[ep].leases]
    listed = json.dumps(full)
    if full and conn.execute(_OPEN, {"full": listed}).fetchone() is None:
        return after  # every endpoint with deliveries waiting is full
    # The first page is sized to the room known to be left (the usual case: the endpoints
    # being sent to). Another page is read only while the endpoints reached still have room,
    # at most _PAGES in all.
    room = sum(caps[ep].leases - n for ep, n in in_flight.items() if n < caps[ep].leases)
    page = min(wanted, max(_PAGE, room)) if room else wanted
    params = {
        "now": now,
        "full": listed,
        "scan": page,
        "after_at": after[0],
        "after_id": after[1],
    }
    position = after
    for _ in range(_PAGES):
        scanned = conn.execute(scan, params).fetchall()
        caps.update(_endpoints(conn, {row[1] for row in scanned} - caps.keys()))
        for delivery_id, endpoint, at in scanned:
            if len(chosen) >= limit:
                break
            position = (at, delivery_id)
            if in_flight.get(endpoint, 0) < caps[endpoint].leases:
                in_flight[endpoint] = in_flight.get(endpoint, 0) + 1
                chosen.append(delivery_id)
        seen = {row[1] for row in scanned}
        if len(chosen) >= limit or len(scanned) < page:
            break
        if all(in_flight.get(ep, 0) >= caps[ep].leases for ep in seen):
            break  # every endpoint this page reached is full now: the next page would be too
        params["after_id"], params["after_at"] = scanned[-1][0], scanned[-1][2]
        position = (scanned[-1][2], scanned[-1][0])
    return position


def claims_of(
    conn: Connection,
    leased: Sequence[Any],
    chosen: Sequence[int],
    caps: dict[str, Target],
    owner: str,
    now: int,
) -> list[Claim]:
    """The leased rows as :class:`Claim` values, in the order they were chosen."""
    events = _events(conn, [r["event_seq"] for r in leased if r["event_seq"] is not None])
    rank = {delivery_id: i for i, delivery_id in enumerate(chosen)}
    taken = []
    for row in sorted(leased, key=lambda r: rank[r["id"]]):
        ep = caps[row["endpoint_id"]]
        body, previous, traceparent = events.get(row["event_seq"], _INLINE)
        if row["body"] is not None:
            body = row["body"]
        taken.append(
            Claim(
                row["id"],
                row["event_id"],
                row["event_type"],
                ep.id,
                row["conversation_id"],
                ep.url,
                body.encode(),
                ep.secrets(now),
                row["attempts"],
                ep.rate_limit,
                owner,
                ep.cap,
                row["conversation_seq"],
                previous,
                traceparent,
            )
        )
    return prepare(taken, now)


@dataclass(frozen=True)
class Target:
    """What a claim needs of an endpoint: where to send, how to sign, how many at once."""

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


def targets(rows: Iterable[Any]) -> dict[str, Target]:
    """Endpoint rows selected as :data:`TARGET_COLUMNS`, by id."""
    return {r[0]: Target(r[0], r[1], r[2], r[3], r[4], r[5], _cap(r[6], r[5])) for r in rows}


def _endpoints(conn: Connection, ids: Iterable[str]) -> dict[str, Target]:
    rows = conn.execute(
        f"SELECT {TARGET_COLUMNS} FROM endpoints WHERE {in_list(conn, 'id')}",
        (list_param(conn, list(ids)),),
    ).fetchall()
    return targets(rows)


# A test event's delivery holds its body and links to no event.
_INLINE: tuple[str, str | None, str | None] = ("", None, None)


def _events(conn: Connection, seqs: list[int]) -> dict[int, tuple[str, str | None, str | None]]:
    # Each event's body, previous event id and traceparent, by seq.
    if not seqs:
        return {}
    rows = conn.execute(
        f"SELECT seq, body, previous_event_id, traceparent FROM events "
        f"WHERE {in_list(conn, 'seq')}",
        (list_param(conn, seqs),),
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _cap(max_in_flight: int, rate_limit: float | None) -> int:
    # A rate-limited endpoint holds no more leases than it may send in about a second, so a
    # lease never expires while its delivery waits for the rate limiter.
    if rate_limit is None:
        return max_in_flight
    return max(1, min(max_in_flight, int(rate_limit)))
