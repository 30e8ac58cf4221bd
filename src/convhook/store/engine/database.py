"""A database: one writer that group-commits named operations, and a pool of readers.

Every write is an operation ``op(conn, *args)``: a module-level function of a connection and
plain arguments, run by :meth:`Database.write`. The writer takes every write that is waiting,
runs them in one transaction (:mod:`.groupcommit`) and only then answers, so an awaited write
means "committed". Where the writer runs is a setting of the database, chosen when it is
opened: a thread of this process, or a child process with a GIL of its own
(:mod:`.writer_process`). Reads run on a small pool of threads with their own
connections and see committed data only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar, TypeVarTuple

from convhook.errors import ClosedError, ConfigError, StoreError
from convhook.store.engine.connection import Connection, Dialect
from convhook.store.engine.groupcommit import GroupCommit, Job, Link, Resolve
from convhook.store.engine.resource import Resource

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
Unwatch = Callable[[], None]
"""Stops a :meth:`Database.watch`."""
WriterKind = Literal["thread", "process"]

_STOP = object()


class Writer(Protocol):
    """Where a database's writes run: a thread here, or a child process."""

    takes_late: bool
    """Whether the writer runs in this process and can take a write's arguments when its
    batch starts (``post(..., take=...)``)."""

    def activity(self) -> tuple[int, bool]:
        """A count that moves with every write posted and every write answered, and whether
        a write is waiting for its answer now."""

    def post(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        resolve: Resolve,
        take: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        """Queue ``op(conn, *args)`` (or ``op(conn, *take())`` with ``take``); ``resolve``
        runs on the caller's loop once committed."""

    async def close(self) -> None:
        """Finish the writes already queued, then stop."""


class Database(Resource):
    """A database with one group-committing writer and a pool of reader threads.

    ``writer="process"`` runs the writes in a child process with a GIL of its own (see
    :mod:`.writer_process`): for a process whose event loop is busy (``convhook listen``,
    ``convhook dispatcher``), whose writes would otherwise wait for the GIL. Every write
    must then be an operation whose arguments and result msgspec can encode.
    """

    dialect: Dialect

    def __init__(
        self, *, max_batch: int = 1024, readers: int = 4, writer: WriterKind = "thread"
    ) -> None:
        if writer not in ("thread", "process"):
            raise ConfigError(f"writer must be 'thread' or 'process', got {writer!r}")
        self.writer = writer
        self._max_batch = max_batch
        self._readers = readers
        self._writer: Writer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[Connection] = []
        self._lock = threading.Lock()

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the data lives, for messages (never includes a password)."""

    @abstractmethod
    def connect(self) -> Connection:
        """A new connection, set up for this engine (raises the driver's error)."""

    @abstractmethod
    def _migrate(self, conn: Connection) -> None:
        """Check (and for embedded engines, apply) the schema migrations."""

    @abstractmethod
    def group_commit(self) -> GroupCommit:
        """How this engine runs a batch of writes."""

    @abstractmethod
    def child_target(self) -> tuple[str, str, str]:
        """How the writer process opens this database: the engine's name, where the data
        is and the engine's one setting (see :mod:`.writer_child`)."""

    async def _start_writer(self, conn: Connection) -> Writer:
        """Start the writer with the (migrated) connection ``conn``."""
        if self.writer == "thread":
            return WriterThread(self, conn, self._max_batch)
        from convhook.store.engine.writer_process import WriterProcess

        # The migrations ran on this connection; the child opens its own.
        conn.close()
        process = WriterProcess(self.child_target(), name=self.name)
        await process.start()
        return process

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, while one runs (``writer="process"``)."""
        pid: int | None = getattr(self._writer, "pid", None)
        return pid

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def batches(self) -> int:
        """Transactions a writer thread committed (or tried to) since it started (a writer
        process does not report them: 0)."""
        return getattr(self._writer, "batches", 0)

    @property
    def writes(self) -> int:
        """Writes a writer thread ran in those transactions (a writer process: 0)."""
        return getattr(self._writer, "writes", 0)

    async def open(self) -> None:
        """Check the schema and start the writer (again: does nothing)."""
        if self._writer is not None:
            return
        conn = await asyncio.to_thread(self._open_writer)
        self._writer = await self._start_writer(conn)
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="db-reader")

    def _open_writer(self) -> Connection:
        error = self._rules.driver_error
        try:
            conn = self.connect()
        except error as exc:
            raise StoreError(f"cannot open database {self.name}: {exc}") from exc
        try:
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, error):
                raise StoreError(f"cannot migrate database {self.name}: {exc}") from exc
            raise
        return conn

    async def installed_version(self, component: str) -> int:
        """The version of ``component``'s schema in this database (0: none), read without
        opening, checking or migrating it (``convhook db status``)."""
        from convhook.store.engine.migrations import installed

        def look() -> int:
            conn = self.connect()
            try:
                return installed(conn, component)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(look)
        except self._rules.driver_error as exc:
            raise StoreError(f"cannot read the schema version of {self.name}: {exc}") from exc

    async def close(self) -> None:
        """Finish the writes already queued, then stop the writer and the readers."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        await writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            for conn in self._reader_conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._reader_conns.clear()

    def post(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        resolve: Resolve,
        *,
        take: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        """:meth:`write` without a coroutine: ``resolve(ok, value)`` runs on this event loop
        once the write committed (or failed). With ``take`` (only if :attr:`takes_late`),
        the writer calls it for the arguments when the write's batch starts. Hot paths batch
        through this (see :class:`~convhook.store.engine.batcher.Batcher`)."""
        if self._writer is None:
            raise ClosedError(f"database {self.name} is not open: use `async with` or open()")
        self._writer.post(op, args, resolve, take)

    @property
    def takes_late(self) -> bool:
        """Whether the writer is a thread of this process (see :meth:`post`'s ``take``)."""
        return self._writer is not None and self._writer.takes_late

    async def write(self, op: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``op(conn, *args)`` in a write transaction; return once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.post(op, args, functools.partial(settle, future))
        return await future

    async def read(self, op: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        """Run ``op(conn, *args)`` on a reader connection (a snapshot of committed data)."""
        if self._pool is None:
            raise ClosedError(f"database {self.name} is not open: use `async with` or open()")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_read, op, args)

    @functools.cached_property
    def _rules(self) -> GroupCommit:
        return self.group_commit()

    def _run_read(self, op: Callable[..., T], args: tuple[Any, ...]) -> T:
        commit = self._rules
        conn: Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self.connect()
                self._local.conn = conn
                with self._lock:
                    self._reader_conns.append(conn)
            conn.execute("BEGIN")
            try:
                return op(conn, *args)
            finally:
                try:
                    conn.execute("COMMIT")
                finally:
                    conn.release()  # on this thread, before the result leaves it
        except commit.driver_error as exc:
            if commit.is_disconnect(exc):
                self._local.conn = None
            raise StoreError(f"read from {self.name} failed: {exc}") from exc

    def watch(
        self, channel: str, callback: Callable[[], None], *, table: str | None = None
    ) -> Unwatch | None:
        """Call ``callback`` (from any thread) when another process may have committed work
        for ``channel``, until the returned function is called or the database closes; None
        if this engine cannot tell (the caller then polls). ``table``: new rows there are
        work; an engine that looks for commits rather than listening for them uses it to
        tell this process's own writes from another's (see the SQLite engine)."""
        return None

    def activity(self) -> tuple[int, bool]:
        """A count that moves whenever this database's writer is sent or answers a write,
        and whether one is waiting for its answer: a commit seen while the count stood still
        and nothing waited was another process's."""
        writer = self._writer
        return (0, False) if writer is None else writer.activity()


def settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Give ``future`` a write's outcome, as a :data:`Resolve` receives it.

    A future already done (its caller was cancelled) is left alone; a write whose own task
    was cancelled cancels the future rather than raising CancelledError out of it.
    """
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(value)


class WriterThread:
    """The writer on a thread of this process: takes every write waiting, commits them as one."""

    def __init__(self, db: Database, conn: Connection, max_batch: int) -> None:
        self._max_batch = max_batch
        self.batches = 0
        self.writes = 0
        self._posted = 0
        self._answered = 0
        self._link = Link(db.group_commit(), db.connect, conn)
        self._queue: queue.SimpleQueue[tuple[Job, asyncio.AbstractEventLoop] | object] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"db-writer:{db.name}", daemon=True)
        self._thread.start()

    takes_late = True

    def post(
        self,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        resolve: Resolve,
        take: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        self._queue.put((Job(op, args, resolve, take=take), asyncio.get_running_loop()))
        self._posted += 1  # once queued: a write refused here must not read as pending

    def activity(self) -> tuple[int, bool]:
        posted, answered = self._posted, self._answered
        return posted + answered, posted > answered

    async def close(self) -> None:
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        limit = self._max_batch
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch: list[tuple[Job, asyncio.AbstractEventLoop]] = [first]  # type: ignore[list-item]
                stop = False
                while len(batch) < limit:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)  # type: ignore[arg-type]
                self._batch(batch)
                if stop:
                    return
        finally:
            self._link.close()

    def _batch(self, batch: list[tuple[Job, asyncio.AbstractEventLoop]]) -> None:
        self._link.run([job for job, _ in batch])
        self.batches += 1
        self.writes += len(batch)
        self._answered += len(batch)  # only this thread writes it
        by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for job, loop in batch:
            by_loop.setdefault(loop, []).append(job)
        for loop, done in by_loop.items():
            # A closed loop means nobody is waiting for these results any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, done)


def _resolve_all(jobs: list[Job]) -> None:
    for job in jobs:
        job.resolve(*job.outcome)
