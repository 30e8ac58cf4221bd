"""Runs handlers for stored events: claims due inbox rows, retries failures with backoff.

The worker wakes when the receiver stores a new event (an :class:`asyncio.Event`), when another
process notifies a PostgreSQL inbox (a replay, an event stored pending), and polls
slowly as a fallback, so events made due by another process (``convhook inbox replay``) or
by a retry time are picked up too. Time and randomness are injected (the clock here, the
jitter in the :class:`~convhook.retry.RetryPolicy`), so retry timing is tested without
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from convhook import tracing
from convhook.errors import ConvhookError, PayloadError, StoreError, UsageError
from convhook.events import parse_event
from convhook.receiver.handlers import Delivery, HandlerRegistry
from convhook.receiver.limits import clip, describe, storable
from convhook.receiver.ordering import Ordering
from convhook.retry import RetryPolicy
from convhook.store.inbox import Inbox, InboxEntry

log = logging.getLogger("convhook.receiver.worker")

Clock = Callable[[], float]
SHUTDOWN_GRACE = 10.0
"""Seconds :meth:`Worker.stop` lets running handlers finish before cancelling them."""
_NO_LIMIT = 1 << 62


def _cancelled_here() -> bool:
    """True if the running task is being cancelled (by :meth:`Worker.stop`), as opposed to a
    handler that raised :class:`asyncio.CancelledError` of its own."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Turn:
    """The lock that makes one conversation's events run one at a time, and how many
    tasks hold or wait for it (the lock is dropped when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Worker:
    """Claims due events from an inbox and runs their handlers, ``concurrency`` at a time.

    With ``ordering``, the events of one conversation run one at a time, in the order they
    are claimed (by sequence within a claim), each after its conversation's earlier events
    (see :mod:`convhook.receiver.ordering`); other conversations run concurrently.
    """

    def __init__(
        self,
        inbox: Inbox,
        handlers: HandlerRegistry,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 64,
        lease: float = 60.0,
        poll_interval: float = 1.0,
        batch_window: float = 0.005,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        backlog: int | None = None,
        ordering: Ordering | None = None,
    ) -> None:
        self.inbox = inbox
        self.ordering = ordering
        self._turns: dict[str, _Turn] = {}
        self.handlers = handlers
        self.retry = retry or RetryPolicy.exponential()
        if rng is not None:
            # Receiver(rng=...) forwards a seeded source here; the policy draws the jitter.
            self.retry = replace(self.retry, jitter=rng.random)
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self._clock = clock
        self.backlog = backlog if backlog is not None else max(1024, concurrency * 8)
        self._fresh: deque[InboxEntry] = deque()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        # Event ids being handled here: a handler outliving its lease must not be started twice.
        self._active: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._more = True
        self.batch_window = batch_window

    def state(self) -> str:
        """``ok`` while the claim loop and the lease renewal run, else why not (for
        ``/readyz``)."""
        loop, renew = self._loop_task, self._renew_task
        if loop is None or renew is None:
            return "not running"
        if loop.done() or renew.done():
            return "loop stopped"
        return "ok"

    def can_take(self) -> bool:
        """True if a new event may be handed over in memory (see :meth:`push`)."""
        return self._loop_task is not None and len(self._fresh) < self.backlog

    def push(self, entry: InboxEntry) -> None:
        """Run a just-stored event that was stored already claimed (``running``) for us.

        This skips a claim write per event; if the process dies first, the row's lease
        (or the next start) makes it due again.
        """
        self._fresh.append(entry)
        self._wake.set()

    def wake(self) -> None:
        """Look for due work now (called when an event is stored)."""
        self._more = True
        self._wake.set()

    async def start(self) -> None:
        """Make events left ``running`` by a dead process due (on an exclusive inbox), then
        start the loop and the renewal of the leases this worker holds."""
        if self._loop_task is not None:
            return
        released = await self.inbox.release_running(self._clock())
        if released:
            log.info(
                "%d events were running when the last receiver stopped; running them again",
                released,
                extra={"action": "inbox_recovered", "count": released},
            )
        self._stopping = False
        # A new one per start: an asyncio.Event belongs to the loop it was first awaited on,
        # and a receiver stopped on one loop may be started again on another.
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake_from_thread() -> None:
            # A closed loop means this worker is gone; the notification is moot.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.wake)

        self.inbox.watch(wake_from_thread)
        self._loop_task = asyncio.create_task(self._run(), name="convhook-inbox-worker")
        self._renew_task = asyncio.create_task(self._renew(), name="convhook-inbox-leases")

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop claiming; let running handlers finish for ``grace`` seconds, then cancel them."""
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        running = len(self._inflight)
        # An operator waiting on a stopping process sees what it waits for, and how long.
        log.info(
            "stopping handlers: %d events running, waiting up to %g s before cancelling "
            "them (an event left unfinished runs again later)",
            running,
            grace,
            extra={
                "action": "worker_stopping",
                "running": running,
                "not_started": len(self._fresh),
                "grace_s": grace,
            },
        )
        self._stopping = True
        self._wake.set()
        await task
        renew, self._renew_task = self._renew_task, None
        if renew is not None:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
        # Fresh events not started stay ``running`` in the inbox; the next start runs them.
        self._fresh.clear()
        if self._inflight:
            _done, pending = await asyncio.wait(self._inflight, timeout=grace)
            for t in pending:
                t.cancel()
            # A cancelled event stays ``running``; the next start makes it due again.
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim and process the due events now (for tests and tools); return how many."""
        entries = await self._claim(self.concurrency)
        await asyncio.gather(*(self.process(e) for e in entries))
        return len(entries)

    async def _claim(self, limit: int) -> list[InboxEntry]:
        # Events whose attempts are used up (their last attempt never recorded an outcome:
        # the process died, or recording failed) are marked failed instead of claimed again.
        return await self.inbox.claim(
            self._clock(), limit, self.lease, max_attempts=self.retry.max_attempts
        )

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except UsageError as exc:
                # The inbox was closed under the worker: retrying cannot help.
                log.error("inbox worker stopped: %s", exc, extra={"action": "worker_stopped"})
                return
            # Not only store errors: a worker loop that ends leaves every event unhandled.
            except Exception as exc:  # noqa: BLE001 - logged, then the loop goes on
                error = clip(exc if isinstance(exc, ConvhookError) else describe(exc))
                log.error(
                    "inbox worker: %s", error, extra={"action": "worker_error", "error": error}
                )
                await self._sleep(self.poll_interval)

    def held(self) -> list[str]:
        """The events this worker holds a lease on: running here or handed over, not started."""
        return [*self._active, *(entry.event_id for entry in self._fresh)]

    async def renew_leases(self) -> None:
        """Extend the lease of every event held here, so a handler outliving one lease is not
        taken by another process."""
        await self.inbox.extend(self.held(), self._clock() + self.lease)

    async def _renew(self) -> None:
        # A third of the lease leaves two renewals' worth of slack for a slow commit.
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew_leases()
            except UsageError as exc:
                log.error("lease renewal stopped: %s", exc, extra={"action": "lease_renew_stopped"})
                return
            except StoreError as exc:
                log.warning(
                    "renewing leases failed: %s", clip(exc), extra={"action": "lease_renew_failed"}
                )

    async def _step(self) -> None:
        self._wake.clear()
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            await self._sleep(self.poll_interval)
            return
        if self._fresh:
            while self._fresh and free > 0:
                self._spawn(self._fresh.popleft())
                free -= 1
            return
        if not self._more:
            due = await self.inbox.next_due()
            now = self._clock()
            if due is None or due > now:
                wait = self.poll_interval if due is None else min(self.poll_interval, due - now)
                await self._sleep(wait)
                return
        self._more = False
        if self.batch_window:
            # Under load, one claim then takes the whole burst instead of one event at a time.
            await asyncio.sleep(self.batch_window)
        entries = await self._claim(free)
        # Stable: within a conversation by sequence, so its tasks queue for it in that order.
        entries.sort(key=_sequence)
        for entry in entries:
            self._spawn(entry)
        # A full batch means more may be due; an empty one means someone else took them.
        self._more = len(entries) == free
        if not entries:
            await self._sleep(self.poll_interval)

    def _spawn(self, entry: InboxEntry) -> None:
        if entry.event_id in self._active:
            return
        self._active.add(entry.event_id)
        task = asyncio.create_task(self.process(entry))
        task.add_done_callback(lambda _t: self._active.discard(entry.event_id))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The outcome was not recorded; the lease makes the event due again later.
            error = clip(describe(exc))
            log.error(
                "recording a handler outcome failed: %s",
                error,
                extra={"action": "worker_error", "error": error},
            )

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def process(self, entry: InboxEntry) -> None:
        """Run the handlers of one claimed event that have not succeeded yet; record the outcome.

        With ordering, an event whose conversation is not ready for it (an earlier event is
        still being handled or fetched) is handed back to the inbox, due when it is worth
        looking again, without counting an attempt.
        """
        conversation = entry.conversation_id
        ordering = self.ordering
        if ordering is None or conversation is None:
            await self._handle(entry)
            return
        async with self._turn(conversation):
            later = await ordering.gate(entry, self._handle_held)
            if later is None:
                await self._handle(entry)
                return
            # Due again at ``later``: the loop's next look at the inbox finds it then.
            await self.inbox.defer(entry.event_id, later, self._clock())

    async def _handle_held(self, entry: InboxEntry) -> bool:
        """:meth:`_handle` for an event fetched to fill a gap: held here while it runs, so
        its lease is renewed like a claimed event's."""
        self._active.add(entry.event_id)
        try:
            return await self._handle(entry)
        finally:
            self._active.discard(entry.event_id)

    @contextlib.asynccontextmanager
    async def _turn(self, conversation: str) -> AsyncIterator[None]:
        turn = self._turns.get(conversation)
        if turn is None:
            turn = self._turns[conversation] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[conversation]

    async def _handle(self, entry: InboxEntry) -> bool:
        """Run the event's handlers and record the outcome; True if it is settled (done,
        or failed for good) rather than due for a retry.

        The typed event is built here, not when the request was accepted: the request path
        only checks the body (see :mod:`convhook.wirecheck`). Whatever a handler or the
        parsing raises is recorded as a failed attempt, so no event can loop unrecorded.
        """
        done = list(entry.handlers_done)
        errors: list[str] = []
        try:
            event = parse_event(entry.body, max_bytes=_NO_LIMIT)
        except PayloadError as exc:
            # Stored bodies were valid when accepted; retrying cannot make this one parse.
            return await self._record(entry, done, [f"stored body: {describe(exc)}"], final=True)
        except BaseException as exc:  # e.g. MemoryError or RecursionError: recorded, retried
            if isinstance(exc, asyncio.CancelledError) and _cancelled_here():
                raise
            return await self._record(entry, done, [f"building the event: {describe(exc)}"])
        delivery = Delivery(
            entry.event_id,
            entry.webhook_id,
            entry.event_type,
            entry.body,
            entry.headers,
            entry.received_at,
            entry.attempts,
            entry.conversation_id,
            entry.sequence,
            entry.origin,
            entry.traceparent,
        )
        parent = _trace_parent(entry.traceparent)
        name = f"handle {entry.event_type}"
        for handler in self.handlers.matching(entry.event_type):
            if handler.name in done:
                continue
            try:
                # Each handler runs in the sender's trace (a sync one too: its thread gets a
                # copy of this context).
                with tracing.span(name, parent, kind="consumer"):
                    await handler.run(event, delivery)
            except BaseException as exc:  # whatever a handler raises is recorded
                if isinstance(exc, asyncio.CancelledError) and _cancelled_here():
                    raise
                errors.append(f"{handler.name}: {describe(exc)}")
            else:
                done.append(handler.name)
        return await self._record(entry, done, errors)

    async def _record(
        self, entry: InboxEntry, done: list[str], errors: list[str], *, final: bool = False
    ) -> bool:
        now = self._clock()
        event_id = clip(entry.event_id)
        if not errors:
            await self.inbox.complete(entry.event_id, now, done)
            log.debug("handled %s", event_id, extra={"action": "handled", "event_id": event_id})
            if self.ordering is not None:
                await self.ordering.handled(entry)
            return True
        error = storable("; ".join(errors))
        retry_at = None if final else self.retry.retry_at(entry.attempts, now)
        await self.inbox.fail(entry.event_id, now, error, done, retry_at)
        shown = clip(error)
        if retry_at is None:
            log.error(
                "handlers of %s failed after %d attempts: %s",
                event_id,
                entry.attempts,
                shown,
                extra={"action": "handler_gave_up", "event_id": event_id, "error": shown},
            )
            # Given up: the conversation's later events stop waiting for it.
            if self.ordering is not None:
                await self.ordering.handled(entry)
            return True
        log.warning(
            "handlers of %s failed (attempt %d), retrying in %.1f s: %s",
            event_id,
            entry.attempts,
            retry_at - now,
            shown,
            extra={"action": "handler_failed", "event_id": event_id, "error": shown},
        )
        return False


def _sequence(entry: InboxEntry) -> int:
    return entry.sequence or 0


def _trace_parent(value: str | None) -> tracing.TraceContext | None:
    """The stored ``traceparent`` as a context (stored values were checked when received)."""
    if value is None:
        return None
    try:
        return tracing.parse(value)
    except ConvhookError:
        return None
