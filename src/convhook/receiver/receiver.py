"""The receiver: verifies, validates and durably stores webhooks, then runs handlers.

A request is answered as soon as its event is committed to the inbox; handlers run later
from the inbox (see :mod:`convhook.receiver.worker`), so a slow or failing handler never
delays or fails the answer, and nothing acknowledged is lost if the process dies.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from convhook import tracing
from convhook.errors import (
    ClosedError,
    ConfigError,
    ConvhookError,
    FieldProblem,
    PayloadError,
    SignatureError,
    StoreError,
)
from convhook.events import DEFAULT_MAX_BODY
from convhook.receiver import replies
from convhook.receiver.handlers import CATCH_ALL, Handler, HandlerRegistry
from convhook.receiver.limits import LOG_CHARS, MAX_ID, clip
from convhook.receiver.ordering import Ordering, claimed
from convhook.receiver.reconcile import Reconcile
from convhook.receiver.replies import Reply
from convhook.receiver.tokens import TokenCheck
from convhook.receiver.worker import Clock, Worker
from convhook.retry import RetryPolicy
from convhook.signing import DEFAULT_TOLERANCE, Secret, Verifier
from convhook.store.inbox import Inbox, Received
from convhook.store.inbox.store import open_inbox
from convhook.wirecheck import check_event

if TYPE_CHECKING:
    from convhook.receiver.app import ReceiverApp
    from convhook.receiver.health import Readiness

log = logging.getLogger("convhook.receiver")

# Headers kept with the body so a stored event can be forwarded exactly as it came.
FORWARDED_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "convhook-sequence",
    "convhook-previous-event-id",
)
SEQUENCE_HEADER = "convhook-sequence"
"""The event's position in its conversation (1-based), sent by convhook."""
_CONVERSATION_PREFIX = "conversation."


