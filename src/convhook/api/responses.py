"""What the API answers: the models that publish each response in ``/openapi.json`` and the
functions that write the endpoint and delivery documents.

Routes send hand-built JSON (stored documents are passed through without re-encoding); these
models only describe it, so each model's fields are exactly the keys its documents carry.
Delivery ids are numbered by the database and sent as ``dlv_<number>``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema
from pydantic.alias_generators import to_camel

from convhook.api.app import CURSOR_PATTERN, ENDPOINT_CURSOR_PATTERN
from convhook.api.fields import MAX_INT64
from convhook.events import CatalogueEventType, Conversation, Customer
from convhook.schema import CATALOGUE
from convhook.store.delivery import Delivery as DeliveryRow
from convhook.store.delivery import Endpoint as EndpointRow
from convhook.store.delivery.operational import DELIVERY_PREFIX
from convhook.timefmt import format_ms


def _at_most(limit: int) -> str:
    """A regular expression of the decimal numbers from 1 to ``limit``, no leading zero."""
    digits = str(limit)
    shorter = f"[1-9][0-9]{{0,{len(digits) - 2}}}" if len(digits) > 1 else ""
    same = []
    for i, d in enumerate(digits):
        low = "1" if i == 0 else "0"
        if d > low:
            rest = len(digits) - i - 1
            same.append(f"{digits[:i]}[{low}-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    same.append(digits)
    return "(?:" + "|".join(filter(None, [shorter, *same])) + ")"


NUMBER_PATTERN = _at_most(MAX_INT64)
"""The numbers the databases give rows: 1 to 2^63 - 1."""
DELIVERY_ID_PATTERN = f"^{DELIVERY_PREFIX}{NUMBER_PATTERN}$"
"""A delivery id as the API sends it."""
DELIVERY_ID_PARAMETER = f"^(?:{DELIVERY_PREFIX})?{NUMBER_PATTERN}$"
"""A delivery id as the API takes it: the bare number is still read (deprecated)."""
_DELIVERY_ID = re.compile(DELIVERY_ID_PARAMETER.removesuffix("$") + r"\Z")


def delivery_id(number: int) -> str:
    """The wire id of the delivery the database numbers ``number``."""
    return f"{DELIVERY_PREFIX}{number}"


def parse_delivery_id(text: str) -> int | None:
    """The database number of a wire delivery id (or of a bare number); None when ``text``
    is neither."""
    if not _DELIVERY_ID.match(text):
        return None
    return int(text.removeprefix(DELIVERY_PREFIX))


class WireOut(BaseModel):
    """Base of the response models: camelCase keys."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


NextCursor = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": CURSOR_PATTERN}, {"type": "null"}],
            "description": "Pass as `cursor` for the next page; null on the last page.",
        }
    ),
]
EndpointCursor = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": ENDPOINT_CURSOR_PATTERN}, {"type": "null"}],
            "description": "Pass as `cursor` for the next page; null on the last page.",
        }
    ),
]
DeliveryId = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": DELIVERY_ID_PATTERN}, mode="serialization")
]


class ConversationPage(WireOut):
    """One page of conversations, oldest first."""

    data: list[Conversation]
    next_cursor: NextCursor


class CustomerPage(WireOut):
    """One page of customers, oldest first."""

    data: list[Customer]
    next_cursor: NextCursor


class BatchError(WireOut):
    """One refused field of one batch item."""

    index: int = Field(description="The item's position in the batch, from 0.")
    field: str
    problem: str


class ConversationBatchResult(WireOut):
    """The conversations a batch created and the problems of the items it refused."""

    results: list[Conversation]
    errors: list[BatchError]


class CustomerBatchResult(WireOut):
    """The customers a batch saved and the problems of the items it refused."""

    results: list[Customer]
    errors: list[BatchError]


def _event_schema() -> dict[str, Any]:
    # The event catalogue's schemas (the OpenAPI ``webhooks`` section's components).
    refs = {
        entry.event_type.value: f"#/components/schemas/{entry.model.__name__}Event"
        for entry in CATALOGUE
    }
    return {
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "eventType", "mapping": refs},
        "description": "The event exactly as endpoints receive it (see `webhooks`).",
    }


class Event(RootModel[Annotated[dict[str, Any], WithJsonSchema(_event_schema())]]):
    """An event of the catalogue."""


class PrunedEvent(WireOut):
    """An event whose payload the retention job removed: its id and type only."""

    event_id: str
    event_type: CatalogueEventType
    payload: None
    pruned: Literal[True]


