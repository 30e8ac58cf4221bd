"""Many small writes of one kind as one write operation: the hot paths' batching.

A request that stores one event should not cost a write of its own: :class:`Batcher` turns
the items submitted meanwhile into ONE ``op(conn, items)`` sent to the database's writer,
which group-commits it with whatever else is waiting, and gives each caller its own item's
result. One write per batch keeps the writer from paying a savepoint and a statement per item
(and a writer thread from competing with the event loop for the GIL per item).

How "meanwhile" is cut depends on the writer:

- a writer thread takes the items when the write's batch starts (``post(take=...)``): the
  write is posted at the end of the loop's turn, one of this kind waits in the queue at a time,
  and every item submitted until it starts joins it, so the thread is woken once per batch,
  not once per request;
- a writer process needs the items when the request is written: they go out at the end of
  the loop's turn, or as soon as :data:`EAGER` have gathered, so the child starts committing
  the first of a burst while the loop is still reading the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from convhook.store.engine.connection import Connection
from convhook.store.engine.database import Database, settle

T = TypeVar("T")
R = TypeVar("R")

# How many items gather before they are sent to a writer process without waiting for the end
# of the loop's turn. Measured with bench/receiver.py (64 connections, same run): 16 and 32
# did alike, 8 about 1% less and 4 about 7% less (more frames and system calls); sending only
# at the end of the turn leaves the child idle while a whole burst is read.
EAGER = 16


class Batcher(Generic[T, R]):
    """Sends the items submitted together as one ``op(conn, items) -> results`` write."""

    def __init__(
        self, db: Database, op: Callable[[Connection, list[T]], list[R]], *, eager: int = EAGER
    ) -> None:
        self._db = db
        self._op = op
        self._eager = eager
        # A deque, not a list behind a lock: appends and pops are atomic, and a writer thread
        # takes from it while the loop adds.
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._queued = False  # a write that takes late is in the writer's queue
        self._scheduled = False  # a send at the end of this turn is due

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future has its result once the write holding it committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self._db.takes_late:
            if not self._queued:
                self._queued = True
                # Posted at the end of this turn, not now: an idle writer thread would wake at
                # once and take this item alone, before the rest of the turn's requests (on
                # PostgreSQL that doubled the statements and round trips per event).
                loop.call_soon(self._post_late)
        elif len(self._waiting) >= self._eager:
            self._send()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return future

    def _post_late(self) -> None:
        taken: list[tuple[T, asyncio.Future[R]]] = []

        def take() -> tuple[Any, ...]:
            # On the writer thread. Lowered before draining: an item added after the drain
            # then sees the flag down and posts a write of its own (at worst an empty one),
            # so none is left behind.
            self._queued = False
            waiting = self._waiting
            while True:
                try:
                    taken.append(waiting.popleft())
                except IndexError:
                    return ([item for item, _ in taken],)

        self._post((), _answer(taken), take)

    def _send(self) -> None:
        self._scheduled = False
        if not self._waiting:
            return
        taken = list(self._waiting)
        self._waiting.clear()
        self._post(([item for item, _ in taken],), _answer(taken), None)

    def _post(
        self,
        args: tuple[Any, ...],
        resolve: Callable[[bool, Any], None],
        take: Callable[[], tuple[Any, ...]] | None,
    ) -> None:
        try:
            self._db.post(self._op, args, resolve, take=take)
        except Exception as exc:  # noqa: BLE001 - a closed database: every caller hears it
            self._queued = False
            if take is not None:
                take()
            resolve(False, exc)


def _answer(taken: list[tuple[Any, asyncio.Future[Any]]]) -> Callable[[bool, Any], None]:
    """The resolve of one batched write: each caller gets its item's result, or the error."""

    def resolve(ok: bool, value: Any) -> None:
        for i, (_, future) in enumerate(taken):
            settle(future, ok, value[i] if ok else value)

    return resolve
