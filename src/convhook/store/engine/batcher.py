"""Many small writes of one kind as one write operation: the hot paths' batching.

A request that stores one event should not cost a write of its own: :class:`Batcher` gathers
the items submitted in the same turn of the event loop, or as soon as :data:`EAGER` have
gathered, and sends them as ONE ``op(conn, items)`` to the database's writer, which
group-commits it with whatever else is waiting. Each caller gets its own item's result.
One write per batch keeps the writer from paying a savepoint and a statement per item (and,
on a writer thread, from competing with the event loop for the GIL per item); a writer thread
also joins the batches of one op that wait together into one write (``merge``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from convhook.store.engine.connection import Connection
from convhook.store.engine.database import Database, settle

T = TypeVar("T")
R = TypeVar("R")

# How many items gather before they are sent without waiting for the end of the loop's turn.
# Measured with bench/receiver.py (64 connections, same run): 16 and 32 did alike, 8 about 1%
# less and 4 about 7% less (more frames and system calls); sending only at the end of the turn
# leaves the writer idle while a whole burst is read.
EAGER = 16


class Batcher(Generic[T, R]):
    """Sends the items submitted together as one ``op(conn, items) -> results`` write."""

    def __init__(
        self, db: Database, op: Callable[[Connection, list[T]], list[R]], *, eager: int = EAGER
    ) -> None:
        self._db = db
        self._op = op
        self._eager = eager
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._scheduled = False

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future has its result once the write holding it committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._eager:
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

        try:
            self._db.post(self._op, (items,), resolve, merge=True)
        except Exception as exc:  # noqa: BLE001 - a closed database: every caller hears it
            resolve(False, exc)
