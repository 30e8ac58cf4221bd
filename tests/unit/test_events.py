"""The wire contract of conversation events: shapes, round-trips, leniency and errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convhook.errors import PayloadError, PayloadTooLarge
from convhook.events import (
    EVENT_CLASSES,
    NEWER_FIELD_NAMES,
    OPERATIONAL_EVENT_CLASSES,
    SEED_CUSTOMER_FIELDS,
    SEED_FIELDS,
    AnalysisCompleted,
    Completed,
    Conversation,
    ConversationStatus,
    DeliveryFailed,
    EndpointDisabled,
    EndpointEnabled,
    EndpointRecovered,
    EventType,
    OperationalEventType,
    UnknownEvent,
    UserJoined,
    UserLeft,
    event_from_dict,
    parse_event,
)
from convhook.samples import parse_assignment, sample_event
from convhook.wirecheck import check_event, fast_check

# The platform's own published example, kept verbatim.
SEED = Path(__file__).resolve().parents[1] / "data" / "seed-conversation.userJoined.json"


@pytest.fixture
def seed_text() -> str:
    """The real example from the platform's documentation."""
    return SEED.read_text()


@pytest.fixture
def seed(seed_text: str) -> dict[str, Any]:
    """The real example, decoded."""
    data: dict[str, Any] = json.loads(seed_text)
    return data


def problems(exc: PayloadError) -> dict[str, str]:
    return {p.field: p.problem for p in exc.problems}


def test_seed_parses_as_typed_user_joined(seed_text: str) -> None:
    """The seed example parses into a typed UserJoined with enums and datetimes."""
    event = parse_event(seed_text.encode())
    assert isinstance(event, UserJoined)
    assert event.payload.conversation_status is ConversationStatus.ACTIVE
    assert event.payload.call_start_time == datetime(2023, 1, 1, 12, tzinfo=UTC)
    assert event.payload.customer is not None
    assert event.payload.customer.metadata == {"custom_field": "value"}


def test_seed_reserialises_to_equal_document(seed_text: str, seed: dict[str, Any]) -> None:
    """Re-serialising the seed gives an equal JSON document with the same key order."""
    event = parse_event(seed_text)
    assert event.to_wire() == seed
    assert json.loads(event.to_json()) == seed
    assert list(event.to_wire()["payload"]) == list(seed["payload"])


def test_dynamic_variables_is_a_string_on_the_wire_and_a_dict_in_python(seed_text: str) -> None:
    """dynamicVariables stays a JSON string on the wire and is decoded for Python code."""
    event = parse_event(seed_text)
    assert isinstance(event, UserJoined)
    assert event.payload.variables == {"source": "website", "referrer": "google"}
    assert isinstance(event.to_wire()["payload"]["dynamicVariables"], str)


def test_unknown_fields_round_trip_unchanged(seed: dict[str, Any]) -> None:
    """Keys added by a newer platform survive parsing at every level."""
    seed["shardHint"] = 3
    seed["payload"]["sentiment"] = {"score": 0.4}
    seed["payload"]["customer"]["tier"] = "gold"
    assert event_from_dict(seed).to_wire() == seed


def test_missing_fields_stay_missing(seed: dict[str, Any]) -> None:
    """Seed fields that newer payloads omit are not invented as null on re-serialisation."""
    for key in ("wsUrl", "llmUrl", "postCallNotes", "postCallCategory1", "summary"):
        del seed["payload"][key]
    out = event_from_dict(seed).to_wire()
    assert out == seed
    assert "wsUrl" not in out["payload"]


def test_null_is_kept_distinct_from_missing(seed: dict[str, Any]) -> None:
    """An explicit null on input is an explicit null on output."""
    seed["payload"]["flowId"] = None
    out = event_from_dict(seed).to_wire()
    assert "flowId" in out["payload"]
    assert out["payload"]["flowId"] is None


