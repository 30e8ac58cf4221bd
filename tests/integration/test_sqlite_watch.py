"""SQLite's watch for deliveries: another process's commit wakes the dispatcher, its own
writer's records do not, unless they add deliveries."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convhook.signing import Secret
from convhook.store import open_database
from convhook.store.delivery import DeliveryStore, endpoints
from convhook.store.engine.database import Database
from tests.support.delivery import LIFECYCLE, add_endpoint, add_workspace, record_event

# Long enough for dozens of looks (one every 5 ms), short enough to keep the tests quick.
_SETTLE = 0.2


def _ms() -> int:
    return int(time.time() * 1000)


class _Calls:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1

    async def quiet(self) -> int:
        """Wait for the watch to look many times; the calls counted meanwhile."""
        before = self.count
        await asyncio.sleep(_SETTLE)
        return self.count - before

    async def started(self, path: Path) -> None:
        """Wait until the watch looks: a commit from another connection calls back (the
        watch opens its connection on a thread first, and on a busy machine that may take
        longer than any fixed wait)."""
        async with asyncio.timeout(10):
            while True:
                before = self.count
                await asyncio.to_thread(_foreign_commit, path)
                await asyncio.sleep(0.02)
                if self.count > before:
                    return

    async def since(self, before: int) -> int:
        """The calls counted since ``before`` (a count read before the writes), once the watch
        has looked many times after them (it may call back while a write is awaited)."""
        await asyncio.sleep(_SETTLE)
        return self.count - before


def _foreign_commit(path: Path) -> None:
    """A commit by a connection of no convhook database (it changes ``data_version``)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            conn.execute("CREATE TABLE IF NOT EXISTS watch_probe (n INTEGER)")
            conn.execute("INSERT INTO watch_probe VALUES (1)")
    finally:
        conn.close()


@pytest.fixture
async def watched(db_path: Path) -> AsyncIterator[tuple[Database, str, _Calls]]:
    """A producer database on a SQLite file (writer thread), a workspace with an endpoint,
    and the calls of its deliveries' watch."""
    async with open_database(str(db_path), "producer", synchronous="NORMAL") as db:
        ws = await db.write(add_workspace)
        secret = str(Secret.generate())
        await db.write(lambda c: add_endpoint(c, ws, "http://127.0.0.1:9/h", secret, _ms()))
        calls = _Calls()
        unwatch = DeliveryStore(db).watch(calls)
        assert unwatch is not None
        await calls.started(db_path)
        try:
            yield db, ws, calls
        finally:
            unwatch()


async def test_own_writes_that_add_no_deliveries_do_not_wake(
    watched: tuple[Database, str, _Calls],
) -> None:
    """Writes of this process's writer that add no deliveries (a dispatcher's records, an
    endpoint change) call nothing back."""
    db, _ws, calls = watched
    before = calls.count
    for n in range(20):
        await db.write(lambda c, n=n: c.execute("UPDATE endpoints SET description = ?", (f"d{n}",)))
    assert await calls.since(before) == 0


async def test_own_writes_that_add_deliveries_wake(
    watched: tuple[Database, str, _Calls],
) -> None:
    """An event recorded through this process's writer fans out to a delivery: that wakes."""
    db, ws, calls = watched
    before = calls.count
    await db.write(lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], _ms()))
    assert await calls.since(before) >= 1


async def test_another_process_commit_wakes_even_without_new_deliveries(
    watched: tuple[Database, str, _Calls], db_path: Path
) -> None:
    """A commit by another connection while this process's writer is idle calls back, new
    rows or not (a redelivery from another process adds none)."""
    _db, ws, calls = watched
    async with open_database(str(db_path), "producer", synchronous="NORMAL") as other:
        before = calls.count
        await other.write(lambda c: c.execute("UPDATE endpoints SET description = 'other'"))
        assert await calls.since(before) >= 1
        before = calls.count
        await other.write(lambda c: record_event(c, ws, "conv_2", 1, LIFECYCLE[0], _ms()))
        assert await calls.since(before) >= 1


async def test_without_a_table_every_commit_wakes(db_path: Path) -> None:
    """A watch given no table keeps the plain rule: any commit seen calls back."""
    async with open_database(str(db_path), "producer", synchronous="NORMAL") as db:
        calls = _Calls()
        unwatch = db.watch("any", calls)
        assert unwatch is not None
        try:
            await calls.started(db_path)
            before = calls.count
            await db.write(add_workspace)
            assert await calls.since(before) >= 1
        finally:
            unwatch()


@pytest.mark.parametrize("busy", [False, True])
async def test_a_writer_process_counts_as_own(db_path: Path, busy: bool) -> None:
    """With its writer in a child process, the child's commits are this process's own: no
    call back for writes that add no deliveries, whether each waits for the last or many
    are in flight at once."""
    async with open_database(str(db_path), "producer", synchronous="NORMAL") as setup:
        ws = await setup.write(add_workspace)
    async with open_database(
        str(db_path), "producer", synchronous="NORMAL", writer="process"
    ) as db:
        calls = _Calls()
        unwatch = DeliveryStore(db).watch(calls)
        assert unwatch is not None
        try:
            await calls.started(db_path)
            before = calls.count

            async def create(n: int) -> None:
                await db.write(
                    endpoints.create,
                    *(f"ep_{n}", ws, "http://h/", "whsec_x", _ms(), "", None, True, None, 10),
                )

            if busy:
                await asyncio.gather(*(create(n) for n in range(30)))
            else:
                for n in range(30):
                    await create(n)
            assert await calls.since(before) == 0
        finally:
            unwatch()
