"""The SQLite inbox: durable, de-duplicated, byte-exact storage and the handler-state machine."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from convhook.store.inbox import HandlerStatus, Received, SQLiteInbox


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


async def test_add_reports_new_and_duplicate_by_event_id_and_webhook_id(db_path: Path) -> None:
    """A second delivery with the same eventId or the same webhook-id is not stored again."""
    async with SQLiteInbox(db_path) as inbox:
        assert await inbox.add(received(1)) is True
        assert await inbox.add(received(1)) is False
        same_hook = Received(**{**received(2).__dict__, "webhook_id": "msg_1"})
        assert await inbox.add(same_hook) is False
        assert await inbox.get("evt_2") is None


async def test_concurrent_adds_share_commits_and_dedupe_within_a_batch(db_path: Path) -> None:
    """Concurrent adds are group-committed, and duplicates inside one batch count once."""
    async with SQLiteInbox(db_path) as inbox:
        items = [received(n % 50) for n in range(200)]
        results = await asyncio.gather(*(inbox.add(item) for item in items))
        assert sum(results) == 50
        assert inbox.db.batches < 200
        assert len(await inbox.recent(limit=1000)) == 50


async def test_body_and_headers_round_trip_byte_exact(db_path: Path) -> None:
    """The stored body is the exact bytes received, spacing included, with the webhook headers."""
    item = received(7)
    async with SQLiteInbox(db_path) as inbox:
        await inbox.add(item)
        entry = await inbox.get("evt_7")
    assert entry is not None
    assert entry.body == item.body
    assert dict(entry.headers) == dict(item.headers)
    assert entry.status is HandlerStatus.PENDING
    assert entry.attempts == 0


async def test_claim_lease_fail_retry_and_complete(db_path: Path) -> None:
    """Claiming leases a due event; a failure schedules a retry; success marks it done."""
    async with SQLiteInbox(db_path) as inbox:
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


async def test_expired_lease_is_claimed_again(db_path: Path) -> None:
    """A running event whose lease ended (its process died) is due again."""
    async with SQLiteInbox(db_path) as inbox:
        await inbox.add(received(1, at=100.0))
        await inbox.claim(now=100.0, limit=10, lease=30.0)
        [entry] = await inbox.claim(now=131.0, limit=10, lease=30.0)
        assert entry.attempts == 2


async def test_final_failure_then_requeue_keeps_succeeded_handlers(db_path: Path) -> None:
    """A failed event is replayable; replay of a failed event keeps handlers that succeeded."""
    async with SQLiteInbox(db_path) as inbox:
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
    """After a crash, every running event becomes due at once."""
    async with SQLiteInbox(db_path) as inbox:
        await inbox.add(Received(**{**received(1).__dict__, "claimed_until": 5000.0}))
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
