"""A SQLite inbox whose writes run in a child process (see :mod:`.writer_process`).

``convhook listen`` stores through it: the event loop that verifies and validates requests
then never waits for the GIL behind a writer thread, and the child commits while the loop
reads the next requests. Every write of the inbox goes to the child, so two writers never
wait on each other's SQLite lock; reads stay on the reader threads of the parent.

Adds (and completions) are batched on their way: a request's event goes out with those of the
same event-loop turn, or as soon as :data:`EAGER` have gathered, so the child starts
committing the first of a burst while the loop is still reading the rest. The child puts all
that arrived meanwhile in one transaction, so a burst still costs one fsync or two.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from convhook.store.engine.writer_process import WriterProcess, settle
from convhook.store.inbox import ops as sql
from convhook.store.inbox.base import HandlerStatus, InboxEntry, Received
from convhook.store.inbox.store import SQLiteInbox

# How many adds gather before they are sent without waiting for the end of the loop's turn.
# Measured with bench/receiver.py (64 connections, same run): 16 and 32 did alike, 8 about 1%
# less and 4 about 7% less (more frames and system calls); sending only at the end of the turn
# leaves the child idle while a whole burst is read.
EAGER = 16

T = TypeVar("T")
R = TypeVar("R")


class _Batcher(Generic[T, R]):
    """Sends items as one writer-process call per batch; each caller gets its own result."""

    def __init__(self, writer: WriterProcess, op: str) -> None:
        self._writer = writer
        self._op = op
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= EAGER:
            self._send()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _send(self) -> None:
        self._scheduled = False
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []

        def resolve(ok: bool, value: Any) -> None:
            for i, future in enumerate(futures):
                settle(future, ok, value[i] if ok else value)

        self._writer.post(self._op, (items,), resolve)


class ProcessSQLiteInbox(SQLiteInbox):
    """:class:`~convhook.store.inbox.store.SQLiteInbox` with its writes in a child process."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__(path, synchronous=synchronous)
        self._writer = WriterProcess(self.path, __name__, synchronous=synchronous)
        self._add_batch: _Batcher[tuple[Any, ...], bool] = _Batcher(self._writer, "add")
        self._done_batch: _Batcher[tuple[str, str, float], None] = _Batcher(
            self._writer, "complete"
        )

    async def open(self) -> None:
        # The parent's database applies the migrations before the child connects.
        await super().open()
        await self._writer.start()

    async def close(self) -> None:
        await self._writer.close()
        await super().close()

    async def add(self, received: Received) -> bool:
        return await self._add_batch.submit(_received_row(received))

    async def complete(self, event_id: str, now: float, handlers_done: Sequence[str]) -> None:
        await self._done_batch.submit((event_id, json.dumps(list(handlers_done)), now))

    async def claim(
        self, now: float, limit: int, lease: float, *, max_attempts: int | None = None
    ) -> list[InboxEntry]:
        rows = await self._writer.call("claim", now, limit, lease, max_attempts)
        entries = [_entry_of(row) for row in rows]
        entries.sort(key=lambda e: e.received_at)
        return entries

    async def _write(self, op: str, *args: Any) -> Any:
        return await self._writer.call(op, *args)


# -- wire forms -------------------------------------------------------------------------


def _received_row(r: Received) -> tuple[Any, ...]:
    return (
        r.event_id,
        r.webhook_id,
        r.event_type,
        r.body,
        dict(r.headers),
        r.received_at,
        r.claimed_until,
        r.done,
    )


def _entry_row(e: InboxEntry) -> tuple[Any, ...]:
    return (
        e.event_id,
        e.webhook_id,
        e.event_type,
        e.body,
        dict(e.headers),
        e.received_at,
        e.status.value,
        e.attempts,
        e.next_attempt_at,
        e.handlers_done,
        e.last_error,
        e.updated_at,
    )


def _entry_of(row: Sequence[Any]) -> InboxEntry:
    return InboxEntry(
        event_id=row[0],
        webhook_id=row[1],
        event_type=row[2],
        body=row[3],
        headers=row[4],
        received_at=row[5],
        status=HandlerStatus(row[6]),
        attempts=row[7],
        next_attempt_at=row[8],
        handlers_done=tuple(row[9]),
        last_error=row[10],
        updated_at=row[11],
    )


# -- the operations the child runs ------------------------------------------------------


def _add(conn: Any, rows: list[list[Any]]) -> list[bool]:
    return sql.insert_exclusive(conn, [Received(*row) for row in rows])


def complete(conn: Any, items: list[list[Any]]) -> list[None]:
    return sql.complete(conn, [(e, done, at) for e, done, at in items])


def _claim(
    conn: Any, now: float, limit: int, lease: float, max_attempts: int | None
) -> list[tuple[Any, ...]]:
    entries = sql.claim_entries(conn, sql.CLAIM_SQLITE, now, limit, lease, max_attempts)
    return [_entry_row(e) for e in entries]


OPS = {"add": _add, "complete": complete, "claim": _claim, **sql.WRITES}
