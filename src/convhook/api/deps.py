"""FastAPI dependencies giving routes the app's stores, outbox and settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from convhook.events import DEFAULT_MAX_BODY
from convhook.outbox import DEFAULT_MAX_ACTIVE, Outbox
from convhook.retry import RetryPolicy
from convhook.store.delivery import DeliveryStore
from convhook.store.producer import ProducerStore


@dataclass(frozen=True)
class ApiSettings:
    """How the API behaves: limits and the ``Retry-After`` it advises."""

    max_active: int = DEFAULT_MAX_ACTIVE
    """Conversations a workspace may have dialing or active at once."""
    max_body: int = DEFAULT_MAX_BODY
    """Largest request body accepted, in bytes."""
    retry_after: int = 1
    """Seconds a client is told to wait after a 429."""
    dispatch: bool = False
    """Run the delivery dispatcher inside the app (``convhook serve`` turns it on)."""
    allow_private_targets: bool = False
    """Allow endpoints on loopback, private and link-local addresses (development only)."""
    retry_policy: RetryPolicy | None = None
    """The dispatcher's retry schedule (None: the default, about 3.15 days)."""
    stream_heartbeat: float = 15.0
    """Seconds between ``: ping`` comments on an idle ``/api/v2/stream``."""
    stream_poll: float = 0.2
    """Seconds between the stream's reads of the event and attempt logs."""
    stream_queue: int = 1000
    """Messages a stream subscriber may fall behind before it is dropped (it reconnects with
    ``Last-Event-ID`` and loses nothing)."""
    stream_gap_wait: float = 2.0
    """On PostgreSQL, seconds the stream waits at a hole in a log's numbering for the
    transaction that may still fill it before passing over it."""


async def get_store(request: Request) -> ProducerStore:
    """The producer store the app was created with."""
    store: ProducerStore = request.app.state.store
    return store


async def get_deliveries(request: Request) -> DeliveryStore:
    """The delivery store over the producer store's database."""
    deliveries: DeliveryStore = request.app.state.deliveries
    return deliveries


async def get_outbox(request: Request) -> Outbox:
    """The outbox that records conversation changes with their events."""
    outbox: Outbox = request.app.state.outbox
    return outbox