def test_newer_fields_are_typed(seed: dict[str, Any]) -> None:
    """Fields of the platform's newer payloads parse into typed attributes."""
    seed["payload"].update(
        flowId="flow_1",
        agentJoinTime="2023-01-01T12:00:01+00:00",
        transferStartTime="2023-01-01T13:00:02.5+01:00",
        transferStatus="completed",
        transferDestination="+14155550199",
    )
    seed["payload"]["customer"]["source"] = {"method": "api"}
    event = event_from_dict(seed)
    assert isinstance(event, UserJoined)
    conv = event.payload
    assert conv.flow_id == "flow_1"
    assert conv.transfer_start_time == datetime(2023, 1, 1, 12, 0, 2, 500000, tzinfo=UTC)
    assert conv.customer is not None
    assert conv.customer.source is not None
    assert conv.customer.source.method == "api"
    assert event.to_wire()["payload"]["transferStartTime"] == "2023-01-01T12:00:02.500Z"


@pytest.mark.parametrize(
    ("given", "emitted"),
    [
        ("2023-01-01T12:00:00Z", "2023-01-01T12:00:00.000Z"),
        ("2023-01-01T12:00:00.123456Z", "2023-01-01T12:00:00.123Z"),
        ("2023-01-01T14:00:00+02:00", "2023-01-01T12:00:00.000Z"),
        ("2023-01-01T12:00:00", "2023-01-01T12:00:00.000Z"),
        ("2023-01-01 12:00:00.5-00:30", "2023-01-01T12:30:00.500Z"),
    ],
)
def test_any_iso8601_in_milliseconds_z_out(seed: dict[str, Any], given: str, emitted: str) -> None:
    """Timestamps accept any ISO-8601 form and always come out as UTC with ms and Z."""
    seed["payload"]["callStartTime"] = given
    assert event_from_dict(seed).to_wire()["payload"]["callStartTime"] == emitted


@pytest.mark.parametrize(
    ("event_type", "model"),
    [
        ("conversation.userJoined", UserJoined),
        ("conversation.userLeft", UserLeft),
        ("conversation.completed", Completed),
        ("conversation.analysisCompleted", AnalysisCompleted),
    ],
)
def test_each_event_type_parses_to_its_class(
    seed: dict[str, Any], event_type: str, model: type[Any]
) -> None:
    """The eventType picks the typed event class."""
    seed["eventType"] = event_type
    assert type(event_from_dict(seed)) is model


def test_unknown_event_type_parses_as_generic(seed: dict[str, Any]) -> None:
    """An event type added later parses as UnknownEvent and round-trips."""
    seed["eventType"] = "conversation.transferred"
    seed["payload"] = {"anything": [1, 2]}
    event = event_from_dict(seed)
    assert isinstance(event, UnknownEvent)
    assert event.to_wire() == seed


def test_unknown_enum_values_are_kept_but_not_emittable(seed: dict[str, Any]) -> None:
    """Parsing keeps an unknown status as a string; emitting refuses it, naming the field."""
    seed["payload"]["conversationStatus"] = "on_hold"
    seed["payload"]["telephonyStatus"] = "ringing-twice"
    event = event_from_dict(seed)
    assert isinstance(event, UserJoined)
    assert event.payload.conversation_status == "on_hold"
    assert event.to_wire() == seed
    with pytest.raises(PayloadError) as info:
        event.payload.check_emittable()
    assert set(problems(info.value)) == {"conversationStatus", "telephonyStatus"}


def test_built_user_joined_has_exactly_the_seed_shape(seed: dict[str, Any]) -> None:
    """An emitted userJoined has every seed key, in the seed's order, and no others."""
    event = sample_event(EventType.USER_JOINED)
    payload = event.to_wire()["payload"]
    assert list(payload) == list(seed["payload"])
    assert list(payload["customer"]) == list(seed["payload"]["customer"])
    assert list(event.to_wire()) == list(seed)


def test_built_conversation_fills_nulls_and_omits_unset_newer_fields() -> None:
    """Conversation.build emits null for unset seed fields and omits unset newer ones."""
    conv = Conversation.build(
        id="conv_1",
        phoneId=None,
        agentId="agent_1",
        workspaceId="ws_1",
        customerId=None,
        conversationStatus="created",
        conversationType="chat",
        telephonyStatus=None,
        recordingStatus=None,
        flowId=None,
        transcript="User: hi",
    )
    wire = conv.to_wire()
    assert tuple(k for k in wire if k in SEED_FIELDS) == SEED_FIELDS
    assert wire["summary"] == ""
    assert wire["callEndTime"] is None
    assert "flowId" not in wire
    assert wire["transcript"] == "User: hi"
    assert set(wire) - set(SEED_FIELDS) == {"transcript"}
    assert {"flow_id", "transcript"} <= NEWER_FIELD_NAMES


