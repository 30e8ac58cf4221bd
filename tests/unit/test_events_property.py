"""Property-based round-trips of random valid conversations."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from convhook.events import (
    ConversationStatus,
    ConversationType,
    EndReason,
    RecordingStatus,
    TelephonyType,
    event_from_dict,
    parse_event,
)
from convhook.timefmt import format_ts

ids = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=24)
text = st.text(max_size=40)
json_scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | text
json_objects = st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=8), json_scalars, max_size=4
)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
).map(lambda d: format_ts(d.replace(microsecond=d.microsecond // 1000 * 1000)))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def enum_or_other(values: list[str]) -> st.SearchStrategy[str]:
    """Mostly catalogue values, sometimes a value a newer platform might send."""
    return st.sampled_from(values) | st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


customers = st.fixed_dictionaries(
    {"id": ids, "workspaceId": ids},
    optional={
        "name": maybe(text),
        "createdAt": maybe(timestamps),
        "updatedAt": maybe(timestamps),
        "email": maybe(text),
        "phoneNumber": maybe(text),
        "identifier": maybe(text),
        "priority": maybe(st.integers(0, 100)),
        "sourceFile": maybe(text),
        "isDoNotDisturbEnabled": maybe(st.booleans()),
        "metadata": maybe(json_objects),
        "source": maybe(st.fixed_dictionaries({"method": st.sampled_from(["api", "csv"])})),
    },
)

conversations = st.fixed_dictionaries(
    {
        "id": ids,
        "phoneId": maybe(ids),
        "agentId": ids,
        "workspaceId": ids,
        "customerId": maybe(ids),
        "conversationStatus": enum_or_other([s.value for s in ConversationStatus]),
        "telephonyStatus": maybe(enum_or_other(["dialing", "active", "completed"])),
        "recordingStatus": maybe(enum_or_other([s.value for s in RecordingStatus])),
        "conversationType": enum_or_other([s.value for s in ConversationType]),
    },
    optional={
        "wsUrl": maybe(text),
        "llmUrl": maybe(text),
        "callStartTime": maybe(timestamps),
        "callEndTime": maybe(timestamps),
        "userJoinTime": maybe(timestamps),
        "userLeaveTime": maybe(timestamps),
        "customer": maybe(customers),
        "toPhoneNumber": maybe(text),
        "fromPhoneNumber": maybe(text),
        "telephonyType": maybe(enum_or_other([s.value for s in TelephonyType])),
        "endReason": maybe(enum_or_other([s.value for s in EndReason])),
        "postCallNotes": maybe(text),
        "postCallCategory1": maybe(text),
        "postCallCategory2": maybe(text),
        "postCallCategory3": maybe(text),
        "postCallMetadata": maybe(json_objects),
        "dynamicVariables": maybe(json_objects.map(json.dumps)),
        "summary": maybe(text),
        "campaignId": maybe(ids),
        "campaignRunId": maybe(ids),
        "createdAt": maybe(timestamps),
        "updatedAt": maybe(timestamps),
        "flowId": maybe(ids),
        "agentJoinTime": maybe(timestamps),
        "transferEndTime": maybe(timestamps),
        "transferStatus": maybe(text),
        "recordingUrl": maybe(text),
        "transcript": maybe(text),
        "futureField": json_objects,
    },
)

events = st.fixed_dictionaries(
    {
        "eventId": ids,
        "eventType": st.sampled_from(
            [
                "conversation.userJoined",
                "conversation.userLeft",
                "conversation.completed",
                "conversation.analysisCompleted",
            ]
        ),
        "payload": conversations,
    }
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_random_valid_events_round_trip(doc: dict[str, Any]) -> None:
    """Any valid event re-serialises to an equal document, from a dict and from JSON."""
    assert event_from_dict(doc).to_wire() == doc
    parsed = parse_event(json.dumps(doc).encode())
    assert json.loads(parsed.to_json()) == doc


@settings(max_examples=100, deadline=None)
@given(events, st.integers(-14 * 60, 14 * 60))
def test_offsets_normalise_to_the_same_instant(doc: dict[str, Any], minutes: int) -> None:
    """A timestamp written with any UTC offset parses to the same instant."""
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    local = stamp.astimezone(timezone(timedelta(minutes=minutes)))
    doc["payload"]["callStartTime"] = local.isoformat()
    out = event_from_dict(doc).to_wire()
    assert out["payload"]["callStartTime"] == "2024-05-06T07:08:09.123Z"
