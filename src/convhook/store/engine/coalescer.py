"""Coalescing of many small writes into one write job on a group-committing database."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from convhook.store.engine.database import Database

T_in = TypeVar("T_in")
R = TypeVar("R")


class Coalescer(Generic[T_in, R]):
    """Turns the calls made while a write is waiting into ONE write job.

    ``run(conn, items)`` gets every item submitted until the job starts on the writer thread
    and returns one result per item. Each job's SAVEPOINT and each statement release and
    retake the GIL; one statement for a whole batch keeps the writer thread from competing
    with the event loop per item.

    The queue is a deque, not a list behind a lock: appends and pops are atomic, and a lock
    shared with the writer thread made the event loop wait whenever the writer held it while
    waiting for the GIL.
    """

    def __init__(self, db: Database, run: Callable[[Any, list[T_in]], list[R]]) -> None:
        self._db = db
        self._run = run
        self._items: deque[tuple[T_in, asyncio.Future[R]]] = deque()
        self._queued = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T_in) -> R:
        """Queue ``item``; return its result once the job holding it has committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if not self._queued:
            self._queued = True
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[tuple[T_in, asyncio.Future[R]]]:
        # Cleared before draining: an item appended after the drain then sees the flag down
        # and starts a job of its own (at worst an empty one), so none is left behind.
        self._queued = False
        items = self._items
        taken = []
        while True:
            try:
                taken.append(items.popleft())
            except IndexError:
                return taken

    async def _flush(self) -> None:
        taken: list[tuple[T_in, asyncio.Future[R]]] = []

        def job(conn: Any) -> list[R]:
            # Taken on the writer thread, so items added until the batch starts join it.
            taken.extend(self._take())
            return self._run(conn, [item for item, _ in taken])

        try:
            results = await self._db.write(job)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            if not taken:
                taken = self._take()
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(taken, results, strict=True):
            if not future.done():
                future.set_result(result)
