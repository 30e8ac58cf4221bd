"""The dispatcher's writes as operations of a :class:`~convhook.store.writer_process.WriterProcess`.

Claims and results cross the process boundary as flat tuples (msgpack arrays): a result
carries only what :func:`~convhook.store.deliveries.record` reads, not the event body.

The child also signs each claim, with the claim's time as ``webhook-timestamp``: the HMAC of
the body is then computed beside the sending loop instead of on it (about 6% of that loop's
work per delivery, profiled). The sender uses the signature if the attempt starts within
:data:`~convhook.sender.PRESIGNED_FOR` seconds and signs afresh otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convhook.errors import SecretError
from convhook.retry import Verdict
from convhook.signing import Secret, signature_header
from convhook.store.deliveries import Claim, Result, claim, record

ClaimRow = tuple[Any, ...]
ResultRow = tuple[Any, ...]


def claim_row(c: Claim) -> ClaimRow:
    return (
        c.delivery_id,
        c.event_id,
        c.event_type,
        c.endpoint_id,
        c.conversation_id,
        c.url,
        c.body,
        c.secrets,
        c.attempts,
        c.rate_limit,
        c.lease_owner,
        c.max_in_flight,
        c.signed,
    )


def claim_of(row: Sequence[Any]) -> Claim:
    signed = row[12]
    return Claim(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        tuple(row[7]),
        row[8],
        row[9],
        row[10],
        row[11],
        (signed[0], signed[1]) if signed is not None else None,
    )


def result_row(r: Result) -> ResultRow:
    c = r.claim
    return (
        c.delivery_id,
        c.endpoint_id,
        c.lease_owner,
        r.attempted_at,
        r.status_code,
        r.latency_ms,
        r.error,
        r.response_body,
        r.verdict.value,
        r.next_attempt_at,
    )


def result_of(row: Sequence[Any]) -> Result:
    # Recording reads the delivery, endpoint and lease owner of a claim, nothing else of it.
    delivery_id, endpoint_id, owner, at, status, latency, error, body, verdict, next_at = row
    ref = Claim(delivery_id, "", "", endpoint_id, "", "", b"", (), 0, None, owner)
    return Result(ref, at, status, latency, error, body, Verdict(verdict), next_at)


# Parsed secrets by their whsec_ strings: endpoints reuse theirs, and a parsed secret keeps its
# HMAC pads hashed.
_parsed: dict[tuple[str, ...], tuple[Secret, ...]] = {}


def _secrets(texts: tuple[str, ...]) -> tuple[Secret, ...]:
    parsed = _parsed.get(texts)
    if parsed is None:
        if len(_parsed) > 10_000:
            _parsed.clear()
        parsed = _parsed[texts] = tuple(Secret.parse(t) for t in texts)
    return parsed


def claim_op(conn: Any, owner: str, now: int, lease_ms: int, limit: int) -> list[ClaimRow]:
    rows = []
    timestamp = now // 1000
    for c in claim(conn, owner, now, lease_ms, limit):
        try:
            signature = signature_header(_secrets(c.secrets), c.event_id, timestamp, c.body)
            c.signed = (timestamp, signature)
        except SecretError:
            # A damaged secret must not fail the whole claim (and every other endpoint's
            # deliveries with it): the sender meets it again and records a failed attempt.
            pass
        rows.append(claim_row(c))
    return rows


def record_op(
    conn: Any,
    rows: list[ResultRow],
    now: int,
    disable_ms: int,
    owner: str,
    lease_ms: int,
    limit: int,
) -> tuple[list[str], list[ClaimRow]]:
    """Record finished attempts, then claim up to ``limit`` more, in one transaction."""
    disabled = record(conn, [result_of(r) for r in rows], now, disable_ms) if rows else []
    claims = claim_op(conn, owner, now, lease_ms, limit) if limit else []
    return disabled, claims


OPS = {"claim": claim_op, "record": record_op}
