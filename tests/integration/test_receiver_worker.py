"""The inbox worker with an injected clock: retry timing without sleeping, recovery after a
crash, and leases held while handlers run (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convhook.receiver import HandlerStatus, RetryPolicy
from convhook.receiver.handlers import HandlerRegistry
from convhook.receiver.worker import Worker
from convhook.samples import sample_event
from convhook.store.inbox import Received
from convhook.store.inbox.store import SQLiteInbox
from tests.support.inbox import WRITER_PROCESS, inbox_at


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(at: float) -> Received:
    event = sample_event("conversation.completed")
    return Received(event.event_id, None, event.event_type, event.to_json(), {}, at)


async def test_backoff_schedule_follows_the_policy_with_jitter(database_url: str) -> None:
    """Each failure is retried after the policy's jittered delay, until the last attempt fails."""
    clock = Clock(1000.0)
    draws = iter([0.0, 1.0, 0.25])  # -10 %, +10 %, -5 % with a 10 % jitter
    policy = RetryPolicy.exponential(
        max_attempts=4, base=1.0, cap=3.0, jitter_ratio=0.1, jitter=lambda: next(draws)
    )
    handlers = HandlerRegistry()
    attempts: list[float] = []

    async def always_fails(event: Any) -> None:
        attempts.append(clock.now)
        raise TimeoutError("slow CRM")

    handlers.add(always_fails, ["*"])
    async with inbox_at(database_url) as inbox:
        item = stored(1000.0)
        await inbox.add(item)
        worker = Worker(inbox, handlers, retry=policy, clock=clock)
        assert await worker.run_once() == 1
        for delay in (0.9, 2.2, 2.85):
            entry = await inbox.get(item.event_id)
            assert entry is not None
            assert entry.status is HandlerStatus.PENDING
            assert entry.next_attempt_at == pytest.approx(clock.now + delay)
            clock.now = entry.next_attempt_at - 0.01
            assert await worker.run_once() == 0  # not due yet
            clock.now = entry.next_attempt_at
            assert await worker.run_once() == 1
        entry = await inbox.get(item.event_id)
    assert entry is not None
    assert (entry.status, entry.attempts, entry.next_attempt_at) == (HandlerStatus.FAILED, 4, None)
    assert entry.last_error is not None
    assert "TimeoutError: slow CRM" in entry.last_error
    assert len(attempts) == 4


async def test_worker_start_reruns_events_left_running(db_path: Path) -> None:
    """On SQLite, events a dead process left running are run by the next worker at start."""
    clock = Clock(50.0)
    handlers, seen = recording()
    async with SQLiteInbox(db_path) as inbox:
        item = stored(10.0)
        await inbox.add(msgspec.structs.replace(item, claimed_until=1e12))
        worker = Worker(inbox, handlers, clock=clock)
        await worker.start()
        try:
            await wait_done(inbox, item.event_id)
        finally:
            await worker.stop()
    assert seen == [item.event_id]


def recording() -> tuple[HandlerRegistry, list[str]]:
    """A registry whose one catch-all handler records the ids of the events it runs."""
    handlers = HandlerRegistry()
    seen: list[str] = []

    async def record(event: Any) -> None:
        seen.append(event.event_id)

    handlers.add(record, ["*"])
    return handlers, seen


async def worker_sleep() -> None:
    await asyncio.sleep(0.01)


