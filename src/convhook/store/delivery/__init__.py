"""Delivery: endpoints, claiming due deliveries, recording attempts, the delivery log."""

from convhook.store.delivery.claims import LEASE_FACTOR, Claim
from convhook.store.delivery.endpoints import Endpoint
from convhook.store.delivery.log import Attempt, AttemptLine, Backlog, Delivery
from convhook.store.delivery.records import Result, Status
from convhook.store.delivery.store import DeliveryStore

__all__ = [
    "LEASE_FACTOR",
    "Attempt",
    "AttemptLine",
    "Backlog",
    "Claim",
    "Delivery",
    "DeliveryStore",
    "Endpoint",
    "Result",
    "Status",
]