def test_build_refuses_unknown_field_names() -> None:
    """A misspelt field given to Conversation.build is an error, not a silent extra."""
    with pytest.raises(TypeError, match="conversation_statuss"):
        Conversation.build(id="c", conversationStatuss="active")


def test_lifecycle_samples_follow_the_catalogue() -> None:
    """Each sample event carries the fields its catalogue entry promises."""
    joined = sample_event(EventType.USER_JOINED).to_wire()["payload"]
    assert joined["conversationStatus"] == "active"
    assert joined["userJoinTime"] is not None
    assert joined["summary"] == ""
    assert joined["recordingStatus"] == "in_progress"
    assert all(joined[k] is None for k in ("callEndTime", "userLeaveTime", "endReason"))
    left = sample_event(EventType.USER_LEFT).to_wire()["payload"]
    assert left["userLeaveTime"] is not None
    assert left["conversationStatus"] == "active"
    done = sample_event(EventType.COMPLETED).to_wire()["payload"]
    assert done["conversationStatus"] == done["telephonyStatus"] == "completed"
    assert done["recordingStatus"] == "completed"
    assert done["endReason"]
    assert done["callEndTime"]
    assert done["recordingUrl"]
    analysed = sample_event(EventType.ANALYSIS_COMPLETED).to_wire()["payload"]
    assert analysed["summary"]
    assert analysed["postCallNotes"]
    assert analysed["postCallMetadata"]
    lines = analysed["transcript"].split("\n")
    assert all(": " in line for line in lines)


def test_samples_take_dotted_overrides() -> None:
    """--set style overrides reach nested payload fields, with JSON values decoded."""
    path, value = parse_assignment("customer.priority=3")
    event = sample_event(
        EventType.USER_JOINED, overrides={path: value, "payload.campaignId": "camp_1"}
    )
    payload = event.to_wire()["payload"]
    assert payload["customer"]["priority"] == 3
    assert payload["campaignId"] == "camp_1"
    assert parse_assignment("summary=hello world") == ("summary", "hello world")
    with pytest.raises(PayloadError, match="field=value"):
        parse_assignment("novalue")


def test_customer_seed_fields_match_the_seed(seed: dict[str, Any]) -> None:
    """The customer model knows every customer key of the seed, in order."""
    assert list(SEED_CUSTOMER_FIELDS) == list(seed["payload"]["customer"])
    assert list(SEED_FIELDS) == list(seed["payload"])


# Bad input: each gives an error naming the field and the problem.


def test_body_not_json_is_named() -> None:
    """A body that is not JSON says so."""
    with pytest.raises(PayloadError) as info:
        parse_event(b'{"eventId": ')
    assert info.value.problems[0].field == "body"
    assert "not valid JSON" in str(info.value)


def test_body_over_the_limit_is_refused_before_parsing(seed_text: str) -> None:
    """A body over the size limit raises PayloadTooLarge (413)."""
    with pytest.raises(PayloadTooLarge) as info:
        parse_event(b" " * (1024 * 1024 + 1))
    assert info.value.status_code == 413
    with pytest.raises(PayloadTooLarge):
        parse_event(seed_text.encode(), max_bytes=100)


def test_wrong_type_is_named(seed: dict[str, Any]) -> None:
    """A field of the wrong type is named with its dotted path."""
    seed["payload"]["customer"]["priority"] = "high"
    seed["eventId"] = 42
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    found = problems(info.value)
    assert "payload.customer.priority" in found
    assert "eventId" in found


def test_missing_required_field_is_named(seed: dict[str, Any]) -> None:
    """Ids, statuses and conversationType are required."""
    del seed["payload"]["id"]
    del seed["payload"]["conversationType"]
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    found = problems(info.value)
    assert found["payload.id"] == "Field required"
    assert found["payload.conversationType"] == "Field required"


def test_malformed_timestamp_is_named(seed: dict[str, Any]) -> None:
    """A timestamp that is not ISO-8601 is named."""
    seed["payload"]["userJoinTime"] = "last tuesday"
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    assert "payload.userJoinTime" in problems(info.value)