async def wait_done(inbox: Any, event_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = await inbox.get(event_id)
        if entry is not None and entry.status is HandlerStatus.DONE:
            return
        await worker_sleep()
    raise AssertionError(f"{event_id} not done in time")


async def test_shared_inbox_reruns_a_dead_process_event_when_its_lease_ends(pg_url: str) -> None:
    """On PostgreSQL, a starting worker leaves another process's running event alone until
    its lease ends, then runs it."""
    clock = Clock(50.0)
    handlers, seen = recording()
    async with inbox_at(pg_url) as inbox:
        item = stored(10.0)
        await inbox.add(msgspec.structs.replace(item, claimed_until=60.0))
        worker = Worker(inbox, handlers, clock=clock, poll_interval=0.02)
        await worker.start()
        try:
            await asyncio.sleep(0.3)
            assert seen == []
            clock.now = 60.0
            await wait_done(inbox, item.event_id)
        finally:
            await worker.stop()
    assert seen == [item.event_id]


async def test_a_slow_handler_keeps_its_lease(database_url: str) -> None:
    """While a handler outlives its lease, the worker renews it, so another process's claim
    does not take the event."""
    handlers = HandlerRegistry()
    release = asyncio.Event()
    runs: list[str] = []

    async def slow(event: Any) -> None:
        runs.append(event.event_id)
        await release.wait()

    handlers.add(slow, ["*"])
    async with inbox_at(database_url) as inbox, inbox_at(database_url) as other:
        item = stored(time.time())
        await inbox.add(item)
        worker = Worker(inbox, handlers, lease=0.3, poll_interval=0.02)
        await worker.start()
        try:
            deadline = time.monotonic() + 5
            while not runs and time.monotonic() < deadline:
                await worker_sleep()
            assert runs == [item.event_id]
            for _ in range(8):  # 1.2 s: four leases' worth
                await asyncio.sleep(0.15)
                assert await other.claim(time.time(), 10, 60.0) == []
            release.set()
            await wait_done(inbox, item.event_id)
        finally:
            release.set()
            await worker.stop()
    assert runs == [item.event_id]


async def test_other_processes_wake_a_postgres_worker_at_once(pg_url: str) -> None:
    """On PostgreSQL, an event stored pending or replayed by another process is run at once
    (NOTIFY), not at the worker's next poll."""
    handlers = HandlerRegistry()
    seen: list[str] = []

    async def record(event: Any) -> None:
        seen.append(event.event_id)

    handlers.add(record, ["*"])
    async with inbox_at(pg_url) as inbox, inbox_at(pg_url) as other:
        worker = Worker(inbox, handlers, poll_interval=60.0)
        await worker.start()
        try:
            await asyncio.sleep(0.5)  # past the first idle poll
            item = stored(time.time())
            await other.add(item)
            await wait_done(inbox, item.event_id, timeout=5.0)
            assert await other.requeue([item.event_id], time.time()) == [item.event_id]
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                await worker_sleep()
        finally:
            await worker.stop()
    assert seen == [item.event_id, item.event_id]


@pytest.fixture(params=["sqlite", "writer-process", "postgres"])
def any_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An inbox on each store a receiver may use: SQLite, SQLite written by a child process,
    PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "inbox.db")
    if request.param == "writer-process":
        return WRITER_PROCESS + str(tmp_path / "inbox.db")
    url: str = request.getfixturevalue("pg_url")
    return url


async def run_to_the_end(worker: Worker, clock: Clock, inbox: Any, event_id: str) -> Any:
    """Run every due attempt of ``event_id``, moving the clock to each retry; the last entry."""
    for _ in range(10):
        await worker.run_once()
        entry = await inbox.get(event_id)
        if entry.status in (HandlerStatus.DONE, HandlerStatus.FAILED):
            return entry
        assert entry.status is HandlerStatus.PENDING, entry
        clock.now = max(clock.now, entry.next_attempt_at)
    raise AssertionError(f"{event_id} still {entry.status} after 10 rounds")


class Unusual(BaseException):
    """A BaseException subclass a library might raise from a handler."""


def _raise(exc: BaseException) -> Any:
    raise exc


POISON = [
    pytest.param(lambda: OverflowError("date value out of range"), id="OverflowError"),
    pytest.param(lambda: RecursionError("maximum recursion depth exceeded"), id="RecursionError"),
    pytest.param(lambda: MemoryError(), id="MemoryError"),
    pytest.param(lambda: KeyboardInterrupt(), id="KeyboardInterrupt"),
    pytest.param(lambda: SystemExit(3), id="SystemExit"),
    pytest.param(lambda: GeneratorExit(), id="GeneratorExit"),
    pytest.param(lambda: Unusual("odd"), id="BaseException-subclass"),
    pytest.param(lambda: asyncio.CancelledError(), id="handler-own-CancelledError"),
    pytest.param(lambda: ValueError("nul \x00 and lone \ud800 surrogate"), id="unstorable-text"),
    pytest.param(lambda: ValueError("x" * 100_000), id="huge-text"),
]


@pytest.mark.parametrize("make", POISON)
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_whatever_a_handler_raises_ends_failed_within_the_attempts(
    any_inbox: str, make: Any, sync: bool
) -> None:
    """Any exception from a handler, BaseException subclasses included, is recorded as a
    failed attempt, and the event ends failed with its error after the last attempt."""
    clock = Clock(1000.0)
    handlers = HandlerRegistry()
    calls: list[int] = []

    def failing_sync(event: Any) -> None:
        calls.append(1)
        _raise(make())

    async def failing_async(event: Any) -> None:
        calls.append(1)
        _raise(make())

    handlers.add(failing_sync if sync else failing_async, ["*"], name="poison")
    policy = RetryPolicy.exponential(max_attempts=3, base=1.0, jitter_ratio=0.0)
    async with inbox_at(any_inbox) as inbox:
        item = stored(1000.0)
        await inbox.add(item)
        worker = Worker(inbox, handlers, retry=policy, clock=clock)
        entry = await run_to_the_end(worker, clock, inbox, item.event_id)
    assert (entry.status, entry.attempts) == (HandlerStatus.FAILED, 3)
    assert len(calls) == 3
    assert entry.last_error.startswith("poison: ")
    assert type(make()).__name__ in entry.last_error
    assert len(entry.last_error) <= 2100