class Receiver:
    """Accepts signed webhooks into a durable inbox and runs registered handlers from it.

    ``secrets`` are the ``whsec_`` secrets to verify with (several during a rotation).
    ``tokens`` are shared tokens for a sender that does not sign: a request must then carry
    one as ``Authorization: Bearer <token>`` or ``x-api-key: <token>``. Given both, a request
    needs both a valid signature and a token. Given neither, ``allow_unsigned=True`` is
    required and any body is accepted. ``store`` is an :class:`~convhook.store.inbox.Inbox`,
    a SQLite file path or a ``postgresql://`` URL (whose schema
    ``convhook db upgrade --component inbox`` has created).

    Each conversation's events are handled in order (see :mod:`convhook.receiver.ordering`):
    gaps in a sender's ``convhook-sequence`` numbers are recorded in the inbox. Given the
    producer's API (``reconcile_url`` and a workspace ``reconcile_key``, or a
    :class:`~convhook.receiver.reconcile.Reconcile`), missing events are fetched and handled
    first; ``reconcile_wait`` bounds how long an event waits for earlier ones.
    """

    def __init__(
        self,
        secrets: Iterable[Secret | str] | Secret | str | None = None,
        store: Inbox | str | Path = "convhook-inbox.db",
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        max_body: int = DEFAULT_MAX_BODY,
        allow_unsigned: bool = False,
        tokens: Iterable[str] | str | None = None,
        retry: RetryPolicy | None = None,
        concurrency: int = 64,
        lease: float = 60.0,
        poll_interval: float = 1.0,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        reconcile: Reconcile | None = None,
        reconcile_url: str | None = None,
        reconcile_key: str | None = None,
        reconcile_wait: float | None = None,
    ) -> None:
        if reconcile is None and (reconcile_url or reconcile_key):
            if not reconcile_url or not reconcile_key:
                raise ConfigError(
                    "reconciling needs both the producer's API URL (reconcile_url) and a "
                    "workspace key (reconcile_key)"
                )
            reconcile = Reconcile(reconcile_url, reconcile_key)
        if reconcile is not None and reconcile_wait is not None:
            reconcile = Reconcile(reconcile.url, reconcile.key, reconcile_wait, reconcile.timeout)
        secret_list = [secrets] if isinstance(secrets, Secret | str) else list(secrets or [])
        token_list = [tokens] if isinstance(tokens, str) else list(tokens or [])
        if not secret_list and not token_list and not allow_unsigned:
            raise ConfigError(
                "no webhook secret given: pass secrets=['whsec_...'], tokens=['...'] for a "
                "sender that does not sign, or allow_unsigned=True to accept unsigned events "
                "(anyone who can reach the endpoint can then post)"
            )
        if max_body < 1:
            raise ConfigError(f"max_body must be a positive number of bytes, got {max_body}")
        self.verifier = (
            Verifier(secret_list, tolerance=tolerance, clock=clock) if secret_list else None
        )
        self.token_check = TokenCheck(token_list) if token_list else None
        self.inbox = store if isinstance(store, Inbox) else open_inbox(store)
        self.max_body = max_body
        self.handlers = HandlerRegistry()
        self._clock = clock
        self.reconcile = reconcile
        # An inbox that cannot order (a custom one without the ordering methods) handles
        # events in arrival order, as before.
        self.ordering = (
            Ordering(self.inbox, clock=clock, lease=lease, reconcile=reconcile, wait=reconcile_wait)
            if self.inbox.ordered
            else None
        )
        if reconcile is not None and self.ordering is None:
            raise ConfigError(
                f"{type(self.inbox).__name__} cannot order events, so it cannot reconcile: "
                "use a SQLite or PostgreSQL inbox"
            )
        self.worker = Worker(
            self.inbox,
            self.handlers,
            retry=retry,
            concurrency=concurrency,
            lease=lease,
            poll_interval=poll_interval,
            clock=clock,
            rng=rng,
            ordering=self.ordering,
        )
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        self._started = False

    # -- handler registration ---------------------------------------------------------

    def on(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Decorator: run the function for events of these types (none given: every event).

        The handler takes the parsed event (``UserJoined`` ... or ``UnknownEvent``) and,
        optionally, a second :class:`~convhook.receiver.handlers.Delivery` argument with the
        raw body and headers. Sync handlers run in a thread.
        """

        def register(fn: Handler) -> Handler:
            self.add_handler(fn, *event_types)
            return fn

        return register

    def on_any(self, fn: Handler) -> Handler:
        """Decorator: run the function for every event, including unknown types."""
        self.add_handler(fn, CATCH_ALL)
        return fn

    def add_handler(self, fn: Handler, *event_types: str, name: str | None = None) -> str:
        """Register ``fn`` for ``event_types`` (``"*"`` or none: all); return its unique name."""
        return self.handlers.add(fn, event_types, name).name

    def on_shutdown(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Await ``fn`` when the receiver stops, after the worker (e.g. to close a session)."""
        self._shutdown.append(fn)

    # -- lifecycle --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    async def start(self) -> None:
        """Open the inbox and start running handlers (a no-op if already started)."""
        if self._started:
            return
        await self.inbox.open()
        await self.worker.start()
        self._started = True
        if self.verifier is None and self.token_check is None:
            log.warning(
                "accepting UNSIGNED webhooks: configure a whsec_ secret in production",
                extra={"action": "unsigned_mode"},
            )
        elif self.verifier is None:
            log.info(
                "accepting webhooks by shared token, without signatures: bodies are not "
                "integrity-checked and a captured request can be sent again",
                extra={"action": "token_mode"},
            )

    async def stop(self) -> None:
        """Stop the worker (letting running handlers finish briefly) and close the inbox."""
        if not self._started:
            return
        self._started = False
        try:
            await self.worker.stop()
            if self.ordering is not None:
                await self.ordering.close()
            for fn in self._shutdown:
                await fn()
        finally:
            await self.inbox.close()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- requests ---------------------------------------------------------------------

    def asgi_app(self, path: str | None = "/webhook", *, health: bool = True) -> ReceiverApp:
        """A plain ASGI app answering POSTs on ``path`` (None: on any path, for mounting) and,
        with ``health``, ``GET /healthz`` and ``GET /readyz`` (see :meth:`readiness`)."""
        from convhook.receiver.app import ReceiverApp

        return ReceiverApp(self, path, health=health)

    async def readiness(self) -> Readiness:
        """Whether this receiver can take events now: its inbox answers a read within 2 s,
        the inbox schema is the version this code ships, and its worker loop runs (for a
        host app's own readiness check)."""
        from convhook.receiver.health import readiness

        return await readiness(self)

    async def handle(self, method: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer a request whose body is already read (the Flask and Django helpers' path).

        ``headers`` must have lower-case names.
        """
        if method.upper() != "POST":
            return self.reject(replies.method_not_allowed(method.upper()))
        bad_type = replies.check_content_type(headers.get("content-type"))
        if bad_type is not None:
            return self.reject(bad_type)
        if len(body) > self.max_body:
            return self.reject(self.too_large(len(body)))
        return await self.ingest(headers, body)

    def too_large(self, size: int | None) -> Reply:
        """The 413 answer for a body over ``max_body``."""
        told = f"{size} bytes" if size is not None else "more bytes than that"
        return replies.error(413, f"body is {told}, over the {self.max_body}-byte limit")

    async def ingest(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Verify, validate and store a body that passed the method, type and size checks.

        With OpenTelemetry configured (:func:`convhook.tracing.configure`) this is a
        ``receive`` span (kind ``server``) in the sender's trace; otherwise it costs nothing.
        """
        if not tracing.configured():
            return await self._ingest(headers, body)
        value = headers.get("traceparent")
        parent = None if value is None else _context(value)
        with tracing.span("receive", parent, kind="server"):
            return await self._ingest(headers, body)

    async def _ingest(self, headers: Mapping[str, str], body: bytes) -> Reply:
        if self.token_check is not None:
            # First: a sender without the token learns nothing else about the request.
            refused = self.token_check.problem(headers)
            if refused is not None:
                return self.reject(replies.unauthorized(refused))
        hook_id = headers.get("webhook-id") or headers.get("svix-id")
        if hook_id is not None and len(hook_id) > MAX_ID:
            # Refused before it is hashed, stored, indexed or logged.
            name = "webhook-id" if headers.get("webhook-id") else "svix-id"
            problem = FieldProblem(name, f"longer than {MAX_ID} characters")
            return self.reject(replies.error(400, f"{name} is {problem.problem}", (problem,)))
        try:
            if self.verifier is not None:
                webhook_id: str | None = self.verifier.verify(headers, body)
            else:
                webhook_id = hook_id
        except SignatureError as exc:
            return self.reject(replies.error(401, str(exc)))
        try:
            # Checked, not built: the typed event is parsed when a handler needs it.
            event = check_event(body, max_bytes=self.max_body)
        except PayloadError as exc:
            return self.reject(replies.error(exc.status_code, exc.message, exc.problems))
        now = self._clock()
        # Claimed at once when our worker has room: it runs the event from memory after the
        # commit, saving a claim write; the lease covers a crash in between. An event no
        # handler wants is stored as done.
        worker = self.worker
        done = not self.handlers.matching(event.event_type)
        conversation = sequence = None
        if event.event_type.startswith(_CONVERSATION_PREFIX):
            conversation = _conversation_id(event.conversation_id)
            sequence = _sequence(headers.get(SEQUENCE_HEADER))
        traceparent = headers.get("traceparent")
        received = Received(
            event_id=event.event_id,
            webhook_id=webhook_id,
            event_type=event.event_type,
            body=body,
            headers={k: headers[k] for k in FORWARDED_HEADERS if k in headers},
            received_at=now,
            claimed_until=now + worker.lease if not done and worker.can_take() else None,
            # An event no handler wants is done at once, so it takes no part in ordering:
            # its conversation's later events do not wait for it.
            done=done,
            conversation_id=conversation,
            sequence=sequence,
            traceparent=None if traceparent is None else _traceparent(traceparent),
        )
        try:
            new = await self.inbox.add(received)
        except ClosedError as exc:
            # A bug in the calling code, not an outage: a 503 would have the sender retry it
            # for days, so it is raised, naming the missing call.
            raise ClosedError(
                "the receiver is not running: use `async with receiver:` or await start() first"
            ) from exc
        except StoreError as exc:
            event_id = clip(event.event_id)
            log.error(
                "could not store event %s: %s",
                event_id,
                clip(exc),
                extra={"action": "store_failed", "event_id": event_id},
            )
            # Not stored, so not acknowledged: the sender will retry.
            return replies.error(503, "the event could not be stored; retry later")
        if not new:
            if log.isEnabledFor(logging.INFO):
                event_id = clip(event.event_id)
                log.info(
                    "duplicate delivery of %s ignored",
                    event_id,
                    extra={"action": "duplicate", "event_id": event_id},
                )
        elif received.claimed_until is not None:
            worker.push(claimed(received))
        elif not done:
            worker.wake()
        return replies.RECEIVED

    def reject(self, reply: Reply) -> Reply:
        """Log a refused request and return its answer."""
        log.warning(
            "rejected webhook (%d): %s",
            reply.status,
            clip(reply.body.decode(errors="replace"), 2 * LOG_CHARS),
            extra={"action": "webhook_rejected", "status": reply.status},
        )
        return reply


MAX_SEQUENCE = 2**31 - 1
"""The largest ``convhook-sequence`` taken; a conversation never has that many events."""


def _conversation_id(value: str | None) -> str | None:
    """A checked conversation event's ``payload.id`` as the inbox keys ordering by it (None
    when it has none or one too long to index)."""
    return value if value and len(value) <= MAX_ID else None


def _sequence(value: str | None) -> int | None:
    """A ``convhook-sequence`` header as a number from 1 to 2**31 - 1 (the inbox's column on
    PostgreSQL); anything else is ignored (the event is then ordered by its lifecycle rank, as
    from a sender without sequences). The header is not signed: whatever a proxy puts there
    must not fail the intake."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if 0 < number <= MAX_SEQUENCE else None


def _context(value: str) -> tracing.TraceContext | None:
    """A valid ``traceparent``; None for an invalid one (dropped, never refused)."""
    try:
        return tracing.parse(value)
    except ConvhookError:
        return None


def _traceparent(value: str) -> str | None:
    """A valid ``traceparent`` as stored; an invalid one is dropped, never refused."""
    context = _context(value)
    return None if context is None else context.header()
