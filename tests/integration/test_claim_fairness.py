"""What a claim carries besides the body, and how a claim shares a dispatcher's capacity
between first attempts and retries (both engines)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from convhook.ids import new_id
from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import LEASE_FACTOR, Claim, DeliveryStore
from convhook.store.delivery.claims import first_quota
from convhook.store.delivery.store import claim as claim_with
from convhook.store.engine.connection import Connection
from convhook.store.engine.database import Database
from tests.support.delivery import LIFECYCLE, add_endpoint, add_workspace, record_event

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A fresh producer database on each engine."""
    async with open_database(database_url, "producer", auto_upgrade=True) as opened:
        yield opened


def _event(
    conn: Connection,
    workspace_id: str,
    conversation_id: str,
    seq: int,
    previous: str | None,
    traceparent: str | None,
) -> str:
    # An outbox row as the producer writes it since schema 6; the trigger fans it out.
    event_id = new_id("evt")
    conn.execute(
        "INSERT INTO events (id, workspace_id, conversation_id, conversation_seq, event_type, "
        "body, created_at, previous_event_id, traceparent) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (
            event_id,
            workspace_id,
            conversation_id,
            seq,
            LIFECYCLE[seq - 1],
            f'{{"eventId":"{event_id}"}}',
            previous,
            traceparent,
        ),
    )
    return event_id


async def _conversation(db: Database, workspace_id: str, events: int) -> list[str]:
    def write(conn: Connection) -> list[str]:
        ids: list[str] = []
        for seq in range(1, events + 1):
            previous = ids[-1] if ids else None
            ids.append(_event(conn, workspace_id, "conv_1", seq, previous, TRACEPARENT))
        return ids

    return await db.write(write)


async def _claim_in_order(store: DeliveryStore, db: Database, count: int) -> list[Claim]:
    # A conversation's next event is claimable only once the one before it was delivered.
    taken: list[Claim] = []
    for _ in range(count):
        [claim] = await store.claim("w", 1, 60_000, 10)
        await db.write(
            lambda c, i=claim.delivery_id: c.execute(
                "UPDATE deliveries SET status = 'delivered' WHERE id = ?", (i,)
            )
        )
        taken.append(claim)
    return taken


async def test_a_claim_carries_the_sequence_previous_event_and_traceparent(db: Database) -> None:
    """Each claimed delivery carries its event's conversation sequence, the conversation's
    previous event id (None for the first) and the traceparent the event was recorded with."""
    ws = await db.write(add_workspace)
    await db.write(lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0))
    ids = await _conversation(db, ws, 3)
    claims = await _claim_in_order(DeliveryStore(db), db, 3)
    assert [(c.event_id, c.sequence, c.previous_event_id) for c in claims] == [
        (ids[0], 1, None),
        (ids[1], 2, ids[0]),
        (ids[2], 3, ids[1]),
    ]
    assert {c.traceparent for c in claims} == {TRACEPARENT}
    assert claims[1].body == f'{{"eventId":"{ids[1]}"}}'.encode()


async def test_a_test_event_claims_with_no_links(db: Database) -> None:
    """A test event (its body inline, in no conversation) is claimed with sequence 0 and
    neither a previous event nor a traceparent."""
    ws = await db.write(add_workspace)
    endpoint = await db.write(
        lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0)
    )
    store = DeliveryStore(db)
    await store.enqueue_test(
        workspace_id=ws,
        endpoint_id=endpoint,
        event_id="evt_test",
        event_type="conversation.completed",
        body=b'{"eventId":"evt_test"}',
        now=0,
        conversation_id="conv_sample",
    )
    [claim] = await store.claim("w", 1, 60_000, 10)
    assert (claim.sequence, claim.previous_event_id, claim.traceparent) == (0, None, None)
    assert claim.body == b'{"eventId":"evt_test"}'


