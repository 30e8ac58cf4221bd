"""The dispatcher's writes as operations of a :class:`~convhook.store.engine.writer_process.WriterProcess`.

Claims and results cross the process boundary as flat tuples (msgpack arrays): a result
carries only what :func:`~convhook.store.delivery.deliveries.record` reads, not the event body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convhook.retry import Verdict
from convhook.store.delivery.deliveries import Claim, Result, claim, record

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
    )


def claim_of(row: Sequence[Any]) -> Claim:
    delivery_id, event_id, event_type, endpoint_id, conversation, url, body, *rest = row
    secrets, attempts, rate_limit, owner, max_in_flight = rest
    # msgpack gives the secrets back as a list.
    return Claim(
        delivery_id,
        event_id,
        event_type,
        endpoint_id,
        conversation,
        url,
        body,
        tuple(secrets),
        attempts,
        rate_limit,
        owner,
        max_in_flight,
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


def claim_op(conn: Any, owner: str, now: int, lease_ms: int, limit: int) -> list[ClaimRow]:
    return [claim_row(c) for c in claim(conn, owner, now, lease_ms, limit)]


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
