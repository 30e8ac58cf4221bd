"""The inbox in a group-committing database: SQLite (one receiving process) or PostgreSQL.

:class:`DatabaseInbox` keeps the :class:`~convhook.store.inbox.Inbox` in any
:class:`~convhook.store.engine.database.Database`, so many concurrent requests share one commit: a
SQLite file (:class:`SQLiteInbox`) or PostgreSQL (:class:`PostgresInbox`, any number of
receiving processes). :func:`open_inbox` picks one from a path or URL. The statements that
change the inbox are in :mod:`convhook.store.inbox.ops`; the reads are here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convhook.store.engine.coalescer import Coalescer
from convhook.store.engine.database import Database
from convhook.store.engine.migrations import load
from convhook.store.engine.url import DatabaseURL
from convhook.store.inbox import ops as sql
from convhook.store.inbox.base import HandlerStatus, Inbox, InboxEntry, Received


class DatabaseInbox(Inbox):
    """The inbox in a :class:`~convhook.store.engine.database.Database` of either engine.

    ``db`` must ship the ``inbox`` migrations. ``shared`` says whether several receiving
    processes may use it at once (default: True on PostgreSQL, False on SQLite); see
    :meth:`Inbox.release_running`.
    """

    def __init__(self, db: Database, *, shared: bool | None = None) -> None:
        self.db = db
        postgres = db.dialect == "postgres"
        self.shared = postgres if shared is None else shared
        self._claim_sql = sql.CLAIM_POSTGRES if postgres else sql.CLAIM_SQLITE
        # Arrival order: SQLite's rowid, PostgreSQL's identity column.
        self._order = "i.seq" if postgres else "i.rowid"
        self._notifies = postgres
        # SQLite's BEGIN IMMEDIATE makes the writer exclusive, even across processes.
        self._add_rows = sql.insert if postgres else sql.insert_exclusive
        self._watchers: list[Callable[[], None]] = []
        self._adds: Coalescer[Received, bool] = Coalescer(db, self._insert)
        self._completions: Coalescer[tuple[str, str, float], None] = Coalescer(db, sql.complete)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.name!r})"

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()
        self._watchers.clear()

    def watch(self, callback: Callable[[], None]) -> None:
        listen = getattr(self.db, "listen", None)
        if listen is None:
            return
        if not self._watchers:
            listen(sql.CHANNEL, self._notified)
        self._watchers.append(callback)

    def _notified(self) -> None:
        for callback in list(self._watchers):
            callback()

    def _insert(self, conn: Any, items: list[Received]) -> list[bool]:
        inserted = self._add_rows(conn, items)
        if self._notifies and any(
            new and r.claimed_until is None and not r.done
            for new, r in zip(inserted, items, strict=True)
        ):
            conn.execute(sql.NOTIFY, (sql.CHANNEL,))
        return inserted

    async def add(self, received: Received) -> bool:
        return await self._adds.submit(received)

    async def claim(
        self, now: float, limit: int, lease: float, *, max_attempts: int | None = None
    ) -> list[InboxEntry]:
        claim_sql = self._claim_sql
        entries = await self.db.write(
            lambda c: sql.claim_entries(c, claim_sql, now, limit, lease, max_attempts)
        )
        entries.sort(key=lambda e: e.received_at)
        return entries

    async def next_due(self) -> float | None:
        def due(conn: Any) -> float | None:
            row = conn.execute(
                "SELECT min(next_attempt_at) FROM convhook_inbox_state "
                "WHERE status IN ('pending', 'running')"
            ).fetchone()
            value: float | None = row[0]
            return value

        return await self.db.read(due)

    async def complete(self, event_id: str, now: float, handlers_done: Sequence[str]) -> None:
        await self._completions.submit((event_id, json.dumps(list(handlers_done)), now))

    async def fail(
        self,
        event_id: str,
        now: float,
        error: str,
        handlers_done: Sequence[str],
        retry_at: float | None,
    ) -> None:
        await self._write("fail", sql.fail_args(event_id, now, error, handlers_done, retry_at))

    async def get(self, event_id: str) -> InboxEntry | None:
        def get(conn: Any) -> InboxEntry | None:
            row = conn.execute(
                f"SELECT {sql.COLUMNS} {sql.FROM} WHERE i.event_id = ?", (event_id,)
            ).fetchone()
            return None if row is None else sql.entry(row)

        return await self.db.read(get)

    async def recent(
        self, status: HandlerStatus | None = None, limit: int = 50
    ) -> list[InboxEntry]:
        order = self._order

        def select(conn: Any) -> list[InboxEntry]:
            if status is None:
                rows = conn.execute(
                    f"SELECT {sql.COLUMNS} {sql.FROM} ORDER BY {order} DESC LIMIT ?", (limit,)
                )
            else:
                rows = conn.execute(
                    f"SELECT {sql.COLUMNS} {sql.FROM} WHERE s.status = ? ORDER BY {order} DESC LIMIT ?",
                    (status.value, limit),
                )
            return [sql.entry(r) for r in rows]

        return await self.db.read(select)

    async def requeue(self, event_ids: Sequence[str], now: float) -> list[str]:
        found: list[str] = await self._write("requeue", list(event_ids), now, self._notifies)
        return found

    async def failed_ids(self, limit: int = 1000) -> list[str]:
        order = self._order

        def select(conn: Any) -> list[str]:
            rows = conn.execute(
                "SELECT s.event_id FROM convhook_inbox_state s JOIN convhook_inbox i "
                f"ON i.event_id = s.event_id WHERE s.status = 'failed' ORDER BY {order} LIMIT ?",
                (limit,),
            )
            return [r[0] for r in rows]

        return await self.db.read(select)

    async def release_running(self, now: float) -> int:
        if self.shared:
            return 0
        count: int = await self._write("release", now)
        return count

    async def extend(self, event_ids: Sequence[str], until: float) -> None:
        if event_ids:
            await self._write("extend", list(event_ids), until)

    async def _write(self, op: str, *args: Any) -> Any:
        """Run the write ``sql.WRITES[op](conn, *args)`` (a writer process overrides this)."""
        fn = sql.WRITES[op]
        return await self.db.write(lambda c: fn(c, *args))


class SQLiteInbox(DatabaseInbox):
    """The inbox in a SQLite file (WAL, group commit, ``synchronous=FULL`` by default); one
    receiving process per file (``convhook inbox`` commands may use it at the same time)."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        from convhook.store.engine.sqlite import SQLiteDatabase

        self.path = Path(path)
        super().__init__(
            SQLiteDatabase(self.path, load("sqlite", "inbox"), synchronous=synchronous)
        )


class PostgresInbox(DatabaseInbox):
    """The inbox in PostgreSQL, shared by any number of receiving processes.

    The schema is checked on open, not changed: run ``convhook db upgrade --db URL
    --component inbox`` first (or pass ``auto_upgrade=True``, e.g. in tests).
    """

    def __init__(self, dsn: str, *, auto_upgrade: bool = False) -> None:
        from convhook.store.engine.postgres import PostgresDatabase

        self.dsn = dsn
        super().__init__(
            PostgresDatabase(dsn, load("postgres", "inbox"), auto_upgrade=auto_upgrade)
        )


def open_inbox(url: str | Path, *, auto_upgrade: bool = False) -> DatabaseInbox:
    """A (not yet opened) inbox at a SQLite path, ``sqlite:///path`` or ``postgresql://`` URL."""
    target = DatabaseURL.parse(str(url))
    if target.engine == "postgres":
        return PostgresInbox(target.target, auto_upgrade=auto_upgrade)
    return SQLiteInbox(target.target)
