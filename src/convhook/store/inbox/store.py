"""The inbox in a group-committing database: SQLite (one receiving process) or PostgreSQL.

:class:`DatabaseInbox` keeps the :class:`~convhook.store.inbox.base.Inbox` in any
:class:`~convhook.store.engine.database.Database`, so many concurrent requests share one
commit: a SQLite file (:class:`SQLiteInbox`; ``convhook listen`` runs its writer in a child
process) or PostgreSQL (:class:`PostgresInbox`, any number of receiving processes).
:func:`open_inbox` picks one from a path or URL. The statements are in
:mod:`convhook.store.inbox.ops`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from convhook.store.engine.batcher import Batcher
from convhook.store.engine.database import Database, WriterKind
from convhook.store.engine.migrations import load
from convhook.store.engine.url import DatabaseURL
from convhook.store.inbox import ops, order
from convhook.store.inbox.base import (
    Gap,
    GapStatus,
    HandlerStatus,
    Inbox,
    InboxEntry,
    Progress,
    Received,
)


class DatabaseInbox(Inbox):
    """The inbox in a :class:`~convhook.store.engine.database.Database` of either engine.

    ``db`` must ship the ``inbox`` migrations. ``shared`` says whether several receiving
    processes may use it at once (default: True on PostgreSQL, False on SQLite); see
    :meth:`Inbox.release_running`.
    """

    def __init__(self, db: Database, *, shared: bool | None = None) -> None:
        self.db = db
        self.shared = db.dialect.shared if shared is None else shared
        self._watchers: list[Callable[[], None]] = []
        self._adds: Batcher[Received, bool] = Batcher(db, ops.add)
        self._completions: Batcher[tuple[str, str, float], None] = Batcher(db, ops.complete)
        self._handled: Batcher[tuple[str, int, int, str, float], None] = Batcher(db, order.handled)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db.name!r})"

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        # The database stops its watches when it closes.
        await self.db.close()
        self._watchers.clear()

    def watch(self, callback: Callable[[], None]) -> None:
        # Only a shared inbox is written by other receiving processes; on SQLite this
        # process stores (and hands its worker) every event itself.
        if not self.db.dialect.shared:
            return
        if not self._watchers:
            self.db.watch(ops.CHANNEL, self._notified)
        self._watchers.append(callback)

    def _notified(self) -> None:
        for callback in list(self._watchers):
            callback()

    async def add(self, received: Received) -> bool:
        return await self._adds.submit(received)

    async def claim(
        self, now: float, limit: int, lease: float, *, max_attempts: int | None = None
    ) -> list[InboxEntry]:
        return await self.db.write(ops.claim, now, limit, lease, max_attempts)

    async def next_due(self) -> float | None:
        return await self.db.read(ops.next_due)

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
        await self.db.write(ops.fail, event_id, now, error, list(handlers_done), retry_at)

    async def get(self, event_id: str) -> InboxEntry | None:
        return await self.db.read(ops.get, event_id)

    async def recent(
        self, status: HandlerStatus | None = None, limit: int = 50
    ) -> list[InboxEntry]:
        return await self.db.read(ops.recent, None if status is None else status.value, limit)

    async def requeue(self, event_ids: Sequence[str], now: float) -> list[str]:
        return await self.db.write(ops.requeue, list(event_ids), now)

    async def failed_ids(self, limit: int = 1000) -> list[str]:
        return await self.db.read(ops.failed_ids, limit)

    async def release_running(self, now: float) -> int:
        if self.shared:
            return 0
        return await self.db.write(ops.release_running, now)

    async def extend(self, event_ids: Sequence[str], until: float) -> None:
        if event_ids:
            await self.db.write(ops.extend, list(event_ids), until)

    ordered = True

    async def progress(self, conversation_id: str) -> Progress:
        return await self.db.read(order.progress, conversation_id)

    async def handled(
        self, conversation_id: str, sequence: int | None, rank: int, event_id: str, now: float
    ) -> None:
        await self._handled.submit((conversation_id, sequence or 0, rank, event_id, now))

    async def between(
        self, conversation_id: str, after: int, before: int
    ) -> list[tuple[int, str, HandlerStatus]]:
        return await self.db.read(order.between, conversation_id, after, before)

    async def note_gap(self, gap: Gap) -> Gap:
        return await self.db.write(order.note_gap, gap)

    async def close_gap(
        self, event_id: str, status: GapStatus, reason: str | None, filled: int, now: float
    ) -> None:
        await self.db.write(order.close_gap, event_id, status, reason, filled, now)

    async def covered(self, conversation_id: str, sequence: int) -> bool:
        return await self.db.read(order.covered, conversation_id, sequence)

    async def gaps(
        self, status: GapStatus | None = None, limit: int = 50, conversation_id: str | None = None
    ) -> list[Gap]:
        value = None if status is None else status.value
        return await self.db.read(order.gaps, value, limit, conversation_id)

    async def gaps_of(self, event_ids: Sequence[str]) -> dict[str, Gap]:
        found = await self.db.read(order.gaps_of, list(event_ids))
        return {gap.event_id: gap for gap in found}

    async def gap_counts(self) -> dict[str, int]:
        return await self.db.read(order.gap_counts)

    async def defer(self, event_id: str, until: float, now: float) -> None:
        await self.db.write(order.defer, event_id, until, now)


class SQLiteInbox(DatabaseInbox):
    """The inbox in a SQLite file (WAL, group commit, ``synchronous=FULL`` by default); one
    receiving process per file (``convhook inbox`` commands may use it at the same time).
    ``writer="process"`` commits in a child process (see
    :class:`~convhook.store.engine.database.Database`)."""

    def __init__(
        self, path: str | Path, *, synchronous: str = "FULL", writer: WriterKind = "thread"
    ) -> None:
        from convhook.store.engine.sqlite import SQLiteDatabase

        self.path = Path(path)
        super().__init__(
            SQLiteDatabase(
                self.path, load("sqlite", "inbox"), synchronous=synchronous, writer=writer
            )
        )


class PostgresInbox(DatabaseInbox):
    """The inbox in PostgreSQL, shared by any number of receiving processes.

    The schema is checked on open, not changed: run ``convhook db upgrade --db URL
    --component inbox`` first (or pass ``auto_upgrade=True``, e.g. in tests).
    """

    def __init__(
        self, dsn: str, *, auto_upgrade: bool = False, writer: WriterKind = "thread"
    ) -> None:
        from convhook.store.engine.postgres import PostgresDatabase

        self.dsn = dsn
        super().__init__(
            PostgresDatabase(
                dsn, load("postgres", "inbox"), auto_upgrade=auto_upgrade, writer=writer
            )
        )


def open_inbox(
    url: str | Path, *, auto_upgrade: bool = False, writer: WriterKind = "thread"
) -> DatabaseInbox:
    """A (not yet opened) inbox at a SQLite path, ``sqlite:///path`` or ``postgresql://`` URL;
    ``writer="process"`` commits in a child process."""
    target = DatabaseURL.parse(str(url))
    if target.engine == "postgres":
        return PostgresInbox(target.target, auto_upgrade=auto_upgrade, writer=writer)
    return SQLiteInbox(target.target, writer=writer)