def test_dynamic_variables_not_json_is_named(seed: dict[str, Any]) -> None:
    """dynamicVariables that is not valid JSON is named with the reason."""
    seed["payload"]["dynamicVariables"] = "{source: website}"
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    assert "not valid JSON" in problems(info.value)["payload.dynamicVariables"]


def test_dynamic_variables_must_encode_an_object(seed: dict[str, Any]) -> None:
    """dynamicVariables must decode to a JSON object."""
    seed["payload"]["dynamicVariables"] = "[1, 2]"
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    assert "object" in problems(info.value)["payload.dynamicVariables"]


def test_empty_event_id_is_refused(seed: dict[str, Any]) -> None:
    """An empty eventId cannot be used to de-duplicate and is refused."""
    bad = copy.deepcopy(seed)
    bad["eventId"] = ""
    with pytest.raises(PayloadError) as info:
        event_from_dict(bad)
    assert "eventId" in problems(info.value)


def test_payload_error_serialises_for_http(seed: dict[str, Any]) -> None:
    """PayloadError.as_dict is the JSON error body receivers answer with."""
    del seed["payload"]["agentId"]
    with pytest.raises(PayloadError) as info:
        event_from_dict(seed)
    body = info.value.as_dict()
    assert body["problems"] == [{"field": "payload.agentId", "problem": "Field required"}]
    assert info.value.field == "payload.agentId"


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("userJoinTime", "0001-01-01T00:30:00+01:00"),
        ("callEndTime", "9999-12-31T23:30:00-01:00"),
        ("transferUserLeaveTime", "0001-01-01T00:00:00.000+00:01"),
        ("customer.createdAt", "9999-12-31T23:59:59-23:59"),
    ],
)
def test_times_leaving_the_date_range_in_utc_are_named(
    seed: dict[str, Any], field: str, where: str
) -> None:
    """A valid ISO-8601 time whose UTC form is outside years 1-9999 is a named field error."""
    target = seed["payload"]
    *parents, key = field.split(".")
    for parent in parents:
        target = target[parent]
    target[key] = where
    with pytest.raises(PayloadError) as info:
        parse_event(json.dumps(seed).encode())
    assert "years 1-9999" in problems(info.value)[f"payload.{field}"]


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999+00:00"])
def test_times_at_the_edges_of_the_range_are_kept(seed: dict[str, Any], edge: str) -> None:
    """The first and last instants Python can hold in UTC are accepted."""
    seed["payload"]["userJoinTime"] = edge
    event = parse_event(json.dumps(seed).encode())
    assert isinstance(event, UserJoined)
    assert event.payload.user_join_time is not None


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_are_not_json(seed_text: str, token: bytes) -> None:
    """NaN, Infinity and -Infinity are refused as not RFC 8259 JSON."""
    body = seed_text.encode().replace(b'"value"', token, 1)
    assert body != seed_text.encode()
    with pytest.raises(PayloadError) as info:
        parse_event(body)
    assert "body" in problems(info.value)


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1E+400", b"1" + b"1" * 250 + b"e99", b"1" + b"0" * 400 + b".5"]
)
def test_numbers_that_overflow_a_float_are_refused(seed: dict[str, Any], number: bytes) -> None:
    """A number every parser reads as infinity is refused, in the body and inside the
    JSON text of dynamicVariables; 1e99 and 1e308 are ordinary numbers."""
    seed["payload"]["dynamicVariables"] = {"n": 0}
    body = json.dumps(seed).encode().replace(b'{"n": 0}', b'{"n": ' + number + b"}")
    with pytest.raises(PayloadError) as info:
        parse_event(body)
    assert "body" in problems(info.value)
    seed["payload"]["dynamicVariables"] = '{"n": ' + number.decode() + "}"
    with pytest.raises(PayloadError) as info:
        parse_event(json.dumps(seed).encode())
    assert "payload.dynamicVariables" in problems(info.value)
    seed["payload"]["dynamicVariables"] = {"a": 1e99, "b": 1e308}
    assert parse_event(json.dumps(seed).encode()).payload.variables == {"a": 1e99, "b": 1e308}


