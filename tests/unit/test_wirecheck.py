"""The receiver's fast body check agrees with the pydantic models it is generated from."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from convhook.errors import PayloadError, PayloadTooLarge
from convhook.events import SEED_CUSTOMER_FIELDS, SEED_FIELDS, parse_event
from convhook.samples import sample_event
from convhook.wirecheck import Checked, _struct, check_event, checked_of, fast_check
from tests.unit.test_events_property import events

SEED = Path(__file__).parent.parent / "data" / "seed-conversation.userJoined.json"
TYPES = [
    "conversation.userJoined",
    "conversation.userLeft",
    "conversation.completed",
    "conversation.analysisCompleted",
]

# Values of every JSON kind, and strings that look like timestamps in spellings pydantic
# and msgspec may treat differently.
odd_strings = st.sampled_from(
    [
        "",
        "x",
        "2023-01-01",
        "2023-01-01T12:00:00",
        "2023-01-01 12:00:00Z",
        "2023-01-01t12:00:00z",
        "2023-01-01T12:00:00,5Z",
        "2023-01-01T12:00:00.123456789Z",
        "2023-01-01T24:00:00Z",
        "2023-12-31T23:59:60Z",
        "2023-02-30T00:00:00Z",
        "2023-01-01T12:00:00+0530",
        "2023-01-01T12:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:30:00-01:00",
        "9999-12-31T23:59:59.999999Z",
        "1700000000",
        "{}",
        "[]",
        '{"a": 1}',
        "null",
        "\ud800",
    ]
)
any_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | odd_strings,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(string.ascii_letters, max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# Strings around the eventId length limit.
odd_strings = odd_strings | st.sampled_from(["i" * 256, "i" * 257])
envelope_keys = st.sampled_from(["eventId", "eventType", "payload"])
payload_keys = st.sampled_from([*SEED_FIELDS, "flowId", "agentJoinTime", "transcript", "agent_id"])
customer_keys = st.sampled_from([*SEED_CUSTOMER_FIELDS, "source", "workspace_id"])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event with a few keys set to arbitrary JSON or removed."""
    doc: dict[str, Any] = draw(events)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["envelope", "payload", "customer"]))
        payload = doc.get("payload")
        customer = payload.get("customer") if isinstance(payload, dict) else None
        if where == "envelope" or not isinstance(payload, dict):
            target, key = doc, draw(envelope_keys)
        elif where == "payload" or not isinstance(customer, dict):
            target, key = payload, draw(payload_keys)
        else:
            target, key = customer, draw(customer_keys)
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(any_json | odd_strings)
    return json.dumps(doc).encode()


def check_agrees(body: bytes) -> None:
    fast = fast_check(body)
    try:
        event = parse_event(body)
    except PayloadError:
        assert fast is None, "the fast check accepted a body the models refuse"
        with pytest.raises(PayloadError):
            check_event(body)
        return
    expected = checked_of(event)
    assert fast in (None, expected)
    assert check_event(body) == expected


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_check_never_accepts_what_the_models_refuse(body: bytes) -> None:
    check_agrees(body)


@settings(max_examples=200)
@given(events)
def test_valid_events_take_the_fast_path(doc: dict[str, Any]) -> None:
    """A valid event whose keys the models all name takes the fast path; one with a key they
    do not name (a newer platform's field, whose value msgspec would skip unchecked) goes to
    the models, which accept it."""
    body = json.dumps(doc).encode()
    expected = Checked(doc["eventId"], doc["eventType"], doc["payload"]["id"])
    assert check_event(body) == expected
    assert fast_check(body) == (None if "futureField" in doc["payload"] else expected)


@pytest.mark.parametrize("event_type", TYPES)
def test_samples_and_seed_take_the_fast_path(event_type: str) -> None:
    body = sample_event(event_type).to_json()
    doc = json.loads(body)
    assert fast_check(body) == Checked(doc["eventId"], event_type, doc["payload"]["id"])
    seed = SEED.read_bytes()
    sdoc = json.loads(seed)
    assert fast_check(seed) == Checked(
        sdoc["eventId"], "conversation.userJoined", sdoc["payload"]["id"]
    )


def test_the_conversation_id_comes_with_the_check_on_both_paths() -> None:
    """The receiver orders by the conversation id the check read: from the fast path, from the
    models for a lenient spelling, and none for an operational event."""
    doc = json.loads(sample_event("conversation.completed").to_json())
    assert check_event(json.dumps(doc).encode()).conversation_id == doc["payload"]["id"]
    doc["payload"]["futureField"] = 1  # the models decide
    body = json.dumps(doc).encode()
    assert fast_check(body) is None
    assert check_event(body).conversation_id == doc["payload"]["id"]
    operational = sample_event("endpoint.disabled").to_json()
    assert check_event(operational).conversation_id is None
    doc["eventType"] = "conversation.transferred"  # a newer platform's type
    assert check_event(json.dumps(doc).encode()).conversation_id == doc["payload"]["id"]


