"""SQLite in WAL mode with group commit: many concurrent writers share one fsync.

Every write is a function run on a single writer thread. The thread takes every write that is
waiting, runs each in its own SAVEPOINT inside one transaction, commits once, and only then
resolves the callers' futures, so an awaited :meth:`SQLiteDatabase.write` means "on disk".
A write that raises is rolled back to its savepoint alone; the others in the batch commit.
Reads run on a small pool of threads with their own connections, which WAL lets proceed
while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from convhook.errors import ClosedError, StoreError
from convhook.store.migrations import Migration, apply_sqlite

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]

_STOP = object()


@dataclass
class _Job:
    fn: WriteFn
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    outcome: tuple[bool, Any] = field(default=(False, None))


def connect(path: str | Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection set up as every convhook connection is: WAL, foreign keys, busy wait."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SQLiteDatabase:
    """One SQLite file: a group-committing writer thread and a pool of readers.

    Use as ``async with SQLiteDatabase(path, migrations) as db``; ``synchronous="FULL"``
    (the default) makes every commit durable against power loss, "NORMAL" against a crash
    of the process only.
    """

    def __init__(
        self,
        path: str | Path,
        migrations: list[Migration] | None = None,
        *,
        synchronous: str = "FULL",
        max_batch: int = 1024,
        readers: int = 4,
    ) -> None:
        self.path = Path(path)
        self._migrations = migrations or []
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._readers = readers
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    async def __aenter__(self) -> SQLiteDatabase:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Create or upgrade the schema and start the writer thread."""
        if self._thread is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = connect(self.path, synchronous=self._synchronous)
            apply_sqlite(conn, self._migrations)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._writer, args=(conn,), name=f"sqlite-writer:{self.path.name}", daemon=True
        )
        self._thread.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        """Finish the writes already queued, then stop the threads."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; return once its changes are committed."""
        if self._thread is None:
            raise ClosedError(f"database {self.path} is not open: use `async with` or open()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a reader connection (a consistent snapshot of committed data)."""
        if self._pool is None:
            raise ClosedError(f"database {self.path} is not open: use `async with` or open()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous=self._synchronous)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"read from {self.path} failed: {exc}") from exc

    def _writer(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                assert isinstance(first, _Job)
                batch = [first]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, _Job)
                    batch.append(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.outcome = (True, job.fn(conn))
                    conn.execute("RELEASE job")
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    job.outcome = (False, _wrap(exc, self.path))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StoreError(f"commit to {self.path} failed: {exc}")
            err.__cause__ = exc
            for job in batch:
                job.outcome = (False, err)
        self.batches += 1
        self.writes += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A closed loop means nobody is waiting for these results any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)


def _wrap(exc: BaseException, path: Path) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        err = StoreError(f"write to {path} failed: {exc}")
        err.__cause__ = exc
        return err
    return exc


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
