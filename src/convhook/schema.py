"""The event catalogue, published as JSON Schema and as an OpenAPI 3.1 ``webhooks`` section."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from convhook import __version__
from convhook.events import (
    EVENT_CLASSES,
    OPERATIONAL_EVENT_CLASSES,
    BaseEvent,
    EventType,
    OperationalEventType,
)

RECEIVED_TEXT = "Webhook received successfully"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class CatalogueEntry:
    """One event type: its name, model, the sentence saying when it fires, and a fixture."""

    event_type: EventType | OperationalEventType
    model: type[BaseEvent]
    trigger: str

    @property
    def fixture_name(self) -> str:
        return f"{self.event_type.value}.json"

    def example(self) -> dict[str, Any]:
        """The realistic example shipped in the package."""
        text = (resources.files("convhook") / "fixtures" / self.fixture_name).read_text()
        data: dict[str, Any] = json.loads(text)
        return data


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        EventType.USER_JOINED,
        EVENT_CLASSES[EventType.USER_JOINED],
        "Triggered when a user joins a conversation",
    ),
    CatalogueEntry(
        EventType.USER_LEFT,
        EVENT_CLASSES[EventType.USER_LEFT],
        "Triggered when the user leaves a conversation",
    ),
    CatalogueEntry(
        EventType.COMPLETED,
        EVENT_CLASSES[EventType.COMPLETED],
        "Triggered when a conversation has ended",
    ),
    CatalogueEntry(
        EventType.ANALYSIS_COMPLETED,
        EVENT_CLASSES[EventType.ANALYSIS_COMPLETED],
        "Triggered when the post-call analysis of a conversation is complete",
    ),
    # Operational events: sent only to endpoints that list them in eventTypes.
    CatalogueEntry(
        OperationalEventType.ENDPOINT_DISABLED,
        OPERATIONAL_EVENT_CLASSES[OperationalEventType.ENDPOINT_DISABLED],
        "Triggered when an endpoint stops receiving events: it answered 410 Gone, failed "
        "without a success for too long, or was disabled through the API; sent only to "
        "endpoints that list it",
    ),
    CatalogueEntry(
        OperationalEventType.ENDPOINT_ENABLED,
        OPERATIONAL_EVENT_CLASSES[OperationalEventType.ENDPOINT_ENABLED],
        "Triggered when a disabled endpoint is enabled again through the API; sent only to "
        "endpoints that list it",
    ),
    CatalogueEntry(
        OperationalEventType.ENDPOINT_RECOVERED,
        OPERATIONAL_EVENT_CLASSES[OperationalEventType.ENDPOINT_RECOVERED],
        "Triggered when an endpoint that was failing accepts a delivery again (its first "
        "success since); sent only to endpoints that list it",
    ),
    CatalogueEntry(
        OperationalEventType.DELIVERY_FAILED,
        OPERATIONAL_EVENT_CLASSES[OperationalEventType.DELIVERY_FAILED],
        "Triggered when a delivery of a conversation event ends failed (its retries spent, or "
        "a 410); sent only to endpoints that list it",
    ),
)


def _model_schema(entry: CatalogueEntry, ref_template: str) -> dict[str, Any]:
    schema = entry.model.model_json_schema(by_alias=True, ref_template=ref_template)
    schema["title"] = entry.event_type.value
    schema["description"] = entry.trigger
    schema["properties"]["eventType"] = {"const": entry.event_type.value, "type": "string"}
    if "eventType" not in schema.get("required", []):
        schema.setdefault("required", []).append("eventType")
    return schema


def json_schemas() -> dict[str, Any]:
    """A JSON Schema (2020-12) document with one self-contained schema per event type."""
    out: dict[str, Any] = {}
    for entry in CATALOGUE:
        schema = _model_schema(entry, "#/$defs/{model}")
        schema["$schema"] = JSON_SCHEMA_DIALECT
        schema["$id"] = f"https://convhook.dev/schemas/{entry.event_type.value}.json"
        schema["examples"] = [entry.example()]
        out[entry.event_type.value] = schema
    return out


def webhooks_section() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI ``webhooks`` section and the component schemas it refers to."""
    components: dict[str, Any] = {}
    webhooks: dict[str, Any] = {}
    for entry in CATALOGUE:
        schema = _model_schema(entry, "#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        name = entry.model.__name__ + "Event"
        components[name] = schema
        webhooks[entry.event_type.value] = {
            "post": {
                "summary": entry.event_type.value,
                "description": entry.trigger + ".",
                "operationId": entry.event_type.value.replace(".", "_"),
                "parameters": _signature_headers(),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{name}"},
                            "example": entry.example(),
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": RECEIVED_TEXT,
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": RECEIVED_TEXT,
                            }
                        },
                    }
                },
            }
        }
    return webhooks, components


def openapi_document() -> dict[str, Any]:
    """A standalone OpenAPI 3.1 document describing every event as a webhook."""
    webhooks, components = webhooks_section()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conversation events",
            "version": __version__,
            "description": (
                "Webhooks sent for the conversation lifecycle, and convhook's operational "
                "events (endpoint.*, delivery.failed) to endpoints that list them. Each is a "
                "POST with a JSON body `{eventId, eventType, payload}` signed per Standard "
                "Webhooks v1; answer 200."
            ),
        },
        "paths": {},
        "webhooks": webhooks,
        "components": {"schemas": components},
    }


def _signature_headers() -> list[dict[str, Any]]:
    docs = {
        "webhook-id": "Unique message id (the eventId); use it to de-duplicate.",
        "webhook-timestamp": "Unix seconds when the message was signed.",
        "webhook-signature": "Space-separated `v1,<base64 HMAC-SHA256>` signatures.",
    }
    headers = [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in docs.items()
    ]
    # Sent by convhook, not by every platform: a receiver orders and reconciles with them.
    headers += [
        {
            "name": "convhook-sequence",
            "in": "header",
            "required": False,
            "description": "The event's place in its conversation (1 for the first); absent "
            "for a test event. A skipped number is a missed event: read it back with "
            "GET /api/v2/conversations/{id}/events?afterSequence=N.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        },
        {
            "name": "convhook-previous-event-id",
            "in": "header",
            "required": False,
            "description": "The eventId of the conversation's event before this one; absent "
            "for the first.",
            "schema": {"type": "string"},
        },
        {
            "name": "traceparent",
            "in": "header",
            "required": False,
            "description": "W3C Trace Context of the request that recorded the event, with a "
            "span id of this delivery attempt.",
            "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
        },
    ]
    return headers
