"""SQLite in WAL mode: the embedded engine, so ``convhook serve`` needs nothing else.

Writes are group-committed (see :mod:`convhook.store.engine.database`): many concurrent writers share
one transaction and one fsync. WAL lets readers proceed while the writer commits; other
processes on the same file wait on SQLite's lock (``busy_timeout``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from convhook.store.engine.database import Database
from convhook.store.engine.migrations import Migration, apply_sqlite


def connect(path: str | Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection set up as every convhook connection is: WAL, foreign keys, busy wait."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SQLiteDatabase(Database):
    """One SQLite file. ``synchronous="FULL"`` (the default) makes every commit durable
    against power loss, ``"NORMAL"`` against a crash of the process only. The schema is
    created or upgraded on open: an embedded database has no separate operator step."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        migrations: list[Migration] | None = None,
        *,
        synchronous: str = "FULL",
        max_batch: int = 1024,
        readers: int = 4,
    ) -> None:
        super().__init__(max_batch=max_batch, readers=readers)
        self.path = Path(path)
        self._migrations = migrations or []
        self._synchronous = synchronous

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def synchronous(self) -> str:
        """The ``PRAGMA synchronous`` level of every connection to this file."""
        return self._synchronous

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect(self.path, synchronous=self._synchronous)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        apply_sqlite(conn, self._migrations)

    def _begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a batch never fails half-way on
        # SQLITE_BUSY when another process writes to the same file.
        conn.execute("BEGIN IMMEDIATE")

    def _driver_error(self) -> type[BaseException]:
        return sqlite3.Error
