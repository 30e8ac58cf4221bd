"""The inbox on SQLite and PostgreSQL: durable, de-duplicated, byte-exact storage, the
handler-state machine, leases, and claims shared by several processes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

import msgspec
import pytest

from convhook.store.inbox import HandlerStatus, Received
from convhook.store.inbox.store import SQLiteInbox
from tests.support.inbox import WRITER_PROCESS, inbox_at
from tests.support.postgres import TemporaryPostgres


@pytest.fixture(params=["sqlite", "sqlite-writer-process", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file (written by a thread, or by a child process as
    `convhook listen` does) and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        server: TemporaryPostgres = request.getfixturevalue("pg_server")
        return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    path = str(tmp_path / "inbox.db")
    return WRITER_PROCESS + path if request.param == "sqlite-writer-process" else path


def received(n: int, *, webhook_id: str | None = None, at: float = 1000.0) -> Received:
    body = b'{"eventId": "evt_%d",  "eventType": "conversation.userJoined"}' % n
    return Received(
        event_id=f"evt_{n}",
        webhook_id=webhook_id if webhook_id is not None else f"msg_{n}",
        event_type="conversation.userJoined",
        body=body,
        headers={"webhook-id": f"msg_{n}", "webhook-signature": "v1,abc"},
        received_at=at,
    )


async def test_add_reports_new_and_duplicate_by_event_id_and_webhook_id(database_url: str) -> None:
    """A second delivery with the same eventId or the same webhook-id is not stored again."""
    async with inbox_at(database_url) as inbox:
        assert await inbox.add(received(1)) is True
        assert await inbox.add(received(1)) is False
        same_hook = msgspec.structs.replace(received(2), webhook_id="msg_1")
        assert await inbox.add(same_hook) is False
        assert await inbox.get("evt_2") is None


async def test_concurrent_adds_share_commits_and_dedupe_within_a_batch(database_url: str) -> None:
    """Concurrent adds are group-committed, and duplicates inside one batch count once."""
    async with inbox_at(database_url) as inbox:
        items = [received(n % 50) for n in range(200)]
        results = await asyncio.gather(*(inbox.add(item) for item in items))
        assert sum(results) == 50
        assert inbox.db.batches < 200
        assert len(await inbox.recent(limit=1000)) == 50


async def test_body_and_headers_round_trip_byte_exact(database_url: str) -> None:
    """The stored body is the exact bytes received, spacing included, with the webhook headers."""
    item = received(7)
    async with inbox_at(database_url) as inbox:
        await inbox.add(item)
        entry = await inbox.get("evt_7")
    assert entry is not None
    assert entry.body == item.body
    assert dict(entry.headers) == dict(item.headers)
    assert entry.status is HandlerStatus.PENDING
    assert entry.attempts == 0


async def test_awkward_bytes_and_fields_round_trip_exactly(database_url: str) -> None:
    """Bodies and fields holding what array and bytea syntax use (quotes, backslashes,
    braces, commas, NUL and non-UTF-8 bytes, the word NULL) come back as they went in, with
    the fractional receive time, sequence and traceparent."""
    bodies = [b'{"a": "\\x00 \\" {,} NULL"}', bytes(range(256)), b"", b"\\xff"]
    items = [
        msgspec.structs.replace(
            received(20 + n, at=1765000000.123456 + n),
            body=body,
            headers={"webhook-id": f'msg_"{n}"\\', "x-odd": "{NULL, a\\b}"},
            conversation_id=f"conv_{{{n}}}",
            sequence=n + 1,
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        for n, body in enumerate(bodies)
    ]
    async with inbox_at(database_url) as inbox:
        assert await asyncio.gather(*(inbox.add(item) for item in items)) == [True] * 4
        entries = [await inbox.get(item.event_id) for item in items]
    for item, entry in zip(items, entries, strict=True):
        assert entry is not None
        assert (entry.body, dict(entry.headers)) == (item.body, item.headers)
        assert (entry.received_at, entry.sequence) == (item.received_at, item.sequence)
        assert (entry.conversation_id, entry.traceparent) == (
            item.conversation_id,
            item.traceparent,
        )


async def test_claim_lease_fail_retry_and_complete(database_url: str) -> None:
    """Claiming leases a due event; a failure schedules a retry; success marks it done."""
    async with inbox_at(database_url) as inbox:
        await inbox.add(received(1, at=100.0))
        [entry] = await inbox.claim(now=100.0, limit=10, lease=30.0)
        assert (entry.status, entry.attempts, entry.next_attempt_at) == (
            HandlerStatus.RUNNING,
            1,
            130.0,
        )
        assert await inbox.claim(now=110.0, limit=10, lease=30.0) == []
        await inbox.fail("evt_1", 101.0, "ValueError: boom", ["h1"], retry_at=105.0)
        assert await inbox.next_due() == 105.0
        assert await inbox.claim(now=104.0, limit=10, lease=30.0) == []
        [again] = await inbox.claim(now=105.0, limit=10, lease=30.0)
        assert again.attempts == 2
        assert again.handlers_done == ("h1",)
        assert again.last_error == "ValueError: boom"
        await inbox.complete("evt_1", 106.0, ["h1", "h2"])
        done = await inbox.get("evt_1")
        assert done is not None
        assert (done.status, done.last_error, done.handlers_done) == (
            HandlerStatus.DONE,
            None,
            ("h1", "h2"),
        )
        assert await inbox.next_due() is None


async def test_expired_lease_is_claimed_again(database_url: str) -> None:
    """A running event whose lease ended (its process died) is due again."""
    async with inbox_at(database_url) as inbox:
        await inbox.add(received(1, at=100.0))
        await inbox.claim(now=100.0, limit=10, lease=30.0)
        [entry] = await inbox.claim(now=131.0, limit=10, lease=30.0)
        assert entry.attempts == 2


async def test_final_failure_then_requeue_keeps_succeeded_handlers(database_url: str) -> None:
    """A failed event is replayable; replay of a failed event keeps handlers that succeeded."""
    async with inbox_at(database_url) as inbox:
        await inbox.add(received(1, at=100.0))
        await inbox.add(received(2, at=100.0))
        await inbox.claim(now=100.0, limit=10, lease=30.0)
        await inbox.fail("evt_1", 101.0, "RuntimeError: down", ["print"], retry_at=None)
        await inbox.complete("evt_2", 101.0, ["print", "forward"])
        assert await inbox.failed_ids() == ["evt_1"]
        assert [e.event_id for e in await inbox.recent(HandlerStatus.FAILED)] == ["evt_1"]
        assert await inbox.requeue(["evt_1", "evt_2", "evt_missing"], 200.0) == ["evt_1", "evt_2"]
        first, second = await inbox.get("evt_1"), await inbox.get("evt_2")
        assert first is not None
        assert second is not None
        assert (first.status, first.attempts, first.handlers_done) == (
            HandlerStatus.PENDING,
            0,
            ("print",),
        )
        assert second.handlers_done == ()
        assert await inbox.next_due() == 200.0


async def test_release_running_makes_leased_events_due(db_path: Path) -> None:
    """On an exclusive (SQLite) inbox, a starting receiver makes every running event due."""
    async with SQLiteInbox(db_path) as inbox:
        await inbox.add(msgspec.structs.replace(received(1), claimed_until=5000.0))
        entry = await inbox.get("evt_1")
        assert entry is not None
        assert entry.status is HandlerStatus.RUNNING
        assert await inbox.release_running(now=1001.0) == 1
        assert await inbox.next_due() == 1001.0


async def test_store_is_wal_and_fully_synchronous(db_path: Path) -> None:
    """The inbox file is in WAL mode and commits with synchronous=FULL by default."""
    async with SQLiteInbox(db_path) as inbox:
        await inbox.add(received(1))
        sync = await inbox.db.read(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
    assert sync == 2  # FULL
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_shared_inbox_keeps_live_leases_at_start(pg_url: str) -> None:
    """On PostgreSQL a starting receiver takes nothing running elsewhere: only expired leases."""
    async with inbox_at(pg_url) as inbox:
        assert inbox.shared
        await inbox.add(msgspec.structs.replace(received(1), claimed_until=5000.0))
        assert await inbox.release_running(now=1001.0) == 0
        assert await inbox.claim(now=4999.0, limit=10, lease=30.0) == []
        [entry] = await inbox.claim(now=5000.0, limit=10, lease=30.0)
        assert entry.attempts == 2


async def test_concurrent_claimers_never_take_one_event_twice(database_url: str) -> None:
    """Several inboxes on one database (as several processes) claim each due event once."""
    async with inbox_at(database_url) as first:
        await asyncio.gather(*(first.add(received(n, at=100.0)) for n in range(120)))
        others = [inbox_at(database_url) for _ in range(3)]
        for other in others:
            await other.open()
        try:
            claimers = [first, *others]
            taken: list[str] = []
            for _ in range(10):
                batches = await asyncio.gather(
                    *(c.claim(now=200.0, limit=7, lease=60.0) for c in claimers)
                )
                taken += [e.event_id for batch in batches for e in batch]
        finally:
            for other in others:
                await other.close()
    assert len(taken) == len(set(taken)) == 120


async def test_extend_renews_running_leases_only(database_url: str) -> None:
    """Renewing leases moves a running event's lease and leaves a finished one alone."""
    async with inbox_at(database_url) as inbox:
        await inbox.add(received(1, at=100.0))
        await inbox.add(received(2, at=100.0))
        await inbox.claim(now=100.0, limit=10, lease=30.0)
        await inbox.complete("evt_2", 101.0, ["h"])
        await inbox.extend(["evt_1", "evt_2"], 500.0)
        running, done = await inbox.get("evt_1"), await inbox.get("evt_2")
        assert running is not None
        assert done is not None
        assert (running.status, running.next_attempt_at) == (HandlerStatus.RUNNING, 500.0)
        assert (done.status, done.next_attempt_at) == (HandlerStatus.DONE, None)
        assert await inbox.claim(now=499.0, limit=10, lease=30.0) == []


async def test_recent_lists_newest_arrival_first(database_url: str) -> None:
    """Listings go newest arrival first, on either engine (rowid or identity order)."""
    async with inbox_at(database_url) as inbox:
        for n in (3, 1, 2):
            await inbox.add(received(n))
        assert [e.event_id for e in await inbox.recent(limit=2)] == ["evt_2", "evt_1"]
