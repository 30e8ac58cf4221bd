"""Realistic sample events for every catalogue entry: fresh ids and times, or fixed ones.

``convhook trigger`` sends these, the shipped fixtures are made from them, and tests use them as
factories. A sample is the conversation as it stands right after its event, so the four
samples of one conversation replay its lifecycle.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from convhook.errors import PayloadError
from convhook.events import (
    AnyEvent,
    Conversation,
    EventType,
    event_from_dict,
)
from convhook.ids import new_id
from convhook.timefmt import utcnow

_NAMES = ["John Doe", "Amara Okafor", "Lena Fischer", "Kenji Sato", "Priya Raman", "Diego Ruiz"]
_TRANSCRIPT = [
    "Agent: Hello, this is Ava from Northwind Dental. Am I speaking with {first}?",
    "User: Yes, speaking.",
    "Agent: I'm calling to confirm your cleaning appointment on Thursday at 10am.",
    "User: Thursday works, thanks. Can you send me a reminder by text?",
    "Agent: Of course, you'll get a text the day before. Anything else I can help with?",
    "User: No, that's all. Bye.",
]


def sample_conversation(
    event_type: str | EventType,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
    fixed_ids: bool = False,
) -> Conversation:
    """The conversation as it stands right after ``event_type``.

    With ``fixed_ids`` the ids are the seed example's, for stable fixtures.
    """
    kind = EventType(event_type)
    rng = rng or random.Random()
    now = now or utcnow()
    ids = _ids(fixed_ids)
    name = rng.choice(_NAMES)
    first = name.split()[0]
    start = now - timedelta(
        seconds={"userJoined": 0, "userLeft": 95, "completed": 96}.get(
            kind.value.split(".")[1], 130
        )
    )
    fields: dict[str, Any] = {
        "id": ids["conv"],
        "phoneId": ids["phone"],
        "agentId": ids["agent"],
        "workspaceId": ids["ws"],
        "wsUrl": f"wss://api.example.com/ws/{ids['conv']}",
        "llmUrl": f"https://api.example.com/llm/{ids['conv']}",
        "callStartTime": start,
        "userJoinTime": start,
        "customerId": ids["cust"],
        "customer": {
            "name": name,
            "id": ids["cust"],
            "createdAt": start - timedelta(days=30),
            "updatedAt": start - timedelta(days=30),
            "workspaceId": ids["ws"],
            "email": f"{first.lower()}@example.com",
            "phoneNumber": f"+1415555{rng.randrange(10_000):04d}",
            "identifier": first.lower(),
            "priority": 1,
            "sourceFile": None,
            "isDoNotDisturbEnabled": False,
            "metadata": {"custom_field": "value"},
        },
        "toPhoneNumber": f"+1415555{rng.randrange(10_000):04d}",
        "fromPhoneNumber": "+14155550100",
        "conversationStatus": "active",
        "telephonyType": "inbound",
        "telephonyStatus": "active",
        "recordingStatus": "in_progress",
        "conversationType": "telephony",
        "dynamicVariables": {"source": "website", "referrer": "google"},
        "summary": "",
        "createdAt": start,
        "updatedAt": start,
    }
    if kind is EventType.USER_JOINED:
        return Conversation.build(**fields)
    leave = start + timedelta(seconds=95)
    fields.update(userLeaveTime=leave, updatedAt=leave)
    if kind is EventType.USER_LEFT:
        return Conversation.build(**fields)
    end = leave + timedelta(seconds=1)
    fields.update(
        callEndTime=end,
        endReason="user_hangup",
        conversationStatus="completed",
        telephonyStatus="completed",
        recordingStatus="completed",
        recordingUrl=f"https://recordings.example.com/{ids['conv']}.mp3",
        updatedAt=end,
    )
    if kind is EventType.COMPLETED:
        return Conversation.build(**fields)
    analysed = end + timedelta(seconds=34)
    fields.update(
        summary=f"{first} confirmed the Thursday 10am cleaning and asked for a text reminder.",
        postCallNotes="Send an SMS reminder the day before the appointment.",
        postCallCategory1="appointment_confirmed",
        postCallCategory2="reminder_requested",
        postCallCategory3="positive",
        postCallMetadata={"sentiment": "positive", "appointmentConfirmed": True, "score": 0.92},
        transcript="\n".join(line.format(first=first) for line in _TRANSCRIPT),
        updatedAt=analysed,
    )
    return Conversation.build(**fields)


def sample_event(
    event_type: str | EventType,
    *,
    overrides: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
    fixed_ids: bool = False,
) -> AnyEvent:
    """A complete event of ``event_type``; ``overrides`` maps dotted payload paths to values."""
    conversation = sample_conversation(event_type, now=now, rng=rng, fixed_ids=fixed_ids)
    doc: dict[str, Any] = {
        "eventId": "evt_01234567890abcdef" if fixed_ids else new_id("evt"),
        "eventType": EventType(event_type).value,
        "payload": conversation.to_wire(),
    }
    for path, value in (overrides or {}).items():
        _set_path(doc, path, value)
    return event_from_dict(doc)


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``field=value`` from ``--set``: the value is JSON if it parses, else a string."""
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise PayloadError(f"--set expects field=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return path, value


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``payload.customer.name`` (or ``customer.name``: ``payload.`` is implied)."""
    parts = path.split(".")
    if parts[0] not in ("payload", "eventId", "eventType"):
        parts.insert(0, "payload")
    target: Any = doc
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def _ids(fixed: bool) -> dict[str, str]:
    if fixed:
        return {k: f"{k}_1234567890abcdef" for k in ("conv", "phone", "agent", "ws", "cust")}
    return {k: new_id(k) for k in ("conv", "phone", "agent", "ws", "cust")}
