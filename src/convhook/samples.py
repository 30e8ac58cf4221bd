"""Realistic sample events for every catalogue entry: fresh ids and times, or fixed ones.

``convhook trigger`` sends these, the shipped fixtures are made from them, and tests use them as
factories. A conversation event's sample is the conversation as it stands right after its
event, so the four samples of one conversation replay its lifecycle; an operational event's
is an endpoint (or a delivery to it) as convhook reports it.
"""

from __future__ import annotations

import difflib
import json
import random
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from convhook.errors import FieldProblem, PayloadError
from convhook.events import (
    OPERATIONAL_EVENT_CLASSES,
    AnyEvent,
    Conversation,
    DeliveryFailure,
    EndpointState,
    EventType,
    OperationalEventType,
    event_from_dict,
)
from convhook.ids import new_id
from convhook.timefmt import format_ts, utcnow

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
    event_type: str | EventType | OperationalEventType,
    *,
    overrides: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
    fixed_ids: bool = False,
) -> AnyEvent:
    """A complete event of ``event_type``; ``overrides`` maps dotted payload paths to values."""
    kind = catalogue_type(event_type)
    if isinstance(kind, OperationalEventType):
        payload = sample_operational(kind, now=now, rng=rng, fixed_ids=fixed_ids)
    else:
        payload = sample_conversation(kind, now=now, rng=rng, fixed_ids=fixed_ids).to_wire()
    doc: dict[str, Any] = {
        "eventId": "evt_01234567890abcdef" if fixed_ids else new_id("evt"),
        "eventType": kind.value,
        "payload": payload,
    }
    for path, value in (overrides or {}).items():
        _set_path(doc, path, value)
    return event_from_dict(doc)


def catalogue_type(event_type: str | EventType | OperationalEventType) -> Any:
    """``event_type`` as a member of :class:`EventType` or :class:`OperationalEventType`;
    ValueError naming it if it is in neither."""
    if isinstance(event_type, EventType | OperationalEventType):
        return event_type
    if event_type in OPERATIONAL_EVENT_CLASSES:
        return OperationalEventType(event_type)
    return EventType(event_type)


def subject_of(event: AnyEvent) -> str:
    """What an event is about, as convhook files it: the conversation's id, or for an
    operational event the endpoint's."""
    payload: Any = event.payload
    return str(payload.endpoint_id if hasattr(payload, "endpoint_id") else payload.id)


def sample_operational(
    event_type: OperationalEventType,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
    fixed_ids: bool = False,
) -> dict[str, Any]:
    """The wire payload of an operational event: the endpoint after the change it reports,
    or for ``delivery.failed`` the delivery whose retries ran out."""
    rng = rng or random.Random()
    now = now or utcnow()
    ids = _ids(fixed_ids)
    endpoint_id = "ep_1234567890abcdef" if fixed_ids else new_id("ep")
    url = "https://hooks.example.com/convhook"
    if event_type is OperationalEventType.DELIVERY_FAILED:
        return DeliveryFailure(
            delivery_id=f"dlv_{rng.randrange(1000, 100_000)}",
            event_id="evt_fedcba9876543210" if fixed_ids else new_id("evt"),
            event_type=EventType.COMPLETED.value,
            endpoint_id=endpoint_id,
            workspace_id=ids["ws"],
            url=url,
            conversation_id=ids["conv"],
            attempts=8,
            last_status_code=503,
            last_error=None,
            at=format_ts(now),
        ).to_wire()
    enabled = event_type is not OperationalEventType.ENDPOINT_DISABLED
    failing = {
        OperationalEventType.ENDPOINT_DISABLED: timedelta(hours=rng.randrange(2, 24)),
        OperationalEventType.ENDPOINT_RECOVERED: timedelta(minutes=rng.randrange(5, 120)),
    }.get(event_type)
    return EndpointState(
        endpoint_id=endpoint_id,
        workspace_id=ids["ws"],
        url=url,
        enabled=enabled,
        disabled_reason=None if enabled else "the receiver answered 410 Gone",
        failing_since=None if failing is None else format_ts(now - failing),
        at=format_ts(now),
    ).to_wire()


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


def check_override(
    path: str,
    value: Any,
    event_type: str | EventType | OperationalEventType = EventType.USER_JOINED,
) -> None:
    """Raise :class:`PayloadError` unless ``path`` names a field of the event (or a key below
    a free-form object such as ``postCallMetadata``) and ``value`` suits it: a catalogue value
    for an enumeration, known field names in an object given for a typed one.

    Types are left to the models, which :func:`sample_event` runs; this catches what they
    keep on purpose (unknown keys, unknown enumeration values), so a typo is not sent.
    """
    parts = _parts(path)
    node = _envelope(catalogue_type(event_type))
    for depth, part in enumerate(parts):
        if node.kind == "object":
            return
        if node.kind != "model":
            shown = _shown(parts[:depth])
            raise _refused(
                path,
                f"{shown} is a single value, not an object with fields: set {shown} itself",
            )
        if part not in node.fields:
            raise _unknown(path, parts[:depth], part, node)
        node = node.fields[part]
    _check_value(path, parts, node, value)