async def test_a_stored_body_that_cannot_be_built_ends_failed(any_inbox: str) -> None:
    """A stored body the models refuse (here a time leaving the date range in UTC, stored
    before intake refused such times) ends failed with its error, without running handlers."""
    clock = Clock(1000.0)
    handlers, seen = recording()
    event = sample_event("conversation.userJoined")
    body = event.to_json().replace(
        b'"userJoinTime":"', b'"userJoinTime":"0001-01-01T00:30:00+01:00","x":"', 1
    )
    item = Received(event.event_id, None, event.event_type, body, {}, 1000.0)
    async with inbox_at(any_inbox) as inbox:
        await inbox.add(item)
        worker = Worker(inbox, handlers, retry=RetryPolicy.exponential(max_attempts=3), clock=clock)
        entry = await run_to_the_end(worker, clock, inbox, item.event_id)
    assert entry.status is HandlerStatus.FAILED
    assert entry.attempts <= 3
    assert "payload.userJoinTime" in entry.last_error
    assert seen == []


async def test_attempts_that_never_recorded_an_outcome_end_failed(any_inbox: str) -> None:
    """An event whose every attempt was claimed but never recorded (a process that died
    mid-handler each time) gets one try past the maximum, then is marked failed at the next
    claim, never claimed forever."""
    clock = Clock(1000.0)
    handlers, seen = recording()
    policy = RetryPolicy.exponential(max_attempts=3)
    async with inbox_at(any_inbox) as inbox:
        item = stored(1000.0)
        await inbox.add(item)
        for attempt in (1, 2, 3, 4):
            [claimed] = await inbox.claim(clock.now, 10, 30.0, max_attempts=3)
            assert claimed.attempts == attempt
            clock.now += 31.0  # the lease ends without an outcome
        worker = Worker(inbox, handlers, retry=policy, clock=clock)
        assert await worker.run_once() == 0
        entry = await inbox.get(item.event_id)
        assert await inbox.next_due() is None
    assert (entry.status, entry.next_attempt_at) == (HandlerStatus.FAILED, None)
    assert "recorded no outcome" in entry.last_error
    assert seen == []


async def test_an_acknowledged_event_that_never_started_runs_after_a_restart(
    any_inbox: str,
) -> None:
    """An event stored claimed at intake (attempt 1) whose process stopped before it ran is
    handed back at the next start and runs, even with a single attempt allowed."""
    clock = Clock(1000.0)
    handlers, seen = recording()
    async with inbox_at(any_inbox) as inbox:
        event = sample_event("conversation.completed")
        item = Received(
            event.event_id,
            None,
            event.event_type,
            event.to_json(),
            {},
            1000.0,
            claimed_until=1060.0,
        )
        await inbox.add(item)
        # SQLite hands running events back at start; PostgreSQL, shared by several
        # processes, when their lease ends: either way the event is due again.
        await inbox.release_running(clock.now)
        clock.now = 1061.0
        worker = Worker(inbox, handlers, retry=RetryPolicy.exponential(max_attempts=1), clock=clock)
        entry = await run_to_the_end(worker, clock, inbox, item.event_id)
    assert entry.status is HandlerStatus.DONE
    assert seen == [item.event_id]


class BreaksOnce(SQLiteInbox):
    """A real SQLite inbox whose first claim fails with an error that is not a store error."""

    broken = True

    async def claim(self, now: float, limit: int, lease: float, **kwargs: Any) -> list[Any]:
        if self.broken:
            self.broken = False
            raise RuntimeError("claim broke")
        return await super().claim(now, limit, lease, **kwargs)


async def test_an_unexpected_error_does_not_stop_the_worker(db_path: Path) -> None:
    """An error of any kind in the worker's loop is logged and the loop goes on, so events
    stored afterwards are still handled."""
    handlers, seen = recording()
    async with BreaksOnce(db_path) as inbox:
        item = stored(time.time())
        await inbox.add(item)
        worker = Worker(inbox, handlers, poll_interval=0.02)
        await worker.start()
        try:
            await wait_done(inbox, item.event_id)
        finally:
            await worker.stop()
    assert seen == [item.event_id]
    assert not inbox.broken