@pytest.mark.parametrize(
    "variables",
    ['{"name": "Ada"}', "", None, {"name": "Ada"}, "not json", "[1, 2]", "3", 7, ["a"]],
)
def test_dynamic_variables_follow_the_model(variables: Any) -> None:
    doc = json.loads(sample_event("conversation.completed").to_json())
    doc["payload"]["dynamicVariables"] = variables
    check_agrees(json.dumps(doc).encode())


@pytest.mark.parametrize("depth", [10, 150, 199, 200, 300, 5000])
def test_deep_nesting_is_left_to_the_models(depth: int) -> None:
    doc = sample_event("conversation.completed").to_json().decode()
    nested = '{"a": ' * depth + "1" + "}" * depth
    body = doc.replace('"postCallMetadata": {', '"postCallMetadata": {"deep": ' + nested + ", ", 1)
    check_agrees(body.encode())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"{",
        b'{"eventId": "e", "eventType": "x"}',
        b'{"eventId": "e", "eventType": [], "payload": {}}',
        b"\xff\xfe",
        b"{} x",
    ],
)
def test_malformed_bodies_get_the_models_error(body: bytes) -> None:
    check_agrees(body)


def test_unknown_event_types_are_checked_by_the_models() -> None:
    body = b'{"eventId": "evt_1", "eventType": "conversation.transferred", "payload": 5}'
    assert fast_check(body) is None
    assert check_event(body) == Checked("evt_1", "conversation.transferred")


def test_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        check_event(b"{" + b" " * 100 + b"}", max_bytes=50)


def test_models_the_check_cannot_mirror_are_refused() -> None:
    class Scored(BaseModel):
        score: float

    class Checked(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _upper(cls, value: str) -> str:
            return value.upper()

    with pytest.raises(TypeError, match="no msgspec type"):
        _struct(Scored, {})
    with pytest.raises(TypeError, match="validators"):
        _struct(Checked, {})


@pytest.mark.parametrize(
    "spelling",
    [
        b'"0001-01-01T00:30:00+01:00"',
        b'"9999-12-31T23:30:00-01:00"',
        b'"\\u0039999-12-31T23:30:00-01:00"',
        b'"\\u0030001-01-01T00:00:00+00:01"',
    ],
)
@pytest.mark.parametrize("key", [b"userJoinTime", b"agentLeaveTime", b"updatedAt"])
def test_times_outside_the_range_in_utc_leave_the_fast_path(spelling: bytes, key: bytes) -> None:
    """A timestamp the models refuse for leaving years 1-9999 in UTC is refused, however spelt
    (``\\u0039`` is an escaped "9")."""
    doc = json.loads(sample_event("conversation.completed").to_json())
    doc["payload"]["agentLeaveTime"] = "2023-01-01T00:00:00Z"
    doc["payload"]["userJoinTime"] = "2023-01-01T00:00:00Z"
    doc["payload"]["customer"]["updatedAt"] = "2023-01-01T00:00:00Z"
    good = b'"' + key + b'": "2023-01-01T00:00:00Z"'
    body = json.dumps(doc).encode().replace(good, b'"' + key + b'": ' + spelling, 1)
    assert spelling in body
    assert fast_check(body) is None
    with pytest.raises(PayloadError):
        check_event(body)
    check_agrees(body)


@pytest.mark.parametrize(
    ("token", "where"),
    [
        (b"NaN", b'"metadata":{'),
        (b"Infinity", b'"metadata":{'),
        (b"-Infinity", b'"metadata":{'),
        (b"NaN", b'"summary":'),
    ],
)
def test_non_finite_numbers_are_refused(token: bytes, where: bytes) -> None:
    """NaN, Infinity and -Infinity anywhere in a body are refused at intake."""
    body = sample_event("conversation.completed").to_json()
    assert where in body
    body = body.replace(where, where + b'"n": ' + token + b", ", 1)
    assert fast_check(body) is None
    with pytest.raises(PayloadError) as info:
        check_event(body)
    assert info.value.problems[0].field == "body"
    check_agrees(body)


def test_long_event_ids_are_refused() -> None:
    """An eventId over 256 characters is refused by the fast check and the models alike."""
    doc = json.loads(sample_event("conversation.completed").to_json())
    doc["eventId"] = "e" * 257
    body = json.dumps(doc).encode()
    assert fast_check(body) is None
    with pytest.raises(PayloadError) as info:
        check_event(body)
    assert info.value.problems[0].field == "eventId"
    doc["eventId"] = "e" * 256
    assert fast_check(json.dumps(doc).encode()) == Checked(
        "e" * 256, "conversation.completed", doc["payload"]["id"]
    )


@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80"], ids=lambda b: b.hex()
)
def test_invalid_utf8_in_unknown_keys_is_refused(raw: bytes) -> None:
    """Invalid UTF-8 (surrogates, overlong forms) is refused even in keys the check skips."""
    body = sample_event("conversation.completed").to_json()
    body = body.replace(b'"payload":{', b'"payload":{"extra":"' + raw + b'",', 1)
    assert fast_check(body) is None
    with pytest.raises(PayloadError):
        check_event(body)
    check_agrees(body)