def test_nan_inside_strings_is_text(seed: dict[str, Any]) -> None:
    """The letters NaN and Infinity inside strings are ordinary text."""
    seed["payload"]["summary"] = "NaN Infinity -Infinity"
    event = parse_event(json.dumps(seed).encode())
    assert isinstance(event, UserJoined)
    assert event.payload.summary == "NaN Infinity -Infinity"


def test_event_id_has_a_length_limit(seed: dict[str, Any]) -> None:
    """An eventId over 256 characters is refused; one of 256 is kept."""
    seed["eventId"] = "e" * 256
    assert parse_event(json.dumps(seed).encode()).event_id == "e" * 256
    seed["eventId"] = "e" * 257
    with pytest.raises(PayloadError) as info:
        parse_event(json.dumps(seed).encode())
    assert "256" in problems(info.value)["eventId"]


# -- operational events ---------------------------------------------------------------------

OPERATIONAL_CLASSES = {
    "endpoint.disabled": EndpointDisabled,
    "endpoint.enabled": EndpointEnabled,
    "endpoint.recovered": EndpointRecovered,
    "delivery.failed": DeliveryFailed,
}


@pytest.mark.parametrize("event_type", list(OperationalEventType))
def test_operational_events_parse_typed_and_round_trip(event_type: OperationalEventType) -> None:
    """parse_event returns the typed operational event, whose payload round-trips exactly."""
    body = sample_event(event_type).to_json()
    event = parse_event(body)
    assert type(event) is OPERATIONAL_CLASSES[event_type.value]
    assert event.to_json() == body
    assert event.to_wire()["payload"]["endpointId"].startswith("ep_")


def test_operational_types_stay_out_of_the_conversation_catalogue() -> None:
    """EVENT_CLASSES and EventType keep conversation events only (code reading a conversation
    from each never meets an endpoint); the operational ones have their own."""
    assert set(EVENT_CLASSES) == {t.value for t in EventType}
    assert set(OPERATIONAL_EVENT_CLASSES) == {t.value for t in OperationalEventType}
    assert not set(EVENT_CLASSES) & set(OPERATIONAL_EVENT_CLASSES)


def test_an_operational_type_with_a_conversation_payload_is_refused() -> None:
    """endpoint.disabled carrying a conversation is refused by the models and by the fast
    check the receiver runs first (which must never accept what the models refuse)."""
    doc = sample_event("conversation.userJoined").to_wire()
    doc["eventType"] = "endpoint.disabled"
    body = json.dumps(doc).encode()
    with pytest.raises(PayloadError) as info:
        parse_event(body)
    assert "payload.endpointId" in problems(info.value)
    assert fast_check(body) is None
    with pytest.raises(PayloadError):
        check_event(body)


def test_delivery_failed_names_the_failed_delivery() -> None:
    """delivery.failed carries the delivery, its event and endpoint, and how it last failed."""
    event = parse_event(
        sample_event("delivery.failed", overrides={"lastError": "timeout"}).to_json()
    )
    assert isinstance(event, DeliveryFailed)
    wire = event.to_wire()["payload"]
    assert list(wire) == [
        "deliveryId",
        "eventId",
        "eventType",
        "endpointId",
        "workspaceId",
        "url",
        "conversationId",
        "attempts",
        "lastStatusCode",
        "lastError",
        "at",
    ]
    assert wire["deliveryId"].startswith("dlv_")
    assert event.payload.last_error == "timeout"


def test_catalogue_schema_openapi_and_trigger_include_operational_events() -> None:
    """The JSON Schema, the OpenAPI webhooks and trigger's choices list each operational event,
    and each shipped example validates against its schema."""
    import jsonschema

    from convhook.cli.trigger import TriggerType
    from convhook.schema import CATALOGUE, json_schemas, openapi_document

    names = [t.value for t in OperationalEventType]
    schemas = json_schemas()
    webhooks = openapi_document()["webhooks"]
    for name in names:
        assert name in schemas
        assert name in webhooks
        assert name in {t.value for t in TriggerType}
    for entry in CATALOGUE:
        if entry.event_type.value in names:
            jsonschema.Draft202012Validator(schemas[entry.event_type.value]).validate(
                entry.example()
            )
            assert sample_event(entry.event_type).event_type == entry.event_type.value
