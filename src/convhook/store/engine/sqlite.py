"""SQLite in WAL mode: the embedded engine, so ``convhook serve`` needs nothing else.

Writes are group-committed (see :mod:`convhook.store.engine.database`): many concurrent
writers share one transaction and one fsync. WAL lets readers proceed while the writer
commits; other processes on the same file wait on SQLite's lock (``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from convhook.store.engine.connection import Dialect
from convhook.store.engine.database import Database, Unwatch, WriterKind
from convhook.store.engine.groupcommit import GroupCommit
from convhook.store.engine.migrations import Migration, apply_sqlite

SQLITE = Dialect("sqlite", sqlite3.IntegrityError, shared=False)

# How often a watch looks for another process's commit: the wait of an event recorded by one
# process (the API) before another (the dispatcher) claims it. Measured with bench/peers.py at
# 200 events/s: 20 ms gave a delivery p99 of 19 ms from storing to arrival, 5 ms 7 ms, with an
# idle dispatcher at about 1% of a core either way.
_WATCH_INTERVAL = 0.005


class SQLiteConnection(sqlite3.Connection):
    """A :class:`sqlite3.Connection` that names its dialect and, when made with
    ``tracked=True``, keeps the cursors it makes until :meth:`release` closes them.

    Why: a cursor that ran ``executemany`` holds its cached statement, and freeing the cursor
    resets that statement. Freed on another thread (an exception's traceback reaching the
    event loop, a reference cycle collected there) while this connection's own thread runs the
    same SQL again, the reset lands between two rows of that run, which then fails with
    "bad parameter or other API misuse". Closing the cursors on the connection's own thread
    after each write batch and each read leaves nothing for another thread to reset.
    """

    dialect: ClassVar[Dialect] = SQLITE
    lone = False
    _cursors: list[sqlite3.Cursor] | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor = super().execute(sql, parameters)
        if self._cursors is not None:
            self._cursors.append(cursor)
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        cursor = super().executemany(sql, parameters)
        if self._cursors is not None:
            self._cursors.append(cursor)
        return cursor

    def release(self) -> None:
        """Close the cursors made since the last release (call on the connection's thread)."""
        cursors = self._cursors
        if cursors:
            self._cursors = []
            for cursor in cursors:
                with contextlib.suppress(sqlite3.ProgrammingError):  # the connection closed
                    cursor.close()

    def pipeline(self, *, final: bool = False) -> contextlib.AbstractContextManager[None]:
        """Statements run in process, with no round trip to save."""
        return contextlib.nullcontext()


def connect(
    path: str | Path, *, synchronous: str = "FULL", tracked: bool = False
) -> SQLiteConnection:
    """A connection set up as every convhook connection is: WAL, foreign keys, busy wait.
    ``tracked``: its cursors wait for :meth:`SQLiteConnection.release` (a connection whose
    cursors may be freed on another thread: the writer's and the readers')."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30, factory=SQLiteConnection
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if tracked:
        conn._cursors = []
    return conn


def group_commit(path: str | Path) -> GroupCommit:
    """How batches of writes run on SQLite."""
    # IMMEDIATE takes the write lock up front, so a batch never fails half-way on SQLITE_BUSY
    # when another process writes to the same file.
    return GroupCommit(str(path), "BEGIN IMMEDIATE", sqlite3.Error)


class SQLiteDatabase(Database):
    """One SQLite file. ``synchronous="FULL"`` (the default) makes every commit durable
    against power loss, ``"NORMAL"`` against a crash of the process only. The schema is
    created or upgraded on open: an embedded database has no separate operator step.
    ``writer``: see :class:`~convhook.store.engine.database.Database`.
    """

    dialect = SQLITE

    def __init__(
        self,
        path: str | Path,
        migrations: list[Migration] | None = None,
        *,
        synchronous: str = "FULL",
        writer: WriterKind = "thread",
        max_batch: int = 1024,
        readers: int = 4,
    ) -> None:
        super().__init__(max_batch=max_batch, readers=readers, writer=writer)
        self.path = Path(path)
        self._migrations = migrations or []
        self._synchronous = synchronous
        self._watching: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def synchronous(self) -> str:
        """The ``PRAGMA synchronous`` level of every connection to this file."""
        return self._synchronous

    def connect(self) -> SQLiteConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect(self.path, synchronous=self._synchronous, tracked=True)

    def _migrate(self, conn: SQLiteConnection) -> None:  # type: ignore[override]
        apply_sqlite(conn, self._migrations)

    def group_commit(self) -> GroupCommit:
        return group_commit(self.name)

    def child_target(self) -> tuple[str, str, str]:
        return ("sqlite", str(self.path), self._synchronous)

    def watch(
        self,
        channel: str,
        callback: Callable[[], None],
        *,
        table: str | None = None,
        interval: float = _WATCH_INTERVAL,
    ) -> Unwatch:
        """Call ``callback`` when another connection committed to this file (``PRAGMA
        data_version`` changed), looking every ``interval`` seconds on this event loop.

        SQLite cannot say whose commit it was, and this process's own writer (a child process
        is another connection) commits all the time while it works. With ``table``, a commit
        seen while this process's writer moved or was busy calls back only if ``table`` has
        new rows: a dispatcher woken by its own records every few milliseconds spent a read
        and a claim on each wake (measured: about 4% of its CPU per event). Work that adds no
        rows (a redelivery) is then found by the next claim, which a busy dispatcher makes
        with every batch it records."""
        task = asyncio.get_running_loop().create_task(self._watch(callback, interval, table))
        self._watching.append(task)

        def unwatch() -> None:
            task.cancel()
            with contextlib.suppress(ValueError):
                self._watching.remove(task)

        return unwatch

    async def _watch(
        self, callback: Callable[[], None], interval: float, table: str | None
    ) -> None:
        conn = await asyncio.to_thread(connect, self.path, synchronous=self._synchronous)
        # Read inline on the loop, never waiting for a lock: the read costs microseconds,
        # while a hop to a thread fifty times a second cost the loop more than the read.
        conn.execute("PRAGMA busy_timeout=0")
        top_sql = f"SELECT max(rowid) FROM {table}" if table else None
        try:
            last = None
            seen = self.activity()
            top: int | None = None
            while True:
                activity = self.activity()
                grown = False
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if top_sql is not None and version != last:
                        before = top
                        top = conn.execute(top_sql).fetchone()[0]
                        grown = before != top
                except sqlite3.OperationalError:  # locked for a moment: just look for work
                    version = None
                    callback()
                # The commit was this process's own only if its writer moved or was busy
                # since the last look; then only new rows in ``table`` say there is work.
                own = activity[0] != seen[0] or activity[1] or seen[1]
                changed = last is not None and version != last
                if changed and (top_sql is None or not own or grown):
                    callback()
                last, seen = version, activity
                await asyncio.sleep(interval)
        finally:
            conn.close()

    async def close(self) -> None:
        watching, self._watching = self._watching, []
        try:
            for task in watching:
                task.cancel()
            # A watch that failed (its connection could not open) must not keep the writer
            # from stopping: it only woke callers early, and they also poll.
            await asyncio.gather(*watching, return_exceptions=True)
        finally:
            await super().close()