async def test_claims_keep_their_links_across_the_writer_process(tmp_path: Path) -> None:
    """A claim made in SQLite's writer process reaches the dispatcher with its sequence,
    previous event id and traceparent."""
    path = str(tmp_path / "c.db")
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_database(path, "producer"))
        child = await stack.enter_async_context(open_database(path, "producer", writer="process"))
        ws = await db.write(add_workspace)
        await db.write(lambda c: add_endpoint(c, ws, "http://x.invalid", str(Secret.generate()), 0))
        ids = await _conversation(db, ws, 2)
        claims = await _claim_in_order(DeliveryStore(child), db, 2)
    assert [(c.sequence, c.previous_event_id, c.traceparent) for c in claims] == [
        (1, None, TRACEPARENT),
        (2, ids[0], TRACEPARENT),
    ]


async def _endpoint_with(db: Database, fresh: int, retries: int, max_in_flight: int = 10) -> str:
    # ``retries`` deliveries that failed twice and are due since 0, then ``fresh`` first
    # attempts due since 1 (after every retry), each in a conversation of its own.
    ws = await db.write(add_workspace)
    endpoint = await db.write(
        lambda c: add_endpoint(
            c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=max_in_flight
        )
    )

    def write(conn: Connection) -> None:
        for n in range(retries):
            record_event(conn, ws, f"retry_{n}", 1, LIFECYCLE[0], 0)
        conn.execute(
            "UPDATE deliveries SET attempts = 2 WHERE endpoint_id = ? AND status = 'pending'",
            (endpoint,),
        )
        for n in range(fresh):
            record_event(conn, ws, f"fresh_{n}", 1, LIFECYCLE[0], 1)

    await db.write(write)
    return endpoint


async def test_fresh_events_are_claimed_ahead_of_another_endpoints_due_retries(
    db: Database,
) -> None:
    """A healthy endpoint's first attempts are in the very next claim even when another
    endpoint's hundreds of retries fell due before them."""
    stormy = await _endpoint_with(db, fresh=0, retries=300)
    healthy = await _endpoint_with(db, fresh=4, retries=0)
    claims = await DeliveryStore(db).claim("w", 10, 60_000, 10)
    assert sum(c.endpoint_id == healthy for c in claims) == 4
    assert sum(c.endpoint_id == stormy for c in claims) == 6
    assert {c.attempts for c in claims if c.endpoint_id == stormy} == {2}


async def test_first_attempts_take_their_share_and_retries_the_rest(db: Database) -> None:
    """With more first attempts and retries due than a claim takes, first attempts fill
    first_quota(limit) of it and retries due before them the rest."""
    await _endpoint_with(db, fresh=0, retries=100, max_in_flight=50)
    await _endpoint_with(db, fresh=100, retries=0, max_in_flight=50)
    claims = await DeliveryStore(db).claim("w", 10, 60_000, 10)
    assert first_quota(10) == 5
    assert sorted(c.attempts for c in claims) == [0] * 5 + [2] * 5


async def test_first_attempts_fill_a_claim_when_no_retry_is_due(db: Database) -> None:
    """First attempts beyond their share are claimed when nothing else is due."""
    await _endpoint_with(db, fresh=30, retries=0, max_in_flight=50)
    claims = await DeliveryStore(db).claim("w", 10, 60_000, 10)
    assert [c.attempts for c in claims] == [0] * 10


async def test_a_first_attempt_waits_for_its_conversations_earlier_retry(db: Database) -> None:
    """A conversation's fresh event is not claimed while an earlier event of it waits for a
    retry, and an endpoint's leases stay within LEASE_FACTOR times its max_in_flight."""
    ws = await db.write(add_workspace)
    endpoint = await db.write(
        lambda c: add_endpoint(
            c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=2
        )
    )

    def write(conn: Connection) -> None:
        for n in range(20):
            record_event(conn, ws, f"conv_{n}", 1, LIFECYCLE[0], 0)
        # Every first event failed once and waits for its retry, not due yet.
        conn.execute("UPDATE deliveries SET attempts = 1, next_attempt_at = 1000")
        for n in range(20):
            record_event(conn, ws, f"conv_{n}", 2, LIFECYCLE[1], 1)
        record_event(conn, ws, "conv_alone", 1, LIFECYCLE[0], 1)

    await db.write(write)
    store = DeliveryStore(db)
    [claim] = await store.claim("w", 10, 60_000, 10)
    assert claim.conversation_id == "conv_alone"
    later = await store.claim("w", 1000, 60_000, 100)
    assert len(later) == LEASE_FACTOR * 2 - 1
    assert {c.sequence for c in later} == {1}
    assert all(c.endpoint_id == endpoint for c in later)


