"""The dispatcher: claim due deliveries, send them signed, record each attempt, schedule retries.

One loop claims batches of due deliveries under a lease (so a crashed worker's claims come
back), one task per delivery sends it, and a recorder writes finished attempts in batches
(one group commit for many). Claims and records go through the
:class:`~convhook.store.delivery.DeliveryStore`, so they run wherever the database's writer
runs (for SQLite with ``writer="process"``, a child process with a GIL of its own). It wakes
on :meth:`Dispatcher.wake` (the API in the same process calls it), when another process
records events (``Database.watch``: SQLite's ``data_version`` changed, PostgreSQL's
``NOTIFY convhook_deliveries`` from the fan-out trigger), and at worst every
``poll_interval``. Several dispatchers, on several machines with PostgreSQL, may share one
database. A failing database (a PostgreSQL restart) is retried with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from convhook import metrics, tracing
from convhook.errors import ClosedError, StoreError
from convhook.ids import new_id
from convhook.pacing import Backoff, TokenBucket
from convhook.retry import RetryPolicy, Verdict
from convhook.sender import DEFAULT_TIMEOUT, AttemptResult, Sender
from convhook.store.delivery import LEASE_FACTOR, Claim, DeliveryStore, Result
from convhook.store.engine.database import Database, Unwatch

log = logging.getLogger("convhook.dispatcher")

Clock = Callable[[], float]

# While attempts finish and their flushes claim more, the claim loop stands aside this long
# after the last such claim (seconds).
_REFILL_COVERS = 0.05
# How often the claim loop checks whether a flush that claims has committed (seconds).
_REFILL_POLL = 0.005
# Woken by new events while standing aside, the claim loop claims itself after this long at
# most (seconds): the latency a fresh event can pay behind other endpoints' retries.
_DEFER_AT_MOST = 0.005

# A process holds up to this many times ``max_in_flight`` claims, sending at most
# ``max_in_flight`` of them at once: a request that finishes is followed at once by one claimed
# already, instead of waiting for the flush that records it and claims the next (holding only
# what it sends, one PostgreSQL dispatcher reached 23-39% of a bare client's rate). A claim
# then waits for a slot behind up to this many minus one rounds of requests, and the lease
# grows with it (see Dispatcher.lease). On PostgreSQL a claim is a round trip to a server and
# the process holds more: four times, 47-54% of a bare client's rate where twice reached
# 42-51%; SQLite's rate was the same with either, and keeps the shorter lease.
_HOLD = {"sqlite": 2, "postgres": 4}


class _Lane:
    """An endpoint's claims waiting to be sent and the workers sending them, at most
    ``limit`` (the endpoint's in-flight limit in this process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting: collections.deque[Claim] = collections.deque()
        self.workers = 0


RESIGN_AFTER = 10.0
"""Seconds a claim's signature stays in use; a claim that waited longer is signed again."""
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

SEQUENCE_HEADER = "convhook-sequence"
"""The event's position in its conversation (1 for the first), on every delivery attempt."""
PREVIOUS_HEADER = "convhook-previous-event-id"
"""The id of the conversation's event before this one; absent for the first."""


def _stored_trace(claim: Claim) -> tracing.TraceContext | None:
    """The trace the event was recorded in: each attempt is a span of it."""
    if claim.traceparent is None:
        return None
    try:
        return tracing.parse(claim.traceparent)
    except tracing.TraceparentError:
        return None  # a damaged row: the attempt starts a trace of its own


class Dispatcher:
    """Delivers the outbox; use as ``async with Dispatcher(store) as d`` or call
    :meth:`run_once`. ``store`` is a :class:`DeliveryStore`, or the database to make one of."""

    def __init__(
        self,
        store: DeliveryStore | Database,
        *,
        allow_private: bool = False,
        policy: RetryPolicy | None = None,
        clock: Clock = time.time,
        batch_size: int = 100,
        max_in_flight: int = 256,
        lease: float = 60.0,
        poll_interval: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT,
        worker_id: str | None = None,
    ) -> None:
        self.store = store if isinstance(store, DeliveryStore) else DeliveryStore(store)
        self.db = self.store.db
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.hold_factor = _HOLD.get(self.db.dialect.name, 2)
        self._hold = self.hold_factor * max_in_flight
        # A lease never ends while its delivery can still be waiting or running: an endpoint
        # has LEASE_FACTOR times its in-flight limit leased, so a claim may wait for that many
        # requests before it (each up to the timeout), its own included; and each of those
        # requests first waits for one of this process's slots behind up to hold_factor - 1
        # rounds of other endpoints' requests (claims are held ahead of the slots, served in
        # order), each up to a timeout too.
        self.lease = max(lease, self.hold_factor * LEASE_FACTOR * timeout + 1)
        self.poll_interval = poll_interval
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-8:]}"
        self._clock = clock
        self._sender = Sender(timeout=timeout, allow_private=allow_private, clock=clock)
        self._open = False
        self._stopping = False
        self._wake = asyncio.Event()
        # Each result beside its claim: the claim stays here for the logs and metrics.
        self._results: list[tuple[Claim, Result]] = []
        self._results_ready = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()  # the lanes' workers
        self._active = 0  # claims handed to lanes and not finished yet
        # Requests in flight across all endpoints; waiters are served in order, so a claim
        # waits behind at most the claims held before it, within its lease.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._buckets: dict[str, TokenBucket] = {}
        self._lanes: dict[str, _Lane] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._claim_backoff = Backoff()
        self._record_backoff = Backoff()
        self._refilled_at = -1e9
        self._refilling = False  # a flush that claims too is in flight
        self._unwatch: Unwatch | None = None
        self.delivered = 0

    async def __aenter__(self) -> Dispatcher:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the HTTP session without starting the loop (for :meth:`run_once`)."""
        if not self._open:
            await self._sender.__aenter__()
            self._open = True

    async def start(self) -> None:
        """Open the session and start claiming in the background."""
        await self.open()
        self._stopping = False
        self._stopped.clear()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="convhook-dispatch"),
            asyncio.create_task(self._record_loop(), name="convhook-record"),
        ]
        if self._unwatch is None:
            # Another process's commit may have queued work: the database says so (SQLite
            # data_version, PostgreSQL NOTIFY; the listener reconnects by itself and calls
            # back after each reconnect, as notifications may have been missed meanwhile).
            loop, here = asyncio.get_running_loop(), threading.get_ident()

            def poke() -> None:
                if threading.get_ident() == here:
                    # SQLite looks on this loop: no need for the self-pipe write of a hop.
                    self._wake.set()
                    return
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to wake
                    loop.call_soon_threadsafe(self._wake.set)

            self._unwatch = self.store.watch(poke)
        log.info("dispatcher started", extra={"action": "dispatcher_started"})

    async def close(self) -> None:
        """Stop claiming, let attempts in flight finish and be recorded, close the session."""
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        loops, self._loops = self._loops, []
        if loops:
            await loops[0]
        while self._sending:
            await asyncio.gather(*self._sending)
        self._results_ready.set()
        await asyncio.gather(*loops[1:])
        # A flush that was claiming when the stop came may have started more attempts.
        while self._sending:
            await asyncio.gather(*self._sending)
        await self._flush()
        if self._open:
            await self._sender.__aexit__(None, None, None)
            self._open = False

    def wake(self) -> None:
        """Look for due deliveries now (call after recording events in this process)."""
        self._wake.set()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _claim(self, limit: int) -> list[Claim]:
        now, lease_ms = self._now_ms(), int(self.lease * 1000)
        owner = self.worker_id
        # Look first with a read: the write lock is shared with the API (possibly in another
        # process), and taking it only to find nothing due would slow everyone down.
        if not await self.store.has_due(now):
            return []
        return await self.store.claim(owner, now, lease_ms, limit)

    async def run_once(self) -> list[Result]:
        """Claim one batch, send it, record it, and return the results (tests, tools)."""
        if not self._open:
            raise ClosedError("Dispatcher is not open: call open() or use `async with`")
        self._spawn(await self._claim(self.batch_size))
        while self._sending:
            await asyncio.gather(*self._sending)
        return [result for _, result in await self._flush()]

    async def _claim_loop(self) -> None:
        deferred = False
        while not self._stopping:
            free = self._hold - self._active
            woken = self._wake.is_set()
            self._wake.clear()
            covered = time.monotonic() - self._refilled_at
            if self._refilling or (self._active and covered < _REFILL_COVERS):
                # Attempts are finishing and each flush claims as much as it records, seeing
                # new work too: a claim here would mostly scan rows of endpoints already full
                # (with one endpoint, all of its backlog). While a flush that claims is still
                # committing (all attempts may have finished meanwhile), its claim comes first.
                if woken and not deferred:
                    # New events may be waiting: a flush may take them, but with a slow
                    # endpoint's attempts finishing all the time the cover never ends, so
                    # this loop claims itself once the cover it stood aside for is over.
                    deferred = True
                    self._wake.set()
                    wait = _REFILL_COVERS - covered if not self._refilling else _REFILL_POLL
                    await asyncio.sleep(min(max(wait, _REFILL_POLL), _DEFER_AT_MOST))
                    continue
                if not woken:
                    free = 0
            deferred = False
            try:
                claims = await self._claim(min(free, self.batch_size)) if free > 0 else []
                self._claim_backoff.reset()
            except StoreError as exc:
                # A busy or failing database (a restarting server) must not stop delivery for
                # good: back off, then try again; claims that were lost expire with their lease.
                delay = self._claim_backoff.next()
                log.error(
                    "claim failed: %s; retrying in %.1f s",
                    exc,
                    delay,
                    extra={"action": "claim_failed"},
                )
                await self._pause(delay)
                continue
            self._spawn(claims)
            if len(claims) < min(free, self.batch_size) or free <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    def _spawn(self, claims: list[Claim]) -> None:
        # Claims queue per endpoint and at most its in-flight limit of workers send them (a
        # task per attempt cost more CPU); each request also takes one of the process's slots.
        for claim in claims:
            lane = self._lanes.get(claim.endpoint_id)
            if lane is None:
                lane = self._lanes[claim.endpoint_id] = _Lane(claim.max_in_flight)
            lane.limit = claim.max_in_flight
            lane.waiting.append(claim)
            self._active += 1
            if lane.workers < lane.limit:
                lane.workers += 1
                task = asyncio.create_task(self._work(lane))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _work(self, lane: _Lane) -> None:
        try:
            # A lowered limit takes effect as workers finish their current attempt.
            while lane.waiting and lane.workers <= lane.limit:
                claim = lane.waiting.popleft()
                try:
                    await self._attempt(claim)
                finally:
                    self._active -= 1
        finally:
            lane.workers -= 1

    async def _attempt(self, claim: Claim) -> None:
        if claim.rate_limit:
            bucket = self._buckets.get(claim.endpoint_id)
            if bucket is None or bucket.rate != claim.rate_limit:
                bucket = self._buckets[claim.endpoint_id] = TokenBucket(claim.rate_limit)
            await bucket.take()
        async with self._slots:
            now = self._clock()
            attempted_at = int(now * 1000)
            # The claim comes signed and with its span's traceparent from the writer. A span
            # is made here only when spans are exported; a signature made before the claim
            # waited its turn for long (or dated ahead of a clock that stepped back) is made
            # again, so the timestamp stays the send's.
            traced = not claim.trace_header or tracing.configured()
            span = (
                tracing.span("deliver", _stored_trace(claim), kind="client") if traced else _NO_SPAN
            )
            signed = (
                (claim.signed_at, claim.signature)
                if claim.signature and 0 <= now - claim.signed_at < RESIGN_AFTER
                else None
            )
            with span as trace:
                headers = {tracing.HEADER: claim.trace_header if trace is None else trace.header()}
                if claim.sequence:
                    headers[SEQUENCE_HEADER] = str(claim.sequence)
                if claim.previous_event_id:
                    headers[PREVIOUS_HEADER] = claim.previous_event_id
                result = await self._sender.send(
                    claim.url, claim.event_id, claim.body, claim.secrets, headers, signed
                )
        self._results.append((claim, self._judge(claim, attempted_at, result)))
        self._results_ready.set()

    def _judge(self, claim: Claim, attempted_at: int, r: AttemptResult) -> Result:
        status = r.status_code
        if status is not None and 200 <= status < 300:
            # A 2xx is delivered whatever the policy (the common case, kept cheap).
            verdict, next_at = Verdict.DELIVERED, attempted_at
        else:
            decision = self.policy.decide(claim.attempts + 1, r.outcome)
            verdict, next_at = decision.verdict, attempted_at + int(decision.delay * 1000)
        return Result(
            claim.delivery_id,
            claim.endpoint_id,
            claim.lease_owner,
            attempted_at,
            status,
            r.latency_ms,
            r.error,
            r.response_body,
            verdict,
            next_at,
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _record_loop(self) -> None:
        while not self._stopping:
            await self._results_ready.wait()
            self._results_ready.clear()
            await self._flush(refill=True)
            if self._record_backoff.failures:
                await self._pause(self._record_backoff.delay)
                self._results_ready.set()

    async def _flush(self, *, refill: bool = False) -> list[tuple[Claim, Result]]:
        """Record finished attempts; with ``refill``, claim as many new ones in the same
        transaction, so a steady stream costs one commit per batch, not two."""
        results, self._results = self._results, []
        free = self._hold - self._active
        limit = min(free, self.batch_size) if refill and not self._stopping else 0
        if not results and not limit:
            return results
        now = self._now_ms()
        lease_ms, owner = int(self.lease * 1000), self.worker_id
        self._refilling = bool(limit)
        try:
            disabled, claims = await self.store.record(
                [result for _, result in results],
                now,
                self.policy.disable_cutoff(now),
                owner,
                lease_ms,
                limit,
            )
            self._record_backoff.reset()
        except StoreError as exc:
            # The transaction was rolled back: keep the results and record them again after a
            # pause (should the lease expire first, the delivery is simply sent again).
            delay = self._record_backoff.next()
            log.error(
                "recording failed: %s; retrying in %.1f s",
                exc,
                delay,
                extra={"action": "record_failed"},
            )
            if not self._stopping:
                self._results[:0] = results
            return []
        finally:
            self._refilling = False
        if limit:
            self._refilled_at = time.monotonic()
        self._spawn(claims)
        for claim, r in results:
            self._report(claim, r)
        for endpoint_id in disabled:
            metrics.DISABLED.inc()
            log.warning(
                "endpoint disabled",
                extra={"action": "endpoint_disabled", "endpoint_id": endpoint_id},
            )
        if results and not limit:
            # No refill was possible here; slots are free now, so let the claim loop look.
            self._wake.set()
        return results

    def _report(self, claim: Claim, r: Result) -> None:
        metrics.observe_attempt(r.verdict.value, r.latency_ms)
        if r.verdict is Verdict.DELIVERED:
            self.delivered += 1
            if not log.isEnabledFor(logging.DEBUG):
                return
        fields = {
            "event_id": claim.event_id,
            "endpoint_id": claim.endpoint_id,
            "delivery_id": claim.delivery_id,
            "attempt": claim.attempts + 1,
            "status_code": r.status_code,
        }
        if r.verdict is Verdict.DELIVERED:
            log.debug("delivered", extra={"action": "delivery_succeeded", **fields})
        elif r.verdict is Verdict.RETRY:
            log.info(
                "delivery attempt failed; retry scheduled",
                extra={"action": "delivery_retry_scheduled", "error": r.error, **fields},
            )
        else:
            log.warning(
                "delivery failed",
                extra={"action": "delivery_failed", "error": r.error, **fields},
            )
