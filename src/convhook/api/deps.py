"""FastAPI dependencies giving routes the app's stores, outbox and settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from convhook.events import DEFAULT_MAX_BODY
from convhook.outbox import DEFAULT_MAX_ACTIVE, Outbox
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
