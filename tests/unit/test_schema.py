"""The published catalogue: JSON Schema for each event and an OpenAPI 3.1 webhooks section."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

import convhook
from convhook.events import EventType, OperationalEventType
from convhook.samples import sample_event
from convhook.schema import CATALOGUE, RECEIVED_TEXT, json_schemas, openapi_document

# The platform's own published example, kept verbatim.
SEED = Path(__file__).resolve().parents[1] / "data" / "seed-conversation.userJoined.json"
REPO = Path(__file__).resolve().parents[2]


def validator(event_type: str) -> jsonschema.Draft202012Validator:
    schema = json_schemas()[event_type]
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_catalogue_lists_the_events_in_lifecycle_order() -> None:
    """The catalogue has each lifecycle event, in order, with its trigger sentence, then the
    operational events."""
    assert [e.event_type for e in CATALOGUE] == [*EventType, *OperationalEventType]
    assert CATALOGUE[0].trigger == "Triggered when a user joins a conversation"


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.event_type.value)
def test_every_fixture_validates_against_its_schema(entry: Any) -> None:
    """Each shipped fixture validates against its published JSON Schema."""
    validator(entry.event_type.value).validate(entry.example())


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.event_type.value)
def test_fresh_samples_validate_against_their_schema(entry: Any) -> None:
    """Freshly generated samples (what trigger sends) validate too."""
    doc = sample_event(entry.event_type).to_wire()
    validator(entry.event_type.value).validate(doc)


def test_seed_validates_against_the_user_joined_schema() -> None:
    """The platform's own example satisfies the published schema."""
    validator("conversation.userJoined").validate(json.loads(SEED.read_text()))


def test_schema_refuses_wrong_event_type_and_missing_ids() -> None:
    """The schema pins eventType and requires the ids."""
    doc = CATALOGUE[0].example()
    doc["eventType"] = "conversation.userLeft"
    del doc["payload"]["agentId"]
    errors = list(validator("conversation.userJoined").iter_errors(doc))
    messages = " ".join(e.message for e in errors)
    assert "conversation.userJoined" in messages
    assert "agentId" in messages


def test_fixtures_are_what_the_sample_builder_makes() -> None:
    """The shipped fixtures are regenerated from the sample builder (scripts/make-fixtures.py)."""
    now = datetime(2023, 1, 1, 12, tzinfo=UTC)
    for entry in CATALOGUE:
        made = sample_event(entry.event_type, now=now, rng=random.Random(7), fixed_ids=True)
        assert made.to_wire() == entry.example(), f"run scripts/make-fixtures.py ({entry})"


def test_openapi_document_is_valid_and_describes_every_webhook() -> None:
    """The OpenAPI 3.1 document validates and has a webhook per event with example and 200."""
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert list(doc["webhooks"]) == [e.value for e in [*EventType, *OperationalEventType]]
    for entry in CATALOGUE:
        post = doc["webhooks"][entry.event_type.value]["post"]
        body = post["requestBody"]["content"]["application/json"]
        assert body["example"] == entry.example()
        assert body["schema"]["$ref"].startswith("#/components/schemas/")
        ok = post["responses"]["200"]
        assert ok["description"] == RECEIVED_TEXT
        assert ok["content"]["text/plain"]["example"] == RECEIVED_TEXT


def test_public_names_are_sorted_and_importable() -> None:
    """convhook.__all__ is sorted and every name in it exists."""
    assert convhook.__all__ == sorted(convhook.__all__)
    for name in convhook.__all__:
        assert hasattr(convhook, name), name


def test_py_typed_ships() -> None:
    """The package marks itself as typed."""
    assert (REPO / "src" / "convhook" / "py.typed").exists()


def test_every_webhook_documents_the_sequence_and_trace_headers() -> None:
    """Each webhook of the OpenAPI document lists convhook-sequence,
    convhook-previous-event-id and traceparent among its header parameters."""
    doc = openapi_document()
    for name, webhook in doc["webhooks"].items():
        headers = {p["name"] for p in webhook["post"]["parameters"] if p["in"] == "header"}
        assert {"convhook-sequence", "convhook-previous-event-id", "traceparent"} <= headers, name
