"""A dispatcher's flushes on PostgreSQL in few round trips, and claims held ahead of the
requests in flight (both engines)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.pq import Trace

from convhook.dispatcher import Dispatcher
from convhook.retry import Verdict
from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import Claim, DeliveryStore, Result
from convhook.store.delivery.claims_postgres import claim_postgres
from convhook.store.delivery.store import record_then_claim
from convhook.store.engine.database import Database
from convhook.store.engine.groupcommit import Job
from convhook.store.engine.postgres import PgConnection
from tests.support.delivery import (
    LIFECYCLE,
    Receiver,
    Reply,
    add_endpoint,
    add_workspace,
    record_event,
)
from tests.support.servers import serve_app


def _ms() -> int:
    return int(time.time() * 1000)


def _result(claim: Claim, verdict: Verdict, code: int | None, at: int) -> Result:
    return Result(
        claim.delivery_id,
        claim.endpoint_id,
        claim.lease_owner,
        at,
        code,
        2.5,
        None if code == 200 else f"answered {code}",
        f"body {claim.delivery_id}",
        verdict,
        at + 60_000 if verdict is Verdict.RETRY else at,
    )


async def _backlog(db: Database, events: int, **endpoint: Any) -> str:
    ws = await db.write(add_workspace)
    await db.write(
        lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0, **endpoint)
    )
    now = _ms()
    await db.write(
        lambda c: [record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], now) for i in range(events)]
    )
    return ws


def _waits(trace: Path) -> int:
    """How many times the client waited for the server (each Sync or simple Query)."""
    # A statement's text may span lines: only lines of a message's start are counted.
    lines = [line.split("\t") for line in trace.read_text().splitlines()]
    sent = [parts[2] for parts in lines if parts[0] == "F" and len(parts) > 2]
    return sent.count("Sync") + sent.count("Query")


def _traced(conn: PgConnection, trace: Path, run: Any) -> Any:
    with trace.open("wb") as sink:
        conn.raw.pgconn.trace(sink.fileno())
        conn.raw.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            return run()
        finally:
            conn.raw.pgconn.untrace()


async def test_a_flush_of_successes_and_its_claim_cost_one_round_trip(
    pg_url: str, tmp_path: Path
) -> None:
    """Recording a batch of successful attempts and claiming as many more, alone in its
    transaction, is one round trip on PostgreSQL (BEGIN, the records, the claim and the COMMIT
    share one pipeline), and it is committed: another connection sees it."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as db:
        await _backlog(db, 20, max_in_flight=2)
        now = _ms()
        first = await DeliveryStore(db).claim("w", now, 60_000, 4)
        assert len(first) == 4
        results = [_result(c, Verdict.DELIVERED, 200, now) for c in first]
        conn = db.connect()
        job = Job(record_then_claim, (results, now, 0, "w", 60_000, 4), lambda ok, v: None)
        assert _traced(conn, tmp_path / "trace", lambda: db.group_commit().run(conn, [job]))
        conn.close()
        ok, (disabled, claims) = job.outcome
        assert ok
        assert disabled == []
        assert len(claims) == 4
        assert {c.delivery_id for c in claims}.isdisjoint(c.delivery_id for c in first)
        assert _waits(tmp_path / "trace") == 1
        rows = await db.read(
            lambda c: c.execute(
                "SELECT status, count(*) FROM deliveries GROUP BY status ORDER BY status"
            ).fetchall()
        )
        assert [tuple(r) for r in rows] == [("delivered", 4), ("delivering", 4), ("pending", 12)]


