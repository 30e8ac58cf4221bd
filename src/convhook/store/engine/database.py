"""Group commit, shared by the SQLite and PostgreSQL engines.

Every write is a function run on a single writer thread. The thread takes every write that is
waiting, runs each in its own SAVEPOINT inside one transaction, commits once, and only then
resolves the callers' futures, so an awaited :meth:`Database.write` means "committed". A write
that raises is rolled back to its savepoint alone; the others in the batch commit. Reads run on
a small pool of threads with their own connections.

Store code is written once against the DB-API shape both engines share (``conn.execute(sql,
params)`` with ``?`` or ``:name`` placeholders, rows indexable by column name); the PostgreSQL
engine adapts the few spellings that differ (see :mod:`convhook.store.engine.postgres`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from convhook.errors import ClosedError, StoreError

T = TypeVar("T")
log = logging.getLogger("convhook.store")

_STOP = object()


@dataclass
class _Job:
    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    outcome: tuple[bool, Any] = field(default=(False, None))


class Database(ABC):
    """A database with a group-committing writer thread and a pool of reader threads."""

    dialect: str = ""

    def __init__(self, *, max_batch: int = 1024, readers: int = 4) -> None:
        self._max_batch = max_batch
        self._readers = readers
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[Any] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the data lives, for messages (never includes a password)."""

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection, set up for this engine."""

    @abstractmethod
    def _migrate(self, conn: Any) -> None:
        """Check (and for embedded engines, apply) the schema migrations."""

    @abstractmethod
    def _begin(self, conn: Any) -> None:
        """Start the batch transaction."""

    def _is_disconnect(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone and must be replaced."""
        return False

    @abstractmethod
    def _driver_error(self) -> type[BaseException]:
        """The driver's base exception class."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    async def open(self) -> None:
        """Check the schema and start the writer thread."""
        if self._thread is not None:
            return
        conn = await asyncio.to_thread(self._open_writer)
        self._thread = threading.Thread(
            target=self._writer, args=(conn,), name=f"db-writer:{self.name}", daemon=True
        )
        self._thread.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="db-reader")

    def _open_writer(self) -> Any:
        try:
            conn = self._connect()
        except self._driver_error() as exc:
            raise StoreError(f"cannot open database {self.name}: {exc}") from exc
        try:
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, self._driver_error()):
                raise StoreError(f"cannot migrate database {self.name}: {exc}") from exc
            raise
        return conn

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
                with contextlib.suppress(Exception):
                    conn.close()
            self._reader_conns.clear()

    async def write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` in a write transaction; return once its changes are committed."""
        if self._thread is None:
            raise ClosedError(f"database {self.name} is not open: use `async with` or open()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

    async def read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on a reader connection (a consistent snapshot of committed data)."""
        if self._pool is None:
            raise ClosedError(f"database {self.name} is not open: use `async with` or open()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_read, fn)

    def _run_read(self, fn: Callable[[Any], T]) -> T:
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._connect()
                self._local.conn = conn
                with self._lock:
                    self._reader_conns.append(conn)
            self._begin_read(conn)
            try:
                return fn(conn)
            finally:
                self._end_read(conn)
        except self._driver_error() as exc:
            if self._is_disconnect(exc):
                self._local.conn = None
            raise StoreError(f"read from {self.name} failed: {exc}") from exc

    def _begin_read(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def _end_read(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _writer(self, conn: Any) -> None:
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
                conn = self._commit(conn, batch)
                if stop:
                    return
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _commit(self, conn: Any, batch: list[_Job]) -> Any:
        """Run one batch; return the connection to use next (a new one after a disconnect)."""
        error = self._driver_error()
        try:
            if conn is None:
                conn = self._connect()
            self._begin(conn)
            if len(batch) == 1:
                # Alone in its transaction a write needs no savepoint: a failure rolls the
                # transaction back. That saves two statements (two round trips on PostgreSQL)
                # whenever writes are not arriving concurrently.
                job = batch[0]
                try:
                    job.outcome = (True, job.fn(conn))
                except BaseException as exc:  # handed to the caller's future
                    if isinstance(exc, error) and self._is_disconnect(exc):
                        raise
                    conn.execute("ROLLBACK")
                    job.outcome = (False, self._wrap(exc))
                else:
                    conn.execute("COMMIT")
            else:
                self._run_with_savepoints(conn, batch)
                conn.execute("COMMIT")
        except error as exc:
            log.warning(
                "batch of %d writes to %s failed: %s",
                len(batch),
                self.name,
                exc,
                extra={"action": "batch_failed"},
            )
            if self._is_disconnect(exc):
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            else:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            failure = StoreError(f"commit to {self.name} failed: {exc}; retry the request")
            failure.__cause__ = exc
            for job in batch:
                job.outcome = (False, failure)
        self.batches += 1
        self.writes += len(batch)
        self._settle_all(batch)
        return conn

    def _run_with_savepoints(self, conn: Any, batch: list[_Job]) -> None:
        error = self._driver_error()
        for job in batch:
            conn.execute("SAVEPOINT job")
            try:
                job.outcome = (True, job.fn(conn))
                conn.execute("RELEASE SAVEPOINT job")
            except BaseException as exc:  # handed to the caller's future
                if isinstance(exc, error) and self._is_disconnect(exc):
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT job")
                conn.execute("RELEASE SAVEPOINT job")
                job.outcome = (False, self._wrap(exc))

    def _wrap(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self._driver_error()):
            err = StoreError(f"write to {self.name} failed: {exc}")
            err.__cause__ = exc
            return err
        return exc

    @staticmethod
    def _settle_all(batch: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A closed loop means nobody is waiting for these results any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
