"""`check_override`, the --set check of `convhook trigger`: which paths and values it takes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest

from convhook.errors import PayloadError
from convhook.events import (
    ConversationStatus,
    ConversationType,
    EndReason,
    EventType,
    RecordingStatus,
    TelephonyStatus,
    TelephonyType,
)
from convhook.samples import check_override, sample_event

ENUMS: list[tuple[str, type[StrEnum], bool]] = [
    ("conversationStatus", ConversationStatus, False),
    ("conversationType", ConversationType, False),
    ("telephonyType", TelephonyType, True),
    ("telephonyStatus", TelephonyStatus, True),
    ("endReason", EndReason, True),
    ("recordingStatus", RecordingStatus, True),
    ("eventType", EventType, False),
]


@pytest.mark.parametrize(("path", "enum", "nullable"), ENUMS)
def test_every_enumeration_takes_its_members_and_refuses_others(
    path: str, enum: type[StrEnum], nullable: bool
) -> None:
    """Each enumerated field takes every catalogue value (and null where the field is
    optional) and refuses anything else, listing the allowed values."""
    for member in enum:
        check_override(path, member.value)
    if nullable:
        check_override(path, None)
    bad: list[Any] = ["nope", 3] if nullable else ["nope", 3, None]
    for value in bad:
        with pytest.raises(PayloadError, match=f"allowed: {next(iter(enum)).value}") as info:
            check_override(path, value)
        assert info.value.field == path


@pytest.mark.parametrize(
    "path",
    [
        "summary",
        "payload.summary",
        "customer",
        "customer.source.method",
        "postCallMetadata.any.depth",
        "customer.metadata.tier",
        "dynamicVariables.campaign",
        "eventId",
        "transferDestination",
    ],
)
def test_known_paths_and_keys_below_free_form_objects_are_taken(path: str) -> None:
    """Fields of the conversation and its customer, with or without `payload.`, and any key
    below a free-form object pass."""
    check_override(path, "x" if path != "customer" else {"name": "x", "metadata": {"a": 1}})


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("customer.nmae", "x", 'customer has no field "nmae" (did you mean "name"?)'),
        ("payload.nmae", "x", 'the conversation has no field "nmae"'),
        ("customer.source.methd", "x", 'customer.source has no field "methd"'),
        ("summary.text", "x", "summary is a single value"),
        ("eventId.x", "x", "eventId is a single value"),
        ("customer", {"source": {"methd": "x"}}, 'customer.source has no field "methd"'),
        ("customer", {"priority": 1, "nmae": "x"}, 'customer has no field "nmae"'),
        ("payload", {"conversationStatus": "x"}, '"x" is not a valid conversationStatus'),
        ("payload", None, "payload may not be null"),
    ],
)
def test_unknown_paths_and_keys_are_refused_naming_them(
    path: str, value: Any, message: str
) -> None:
    """An unknown field (in the path or in an object value) is refused with the path, the
    allowed fields and the way to send it anyway."""
    with pytest.raises(PayloadError) as info:
        check_override(path, value)
    assert message in info.value.message
    assert info.value.message.startswith(f"--set {path}: ")
    assert info.value.message.endswith("(--force sends it anyway)")


def test_a_key_set_inside_dynamic_variables_joins_the_sample_keys() -> None:
    """dynamicVariables travels as a JSON string: a key set below it is added to the others."""
    event = sample_event(EventType.USER_JOINED, overrides={"dynamicVariables.campaign": "spring"})
    assert event.payload.variables == {
        "source": "website",
        "referrer": "google",
        "campaign": "spring",
    }
