"""``GET /api/v2/stream``: Server-Sent Events of the workspace's events as they are recorded
and of delivery attempts as they finish.

One :class:`Hub` per app reads both logs every ``stream_poll`` seconds while anyone listens,
and hands each new message to every subscriber whose workspace and filters it matches. A
message's id is the position on both logs after it (``<event seq>.<attempt id>``). A client
that reconnects with ``Last-Event-ID`` is first sent what it missed, read from the logs up to
the hub's position when it joined, then the hub's messages past that position: nothing is
missed, nothing repeated. A subscriber whose queue fills is dropped; its reconnect catches up
from the logs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import WithJsonSchema

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import ApiSettings
from convhook.api.errors import ApiError
from convhook.api.events import EventTypeFilter
from convhook.api.stream_messages import (
    PING,
    POSITION_PATTERN,
    Filter,
    Message,
    Position,
    attempt_message,
    event_message,
    merge,
    parse_position,
)
from convhook.errors import ConvhookError, FieldProblem
from convhook.store.delivery import DeliveryStore
from convhook.store.delivery import log as delivery_log
from convhook.store.delivery.log import StreamAttempt
from convhook.store.engine.connection import Connection
from convhook.store.producer import ProducerStore, event_log
from convhook.store.producer.event_log import StreamEvent

log = logging.getLogger("convhook.api")
R = TypeVar("R")

PAGE = 500
"""Rows read from each log at once."""


class Subscriber:
    """One open stream: its filter and the messages waiting for it (at most ``limit``)."""

    def __init__(self, wanted: Filter, limit: int, joined: Position) -> None:
        self.filter = wanted
        self.joined = joined
        """The hub's position when it joined: the hub sends only what lies beyond."""
        self._limit = limit
        self._queue: deque[Message] = deque()
        self._wake = asyncio.Event()
        self.dropped = False
        self.closed = False

    def offer(self, m: Message) -> bool:
        """Queue ``m`` if it matches; False when the queue is full (the subscriber is
        dropped)."""
        if not self.filter.matches(m):
            return True
        if len(self._queue) >= self._limit:
            self.dropped = True
            self._wake.set()
            return False
        self._queue.append(m)
        self._wake.set()
        return True

    def close(self) -> None:
        """End the stream once what is queued was sent."""
        self.closed = True
        self._wake.set()

    async def next(self, heartbeat: float) -> Message | bytes | None:
        """The next message, :data:`PING` after ``heartbeat`` idle seconds, None at the end."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.dropped or self.closed:
                return None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), heartbeat)
            except TimeoutError:
                return PING


def _server_stopping() -> Callable[[], bool]:
    """Whether the server running this app was told to stop.

    uvicorn waits for open responses before the app's shutdown runs, so a stream cannot
    learn of the stop from the lifespan; uvicorn's signal handler is a method of its server,
    whose ``should_exit`` says so.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if server is None or not hasattr(server, "should_exit"):
        return lambda: False
    return lambda: bool(server.should_exit)