async def test_a_claim_alone_is_one_round_trip(pg_url: str, tmp_path: Path) -> None:
    """A claim on PostgreSQL is one round trip (its two statements run server-side), and it
    still leases no more than the endpoint's room, due first."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as db:
        await _backlog(db, 12, max_in_flight=2)
    conn = PgConnection(psycopg.connect(pg_url, autocommit=True))
    try:

        def claim() -> list[Claim]:
            conn.execute("BEGIN")
            return claim_postgres(conn, "w", _ms(), 60_000, 100)

        claims = _traced(conn, tmp_path / "trace", claim)
        assert _waits(tmp_path / "trace") == 1
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert len(claims) == 8  # LEASE_FACTOR x max_in_flight
    assert [c.conversation_id for c in claims] == [f"conv_{i}" for i in range(8)]
    assert all(c.body and c.url == "http://x.invalid" and c.max_in_flight == 2 for c in claims)


async def test_a_batch_records_each_outcome_of_its_own_row(pg_url: str) -> None:
    """Outcomes recorded as one statement per batch land on their own rows: attempts in
    batch order, retries pending again, failures failed, and a row whose lease passed to
    another owner is left as that owner has it."""
    async with open_database(pg_url, "producer", auto_upgrade=True) as db:
        await _backlog(db, 4, max_in_flight=4)
        now = _ms()
        claims = await DeliveryStore(db).claim("w", now, 60_000, 4)
        stolen = claims[3]
        await db.write(
            lambda c: c.execute(
                "UPDATE deliveries SET lease_owner = 'other' WHERE id = ?", (stolen.delivery_id,)
            )
        )
        results = [
            _result(claims[0], Verdict.DELIVERED, 200, now),
            _result(claims[1], Verdict.RETRY, 503, now),
            _result(claims[2], Verdict.FAILED, 400, now),
            _result(stolen, Verdict.DELIVERED, 200, now),
        ]
        disabled, more = await DeliveryStore(db).record(results, now, 0, "w", 60_000, 0)
        assert (disabled, more) == ([], [])
        rows = await db.read(
            lambda c: c.execute(
                "SELECT id, status, attempts, next_attempt_at, last_status_code, last_error, "
                "lease_owner FROM deliveries ORDER BY id"
            ).fetchall()
        )
        attempts = await db.read(
            lambda c: c.execute(
                "SELECT delivery_id, status_code, response_body FROM attempts ORDER BY id"
            ).fetchall()
        )
    by_id = {r[0]: tuple(r[1:]) for r in rows}
    assert by_id[claims[0].delivery_id] == ("delivered", 1, now, 200, None, None)
    assert by_id[claims[1].delivery_id] == ("pending", 1, now + 60_000, 503, "answered 503", None)
    assert by_id[claims[2].delivery_id] == ("failed", 1, now, 400, "answered 400", None)
    kept = by_id[stolen.delivery_id]
    assert (kept[0], kept[1], kept[5]) == ("delivering", 0, "other")
    assert [tuple(a) for a in attempts] == [
        (r.delivery_id, r.status_code, r.response_body) for r in results
    ]


async def test_a_dispatcher_holds_claims_ahead_of_its_requests(database_url: str) -> None:
    """A dispatcher holds up to hold_factor (2 on SQLite, 4 on PostgreSQL) times max_in_flight
    claims while sending at most max_in_flight requests at once, so a finished request is
    followed by one claimed already."""
    gate = asyncio.Event()
    receiver = Receiver().then(*[Reply(delay=0.0) for _ in range(12)])
    running = [0, 0]  # now, peak

    class Gated(Receiver):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                running[0] += 1
                running[1] = max(running)
                await gate.wait()
            try:
                await receiver(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    running[0] -= 1

    async with (
        open_database(database_url, "producer", auto_upgrade=True) as db,
        serve_app(Gated()) as base,
    ):
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(c, ws, base, str(Secret.generate()), _ms(), max_in_flight=10)
        )
        now = _ms()
        await db.write(
            lambda c: [record_event(c, ws, f"conv_{i}", 1, LIFECYCLE[0], now) for i in range(12)]
        )
        async with Dispatcher(db, allow_private=True, max_in_flight=2, poll_interval=0.05) as d:
            d.wake()
            try:
                for _ in range(100):
                    leased = await db.read(
                        lambda c: c.execute(
                            "SELECT count(*) FROM deliveries WHERE status = 'delivering'"
                        ).fetchone()[0]
                    )
                    if running[0] == 2 and leased == 2 * d.hold_factor:
                        break
                    await asyncio.sleep(0.02)
                assert (running[0], leased) == (2, 2 * d.hold_factor)
            finally:
                gate.set()  # the dispatcher's close waits for its requests
            await receiver.wait_for(12)
    assert running[1] == 2