@dataclass(frozen=True)
class _Node:
    """What a field path leads to: a typed object, an enumeration, free-form JSON or a value."""

    kind: str  # "model", "enum", "object" or "value"
    nullable: bool = False
    fields: dict[str, _Node] = field(default_factory=dict)
    values: tuple[str, ...] = ()


def _model_node(model: type[BaseModel], nullable: bool = False) -> _Node:
    fields = {
        info.alias or name: _field_node(info.alias or name, info.annotation)
        for name, info in model.model_fields.items()
    }
    return _Node("model", nullable, fields)


def _field_node(alias: str, annotation: Any) -> _Node:
    leaves = _leaves(annotation)
    nullable = type(None) in leaves
    for leaf in leaves:
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            return _model_node(leaf, nullable)
        if isinstance(leaf, type) and issubclass(leaf, Enum):
            return _Node("enum", nullable, values=tuple(str(m.value) for m in leaf))
        if leaf is dict or get_origin(leaf) is dict:
            return _Node("object", nullable)
    # A JSON object carried as a string on the wire: its keys are the caller's own.
    if alias == "dynamicVariables":
        return _Node("object", nullable)
    return _Node("value", nullable)


def _leaves(annotation: Any) -> list[Any]:
    """The types an annotation allows, through ``Annotated``, ``Optional`` and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


_EVENT_TYPES = _Node("enum", values=tuple(t.value for t in [*EventType, *OperationalEventType]))
_ENVELOPE = _Node(
    "model",
    fields={
        "eventId": _Node("value"),
        "eventType": _EVENT_TYPES,
        "payload": _model_node(Conversation),
    },
)
_OPERATIONAL_ENVELOPES = {
    kind: _Node(
        "model",
        fields={
            "eventId": _Node("value"),
            "eventType": _EVENT_TYPES,
            "payload": _model_node(
                DeliveryFailure if kind is OperationalEventType.DELIVERY_FAILED else EndpointState
            ),
        },
    )
    for kind in OperationalEventType
}


def _envelope(kind: EventType | OperationalEventType) -> _Node:
    """The fields an event of ``kind`` has, for :func:`check_override`."""
    if isinstance(kind, OperationalEventType):
        return _OPERATIONAL_ENVELOPES[kind]
    return _ENVELOPE


def _check_value(path: str, parts: list[str], node: _Node, value: Any) -> None:
    if node.kind == "enum" and value not in node.values and not (value is None and node.nullable):
        allowed = ", ".join(node.values) + (", null" if node.nullable else "")
        raise _refused(
            path, f"{_clip(json.dumps(value))} is not a valid {_shown(parts)}; allowed: {allowed}"
        )
    if value is None:
        if node.kind == "model" and not node.nullable:
            raise _refused(path, f"{_shown(parts)} may not be null")
        return
    if node.kind == "model" and isinstance(value, dict):
        for key, item in value.items():
            if key not in node.fields:
                raise _unknown(path, parts, key, node)
            _check_value(path, [*parts, key], node.fields[key], item)


def _unknown(path: str, parts: list[str], name: str, node: _Node) -> PayloadError:
    if parts == ["payload"]:
        owner = "the conversation" if "agentId" in node.fields else "the payload"
    else:
        owner = _shown(parts)
    close = difflib.get_close_matches(name, node.fields, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return _refused(
        path,
        f'{owner} has no field "{_clip(name)}"{hint}; its fields: {", ".join(node.fields)}',
    )


def _refused(path: str, problem: str) -> PayloadError:
    return PayloadError(
        f"--set {_clip(path)}: {problem} (--force sends it anyway)",
        [FieldProblem(path, problem)],
    )


def _shown(parts: list[str]) -> str:
    """A path as the user writes it: without the implied ``payload.``."""
    shown = parts[1:] if parts[:1] == ["payload"] and len(parts) > 1 else parts
    return ".".join(shown)


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _parts(path: str) -> list[str]:
    """``customer.name`` as ``["payload", "customer", "name"]``: ``payload.`` is implied."""
    parts = path.split(".")
    if parts[0] not in ("payload", "eventId", "eventType"):
        parts.insert(0, "payload")
    return parts


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``payload.customer.name`` (or ``customer.name``: ``payload.`` is implied)."""
    parts = _parts(path)
    target: Any = doc
    for part in parts[:-1]:
        current = target.get(part)
        if isinstance(current, str) and current.startswith("{"):
            # dynamicVariables travels as a JSON string: a key set inside it joins the others.
            try:
                decoded = json.loads(current)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                target[part] = current = decoded
        if not isinstance(current, dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = value


def _ids(fixed: bool) -> dict[str, str]:
    if fixed:
        return {k: f"{k}_1234567890abcdef" for k in ("conv", "phone", "agent", "ws", "cust")}
    return {k: new_id(k) for k in ("conv", "phone", "agent", "ws", "cust")}