class EventPage(WireOut):
    """One page of events, oldest first."""

    data: list[Event | PrunedEvent]
    next_cursor: NextCursor


class Endpoint(WireOut):
    """A webhook endpoint (its secret is never shown again after it is handed out)."""

    id: str
    url: str
    description: str
    event_types: list[CatalogueEventType] | None = Field(
        description="null: every conversation event (operational events, endpoint.* and "
        "delivery.failed, go only to endpoints that list them)."
    )
    enabled: bool
    disabled_reason: str | None
    rate_limit: float | None = Field(description="Deliveries per second; null: no limit.")
    max_in_flight: int
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(Endpoint):
    """An endpoint with its new signing secret, shown this once."""

    secret: str = Field(description="`whsec_` secret that signs every delivery.")


class EndpointPage(WireOut):
    """One page of endpoints, oldest first."""

    data: list[Endpoint]
    next_cursor: EndpointCursor


class DeliveryStatus(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    """Waiting for its next attempt."""
    DELIVERING = "delivering"
    """An attempt is under way."""
    DELIVERED = "delivered"
    """The endpoint answered 2xx."""
    FAILED = "failed"
    """The retries ran out, or the endpoint was disabled."""


class Delivery(WireOut):
    """One event sent to one endpoint."""

    id: DeliveryId
    event_id: str
    endpoint_id: str
    event_type: CatalogueEventType
    conversation_id: str | None = Field(description="null for a test event.")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class Attempt(WireOut):
    """One HTTP attempt of a delivery."""

    attempted_at: datetime
    status_code: int | None = Field(description="null when no answer came.")
    latency_ms: float
    error: str | None
    response_body: str = Field(description="The answer's first 4 KiB.")


class DeliveryWithAttempts(Delivery):
    """A delivery with every attempt, oldest first."""

    attempt_log: list[Attempt]


class DeliveryPage(WireOut):
    """One page of an endpoint's deliveries, newest first."""

    data: list[Delivery]
    next_cursor: NextCursor


class EventDeliveries(WireOut):
    """Every delivery of one event (one per endpoint it went to), not paged."""

    event_id: str
    data: list[DeliveryWithAttempts]


class Queued(WireOut):
    """How many deliveries were queued."""

    queued: int


class QueuedTestEvent(WireOut):
    """The test event queued for one endpoint; follow it at ``/api/v2/deliveries/{id}``."""

    delivery_id: DeliveryId
    event_id: str


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def endpoint_doc(e: EndpointRow, *, secret: str | None = None) -> dict[str, Any]:
    """The wire form of an endpoint; ``secret`` only when it is being handed out."""
    doc: dict[str, Any] = {
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "eventTypes": list(e.event_types) if e.event_types is not None else None,
        "enabled": e.enabled,
        "disabledReason": e.disabled_reason,
        "rateLimit": e.rate_limit,
        "maxInFlight": e.max_in_flight,
        "failingSince": _ts(e.failing_since),
        "previousSecretExpiresAt": _ts(e.previous_secret_expires_at),
        "createdAt": _ts(e.created_at),
        "updatedAt": _ts(e.updated_at),
    }
    if secret is not None:
        doc["secret"] = secret
    return doc


def delivery_doc(d: DeliveryRow, *, attempts: bool = False) -> dict[str, Any]:
    """The wire form of a delivery, with its attempts if asked."""
    doc: dict[str, Any] = {
        "id": delivery_id(d.id),
        "eventId": d.event_id,
        "endpointId": d.endpoint_id,
        "eventType": d.event_type,
        # A test event's is the sample conversation its body names, as the receiver saw it.
        "conversationId": d.conversation_id,
        "status": d.status,
        "attempts": d.attempts,
        "nextAttemptAt": _ts(d.next_attempt_at),
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "lastAttemptAt": _ts(d.last_attempt_at),
        "deliveredAt": _ts(d.delivered_at),
        "createdAt": _ts(d.created_at),
    }
    if attempts:
        doc["attemptLog"] = [
            {
                "attemptedAt": _ts(a.attempted_at),
                "statusCode": a.status_code,
                "latencyMs": a.latency_ms,
                "error": a.error,
                "responseBody": a.response_body,
            }
            for a in d.attempt_log
        ]
    return doc


def json_response(doc: Any, status: int = 200) -> Response:
    """A JSON response of ``doc``."""
    return Response(json.dumps(doc), status_code=status, media_type="application/json")