async def test_racing_claims_of_retries_and_first_attempts_keep_limits_and_order(
    pg_url: str,
) -> None:
    """Three PostgreSQL claimers racing over retries and first attempts never lease more than
    LEASE_FACTOR times an endpoint's max_in_flight between them, and lease a conversation's
    event only once every earlier one was delivered."""
    async with contextlib.AsyncExitStack() as stack:
        dbs = [
            await stack.enter_async_context(open_database(pg_url, "producer", auto_upgrade=True))
        ]
        for _ in range(2):
            dbs.append(await stack.enter_async_context(open_database(pg_url, "producer")))
        main = dbs[0]
        ws = await main.write(add_workspace)
        narrow = await main.write(
            lambda c: add_endpoint(
                c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=2
            )
        )
        await main.write(
            lambda c: add_endpoint(
                c, ws, "http://y.invalid", str(Secret.generate()), 0, max_in_flight=20
            )
        )

        def fill(conn: Connection) -> None:
            for conv in range(30):
                for seq, event_type in enumerate(LIFECYCLE, 1):
                    record_event(conn, ws, f"conv_{conv}", seq, event_type, 0)
            # A third of the conversations' events failed before and are due again.
            conn.execute(
                "UPDATE deliveries SET attempts = 3 WHERE conversation_id IN "
                "(SELECT 'conv_' || n FROM generate_series(0, 29, 3) AS n)"
            )

        await main.write(fill)
        total, done = 30 * 4 * 2, 0
        for _ in range(200):
            rounds = await asyncio.gather(
                *(DeliveryStore(db).claim(f"w{n}", 10, 60_000, 12) for n, db in enumerate(dbs))
            )
            rows = await main.read(
                lambda c: c.execute(
                    "SELECT endpoint_id, conversation_id, conversation_seq, status FROM deliveries"
                ).fetchall()
            )
            status = {(r[0], r[1], r[2]): r[3] for r in rows}
            leased = [key for key, s in status.items() if s == "delivering"]
            assert sum(1 for key in leased if key[0] == narrow) <= LEASE_FACTOR * 2
            assert len({key[:2] for key in leased}) == len(leased), "a conversation leased twice"
            for endpoint, conv, seq in leased:
                earlier = [status[(endpoint, conv, s)] for s in range(1, seq)]
                assert set(earlier) <= {"delivered"}, (conv, seq, earlier)
            ids = [c.delivery_id for got in rounds for c in got]
            await main.write(
                lambda c, ids=ids: c.execute(
                    "UPDATE deliveries SET status = 'delivered' WHERE id = ANY(?)", (ids,)
                )
            )
            done += len(ids)
            if done >= total:
                break
    assert done == total


def _claim_counting(conn: Connection) -> tuple[int, int]:
    """A claim's size and its work, in thousands of SQLite VM steps."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    raw = cast(sqlite3.Connection, conn)
    raw.set_progress_handler(step, 1000)
    try:
        taken = claim_with(conn, "w2", 1, 60_000, 100)
    finally:
        raw.set_progress_handler(None, 0)
    return len(taken), steps[0]


async def test_a_claim_with_every_endpoint_full_reads_none_of_the_backlog(tmp_path: Path) -> None:
    """SQLite: with its one endpoint at its lease cap, a claim finds nothing without reading
    that endpoint's backlog (it read every due row: 2.4 ms a claim behind 20,000 of them)."""
    async with open_database(str(tmp_path / "c.db"), "producer") as db:
        ws = await db.write(add_workspace)
        await db.write(
            lambda c: add_endpoint(
                c, ws, "http://x.invalid", str(Secret.generate()), 0, max_in_flight=2
            )
        )

        def backlog(conn: Connection) -> None:
            for i in range(3000):
                _event(conn, ws, f"conv_{i}", 1, None, None)

        await db.write(backlog)
        assert len(await DeliveryStore(db).claim("w1", 1, 60_000, 100)) == 2 * LEASE_FACTOR
        taken, work = await db.write(_claim_counting)
    assert taken == 0
    assert work < 20, work  # about 100 when it read them all