class Hub:
    """Reads both logs for the whole process and fans the messages out to subscribers."""

    def __init__(
        self, store: ProducerStore, deliveries: DeliveryStore, settings: ApiSettings
    ) -> None:
        self._store = store
        self._deliveries = deliveries
        self._settings = settings
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._stopping: Callable[[], bool] = lambda: False
        self.position = Position(0, 0)
        # Per log, the next number expected and when the hole in its place was first seen.
        self._holes: dict[str, tuple[int, float]] = {}
        self._hold_holes = store.dialect == "postgres"
        self.dropped = 0
        """Subscribers dropped for falling behind, since the app started."""

    @property
    def subscribers(self) -> int:
        """Open streams."""
        return len(self._subscribers)

    async def end(self) -> Position:
        """The furthest position a message of this stream can have had so far: the newest
        event and the highest attempt id given out (attempts of a deleted endpoint go)."""
        return Position(
            await self._store.last_event_seq(), await self._deliveries.attempt_ids_issued()
        )

    async def subscribe(self, wanted: Filter) -> Subscriber:
        """A new subscriber, sent every matching message past the hub's current position."""
        async with self._starting:
            if self._task is None or self._task.done():
                seq = await self._store.last_event_seq()
                attempt = await self._deliveries.last_attempt_id()
                self.position = Position(seq, attempt)
                self._holes.clear()
                self._stopping = _server_stopping()
                self._task = asyncio.get_running_loop().create_task(self._run())
            subscriber = Subscriber(wanted, self._settings.stream_queue, self.position)
            self._subscribers.add(subscriber)
            return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop sending to ``subscriber``."""
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every open stream."""
        for subscriber in list(self._subscribers):
            subscriber.close()
        self._subscribers.clear()

    async def _run(self) -> None:
        while self._subscribers:
            if self._stopping():
                self.close()
                return
            try:
                busy = await self.poll()
            except ConvhookError as exc:
                log.warning(
                    "the stream could not read the logs: %s",
                    exc,
                    extra={"action": "stream_read_failed"},
                )
                busy = False
            except Exception:
                # Its subscribers reconnect with Last-Event-ID; the next one starts a poller.
                log.exception("the stream stopped", extra={"action": "stream_failed"})
                self.close()
                return
            if not busy:
                await asyncio.sleep(self._settings.stream_poll)

    async def poll(self) -> bool:
        """Read what both logs recorded past the hub's position and send it; True when a
        log had more than one page."""
        seq, attempt = self.position
        # Both logs in one read: one transaction, half the round trips of two.
        events, attempts = await self._store.db.read(_both_logs, seq, attempt, PAGE)
        busy = len(events) == PAGE or len(attempts) == PAGE
        if self._hold_holes:
            events = self._settled("events", events, seq, lambda r: r.seq)
            attempts = self._settled("attempts", attempts, attempt, lambda r: r.id)
        messages = merge(events, attempts, self.position)
        if messages:
            self.position = messages[-1].position
        for m in messages:
            for subscriber in list(self._subscribers):
                if not subscriber.offer(m):
                    self._drop(subscriber)
        return busy

    def _settled(self, name: str, rows: list[R], after: int, number: Callable[[R], int]) -> list[R]:
        """The rows before the first hole in the numbering that may still fill.

        On PostgreSQL numbers are taken when a row is written and become visible when its
        transaction commits: a hole may be a transaction still running, or one rolled back.
        The hole is waited for ``stream_gap_wait`` seconds, then passed over.
        """
        expected = after + 1
        for i, row in enumerate(rows):
            if number(row) != expected:
                now = time.monotonic()
                at, since = self._holes.get(name, (expected, now))
                if at != expected:
                    since = now
                self._holes[name] = (expected, since)
                if now - since < self._settings.stream_gap_wait:
                    return rows[:i]
            expected = number(row) + 1
        self._holes.pop(name, None)
        return rows

    def _drop(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self.dropped += 1
        log.info(
            "stream subscriber dropped: %d messages behind",
            self._settings.stream_queue,
            extra={"action": "stream_subscriber_dropped"},
        )

    async def replay(
        self, after: Position, upto: Position, wanted: Filter
    ) -> AsyncIterator[Message]:
        """The workspace's messages past ``after`` up to ``upto``, read from the logs, in the
        order they were recorded, those matching ``wanted``."""
        events: deque[StreamEvent] = deque()
        attempts: deque[StreamAttempt] = deque()
        seq_cursor, attempt_cursor = after
        more_events, more_attempts = after.seq < upto.seq, after.attempt < upto.attempt
        seq, attempt = after
        while True:
            if not events and more_events:
                rows = await self._store.db.read(
                    event_log.stream_after, seq_cursor, wanted.workspace_id, upto.seq, PAGE
                )
                events.extend(rows)
                more_events = len(rows) == PAGE
                seq_cursor = rows[-1].seq if rows else seq_cursor
            if not attempts and more_attempts:
                found = await self._deliveries.db.read(
                    delivery_log.stream_attempts_after,
                    attempt_cursor,
                    wanted.workspace_id,
                    upto.attempt,
                    PAGE,
                )
                attempts.extend(found)
                more_attempts = len(found) == PAGE
                attempt_cursor = found[-1].id if found else attempt_cursor
            if not events and not attempts:
                return
            if events and (not attempts or events[0].created_at <= attempts[0].attempted_at):
                row = events.popleft()
                seq = row.seq
                m = event_message(row, Position(seq, attempt))
            else:
                line = attempts.popleft()
                attempt = line.id
                m = attempt_message(line, Position(seq, attempt))
            if wanted.matches(m):
                yield m


def _both_logs(
    conn: Connection, seq: int, attempt: int, limit: int
) -> tuple[list[StreamEvent], list[StreamAttempt]]:
    """Every workspace's rows past ``seq`` on the event log and ``attempt`` on the attempt
    log, ``limit`` of each at most."""
    return (
        event_log.stream_after(conn, seq, None, None, limit),
        delivery_log.stream_attempts_after(conn, attempt, None, None, limit),
    )


def hub_of(request: Request) -> Hub:
    """The app's hub, made on the first stream."""
    state = request.app.state
    hub: Hub | None = getattr(state, "stream_hub", None)
    if hub is None:
        settings: ApiSettings = state.settings
        hub = Hub(state.store, state.deliveries, settings)
        state.stream_hub = hub
    return hub


async def frames(
    hub: Hub, subscriber: Subscriber, after: Position | None, heartbeat: float
) -> AsyncIterator[bytes]:
    """The stream's bytes: what was missed after ``after``, then the hub's messages and
    heartbeats, until the subscriber is dropped or the server stops."""
    try:
        floor = after or subscriber.joined
        if after is not None:
            async for m in hub.replay(after, subscriber.joined, subscriber.filter):
                yield m.frame
        while True:
            item = await subscriber.next(heartbeat)
            if item is None:
                return
            if isinstance(item, bytes):
                yield item
                continue
            # A client ahead of the hub (its position from before a restart with holes
            # passed over) is not sent what it had.
            ahead = (
                item.position.seq <= floor.seq
                if item.kind == "event"
                else (item.position.attempt <= floor.attempt)
            )
            if not ahead:
                yield item.frame
    finally:
        hub.unsubscribe(subscriber)


# -- the route -------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v2/stream", tags=["stream"])

DESCRIPTION = """\
Server-Sent Events (`text/event-stream`) of the workspace's events as they are recorded and of
delivery attempts as they finish, interleaved in the order they were recorded (events before
attempts at the same millisecond).

Each message has `id: <event seq>.<attempt id>`, its position on both logs, and `event: event`
or `event: attempt`; `data` is one JSON object on one line:

* `event`: `{eventId, eventType, conversationId, sequence, createdAt, event}`, `event` being
  the body endpoints receive, null once the retention job pruned it; an operational event's
  (`endpoint.*`, `delivery.failed`) is filed under its endpoint: `conversationId` is the
  endpoint's id;
* `attempt`: `{deliveryId, eventId, eventType, endpointId, conversationId, attempt,
  attemptedAt, statusCode, latencyMs, outcome, error}`, `outcome` one of `delivered`, `retry`,
  `failed` (the delivery's retries are spent) or `gone` (410: the endpoint is disabled).

Reconnect with `Last-Event-ID` (or `?lastEventId=` where a client cannot set headers) to be sent
exactly the messages after that one. Without it the stream starts now (`since=now`), or with
everything recorded (`since=start`). `endpointId` keeps that endpoint's attempts only (no
events). A `: ping` comment is sent after 15 idle seconds. A client that reads too slowly is
disconnected; reconnecting with `Last-Event-ID` loses nothing.
"""


# Published, not enforced by FastAPI: a malformed id answers 400 naming Last-Event-ID (a
# 422 is for bodies' fields), from the route.
_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": POSITION_PATTERN, "maxLength": 37}


@router.get(
    "",
    response_class=StreamingResponse,
    description=DESCRIPTION,
    responses={
        200: {
            "description": "The stream, until the client or the server closes it.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: {
            "description": "`Last-Event-ID` is not a message id of this stream, or is past the "
            "end of its logs (a database restored from an older copy): connect without it."
        },
    },
)
async def stream(
    request: Request,
    workspace: CurrentWorkspace,
    event_type: Annotated[EventTypeFilter | None, Query(alias="eventType")] = None,
    conversation_id: Annotated[
        str | None, Query(alias="conversationId", min_length=1, max_length=200)
    ] = None,
    endpoint_id: Annotated[
        str | None,
        Query(alias="endpointId", min_length=1, max_length=200, description="Attempts only."),
    ] = None,
    since: Annotated[
        Literal["now", "start"],
        Query(description="Without `Last-Event-ID`: start now, or with everything recorded."),
    ] = "now",
    last_event_id_query: Annotated[
        str | None,
        WithJsonSchema(_ID_SCHEMA),
        Query(alias="lastEventId", description="As Last-Event-ID."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        WithJsonSchema(_ID_SCHEMA),
        Header(
            alias="Last-Event-ID",
            description="The id of the last message received: resume after it.",
        ),
    ] = None,
) -> Response:
    """Events and delivery attempts of the workspace as they happen (Server-Sent Events)."""
    given = last_event_id if last_event_id is not None else last_event_id_query
    after: Position | None = None
    if given is not None:
        after = parse_position(given)
        if after is None:
            problem = "must be the id of a message of this stream, <event seq>.<attempt id>"
            raise ApiError(
                400,
                f"Last-Event-ID: {problem}",
                [FieldProblem("Last-Event-ID", problem)],
            )
    elif since == "start":
        after = Position(0, 0)
    hub = hub_of(request)
    if after is not None:
        # A position past both logs' ends (a database restored from an older copy, an id of
        # another server) would wait, silently, until the logs caught up with it.
        end = await hub.end()
        if after.seq > end.seq or after.attempt > end.attempt:
            problem = (
                f"is ahead of this stream, whose messages end at {end}: connect without it "
                "to follow from now (or with since=start for everything recorded)"
            )
            raise ApiError(
                400,
                f"Last-Event-ID: {problem}",
                [FieldProblem("Last-Event-ID", problem)],
            )
    wanted = Filter(
        workspace.id,
        event_type.value if event_type is not None else None,
        conversation_id,
        endpoint_id,
    )
    subscriber = await hub.subscribe(wanted)
    settings: ApiSettings = request.app.state.settings
    return StreamingResponse(
        frames(hub, subscriber, after, settings.stream_heartbeat),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
