"""Wire models of conversation events: the envelope, the conversation and its customer;
and of convhook's operational events (``endpoint.*``, ``delivery.failed``).

The wire format is the platform's: ``{"eventId", "eventType", "payload"}`` with the full
conversation object as the payload, camelCase keys, timestamps like
``2023-01-01T12:00:00.000Z`` and ``dynamicVariables`` as a JSON-encoded string.

Parsing is lenient so receivers survive a newer platform: unknown keys are kept and
round-trip, unknown enumeration values are kept as strings, an unknown ``eventType`` parses
as :class:`UnknownEvent`, and a key that was missing stays missing when re-serialised.
Emitting is strict: :meth:`Conversation.check_emittable` refuses unknown enumeration values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import from_json

from convhook.errors import FieldProblem, PayloadError, PayloadTooLarge
from convhook.jsonnumbers import may_hold_non_finite, non_finite_number
from convhook.timefmt import format_ts
from convhook.vocabulary import (
    ConversationStatus as ConversationStatus,
)
from convhook.vocabulary import (
    ConversationType as ConversationType,
)
from convhook.vocabulary import (
    EndReason as EndReason,
)
from convhook.vocabulary import (
    EventType as EventType,
)
from convhook.vocabulary import (
    OperationalEventType as OperationalEventType,
)
from convhook.vocabulary import (
    RecordingStatus as RecordingStatus,
)
from convhook.vocabulary import (
    TelephonyStatus as TelephonyStatus,
)
from convhook.vocabulary import (
    TelephonyType as TelephonyType,
)

DEFAULT_MAX_BODY = 1024 * 1024
MAX_EVENT_ID = 256
"""The longest ``eventId`` accepted: ids are logged, indexed and compared on every delivery."""


E = TypeVar("E", bound=StrEnum)


def _lenient(enum: type[E]) -> Any:
    """A type that takes a member of ``enum`` when it can and keeps any other string.

    Left-to-right union mode keeps the choice inside pydantic-core (no Python call per
    field), which matters on the receiver's hot path.
    """
    schema = {"type": "string", "enum": [m.value for m in enum]}
    return Annotated[enum | str, Field(union_mode="left_to_right"), WithJsonSchema(schema)]


def _utc(value: datetime) -> datetime:
    # A naive time is taken as UTC; an aware one is moved to UTC, so attributes always
    # compare and print the same way whatever offset the sender used. Most senders use "Z":
    # that case returns at once.
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    if offset:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # e.g. 0001-01-01T00:30:00+01:00: valid ISO-8601 whose UTC time is before year 1.
            raise ValueError("time is outside years 1-9999 once moved to UTC") from None
    return value


# Any ISO-8601 is accepted; output is always UTC with milliseconds and "Z".
Timestamp = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2023-01-01T12:00:00.000Z"]}
    ),
]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class WireModel(BaseModel):
    """Base of the wire models: camelCase keys, unknown keys kept, missing keys stay missing."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict, with exactly the keys this object was given."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self) -> bytes:
        """The compact JSON encoding of :meth:`to_wire`."""
        return self.model_dump_json(by_alias=True, exclude_unset=True).encode()


class CustomerSource(WireModel):
    """How a customer was created, e.g. ``{"method": "api"}``."""

    method: str | None = None


class Customer(WireModel):
    """The customer embedded in a conversation payload (fields in the seed's order)."""

    name: str | None = None
    id: NonEmptyStr
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    workspace_id: NonEmptyStr
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    priority: int | None = None
    source_file: str | None = None
    is_do_not_disturb_enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    # Newer platform field; emitted only when it has a value.
    source: CustomerSource | None = None


SEED_CUSTOMER_FIELDS: tuple[str, ...] = tuple(
    f.alias or n for n, f in Customer.model_fields.items() if n != "source"
)


class Conversation(WireModel):
    """The full conversation object carried as every event's payload."""

    id: NonEmptyStr
    phone_id: str | None
    agent_id: NonEmptyStr
    workspace_id: NonEmptyStr
    ws_url: str | None = None
    llm_url: str | None = None
    call_start_time: Timestamp | None = None
    call_end_time: Timestamp | None = None
    user_join_time: Timestamp | None = None
    user_leave_time: Timestamp | None = None
    customer_id: str | None
    customer: Customer | None = None
    to_phone_number: str | None = None
    from_phone_number: str | None = None
    conversation_status: _lenient(ConversationStatus)  # type: ignore[valid-type]
    telephony_type: _lenient(TelephonyType) | None = None  # type: ignore[valid-type]
    telephony_status: _lenient(TelephonyStatus) | None  # type: ignore[valid-type]
    end_reason: _lenient(EndReason) | None = None  # type: ignore[valid-type]
    recording_status: _lenient(RecordingStatus) | None  # type: ignore[valid-type]
    post_call_notes: str | None = None
    post_call_category1: str | None = None
    post_call_category2: str | None = None
    post_call_category3: str | None = None
    post_call_metadata: dict[str, Any] | None = None
    conversation_type: _lenient(ConversationType)  # type: ignore[valid-type]
    dynamic_variables: str | None = None
    summary: str | None = None
    campaign_id: str | None = None
    campaign_run_id: str | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    # Newer platform fields: typed when present, emitted only when they have a value.
    flow_id: str | None = None
    agent_join_time: Timestamp | None = None
    agent_leave_time: Timestamp | None = None
    transfer_start_time: Timestamp | None = None
    transfer_end_time: Timestamp | None = None
    transfer_user_join_time: Timestamp | None = None
    transfer_user_leave_time: Timestamp | None = None
    transfer_status: str | None = None
    transfer_destination: str | None = None
    recording_url: str | None = None
    transcript: str | None = None

    @field_validator("dynamic_variables", mode="before")
    @classmethod
    def _encode_dynamic_variables(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return json.dumps(dict(value), separators=(", ", ": "))
        if isinstance(value, str):
            try:
                decoded = from_json(value)
            except ValueError as exc:
                raise ValueError(f"dynamicVariables is not valid JSON: {exc}") from None
            if not isinstance(decoded, dict):
                raise ValueError("dynamicVariables must encode a JSON object")
            number = non_finite_number(value) if may_hold_non_finite(value) else None
            if number is not None:
                raise ValueError(f"dynamicVariables holds {number}, which is not a finite number")
        return value

    @property
    def variables(self) -> dict[str, Any]:
        """``dynamicVariables`` decoded: the dict the wire carries as a JSON string."""
        if not self.dynamic_variables:
            return {}
        decoded: dict[str, Any] = json.loads(self.dynamic_variables)
        return decoded

    @classmethod
    def build(cls, **fields: Any) -> Conversation:
        """A conversation to emit: every seed field present (``None`` when not given) and
        newer fields only when they have a value. Keys may be snake_case or camelCase."""
        given = {_snake(k): v for k, v in fields.items()}
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            if name in given:
                value = given.pop(name)
                if name in SEED_FIELD_NAMES or value is not None:
                    data[name] = value
            elif name in SEED_FIELD_NAMES:
                data[name] = "" if name == "summary" else None
        if given:
            raise TypeError(f"unknown conversation fields: {', '.join(sorted(given))}")
        customer = data.get("customer")
        if isinstance(customer, Mapping):
            data["customer"] = build_customer(**customer)
        return cls.model_validate(data)

    def check_emittable(self) -> None:
        """Raise :class:`PayloadError` if an enumeration holds a value outside the catalogue."""
        problems = [
            FieldProblem(_camel(name), f"{value!r} is not one of {_enum_values(name)}")
            for name in _ENUM_FIELDS
            if isinstance(value := getattr(self, name), str) and not isinstance(value, Enum)
        ]
        if problems:
            raise PayloadError("conversation has values outside the event catalogue", problems)


_ENUM_FIELDS = (
    "conversation_status",
    "telephony_type",
    "telephony_status",
    "end_reason",
    "recording_status",
    "conversation_type",
)
_ENUMS: dict[str, type[StrEnum]] = {
    "conversation_status": ConversationStatus,
    "telephony_type": TelephonyType,
    "telephony_status": TelephonyStatus,
    "end_reason": EndReason,
    "recording_status": RecordingStatus,
    "conversation_type": ConversationType,
}
NEWER_FIELD_NAMES = frozenset(
    {
        "flow_id",
        "agent_join_time",
        "agent_leave_time",
        "transfer_start_time",
        "transfer_end_time",
        "transfer_user_join_time",
        "transfer_user_leave_time",
        "transfer_status",
        "transfer_destination",
        "recording_url",
        "transcript",
    }
)
SEED_FIELD_NAMES = frozenset(n for n in Conversation.model_fields if n not in NEWER_FIELD_NAMES)
SEED_FIELDS: tuple[str, ...] = tuple(
    f.alias or n for n, f in Conversation.model_fields.items() if n in SEED_FIELD_NAMES
)


def _enum_values(name: str) -> str:
    return ", ".join(m.value for m in _ENUMS[name])


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _camel(name: str) -> str:
    return to_camel(name)


def build_customer(**fields: Any) -> Customer:
    """A customer to emit: every seed field present, ``source`` only when given."""
    given = {_snake(k): v for k, v in fields.items()}
    data = {n: given.pop(n, None) for n in Customer.model_fields if n != "source"}
    if given.get("source") is not None:
        data["source"] = given.pop("source")
    given.pop("source", None)
    if given:
        raise TypeError(f"unknown customer fields: {', '.join(sorted(given))}")
    return Customer.model_validate(data)


class BaseEvent(WireModel):
    """The envelope every webhook body has."""

    event_id: Annotated[str, Field(min_length=1, max_length=MAX_EVENT_ID)]
    event_type: NonEmptyStr


class ConversationEvent(BaseEvent):
    """A known conversation lifecycle event; ``payload`` is the full conversation."""

    payload: Conversation


class UserJoined(ConversationEvent):
    """Triggered when a user joins a conversation."""

    event_type: Literal["conversation.userJoined"] = "conversation.userJoined"


class UserLeft(ConversationEvent):
    """Triggered when the user leaves a conversation."""

    event_type: Literal["conversation.userLeft"] = "conversation.userLeft"


class Completed(ConversationEvent):
    """Triggered when a conversation has ended."""

    event_type: Literal["conversation.completed"] = "conversation.completed"


class AnalysisCompleted(ConversationEvent):
    """Triggered when post-call analysis of a conversation is done."""

    event_type: Literal["conversation.analysisCompleted"] = "conversation.analysisCompleted"


class EndpointState(WireModel):
    """The payload of an ``endpoint.*`` event: the endpoint as it stands after the change."""

    endpoint_id: NonEmptyStr
    workspace_id: NonEmptyStr
    url: str
    enabled: bool
    disabled_reason: str | None
    failing_since: Timestamp | None
    """When the failures began: for ``endpoint.recovered`` the failures just ended, for
    ``endpoint.disabled`` those that led to it (null when none)."""
    at: Timestamp
    """When the change happened."""


class DeliveryFailure(WireModel):
    """The payload of ``delivery.failed``: which delivery of which event failed, and how."""

    delivery_id: NonEmptyStr
    event_id: NonEmptyStr
    event_type: NonEmptyStr
    endpoint_id: NonEmptyStr
    workspace_id: NonEmptyStr
    url: str
    conversation_id: NonEmptyStr
    attempts: int
    last_status_code: int | None
    last_error: str | None
    at: Timestamp
    """When the last attempt ended."""


class OperationalEvent(BaseEvent):
    """A known operational event: its subject is an endpoint, not a conversation."""


class EndpointEvent(OperationalEvent):
    """An event about an endpoint's state; ``payload`` is the endpoint after the change."""

    payload: EndpointState


class EndpointDisabled(EndpointEvent):
    """Triggered when an endpoint stops receiving: a 410, failures for too long, or a request."""

    event_type: Literal["endpoint.disabled"] = "endpoint.disabled"


class EndpointEnabled(EndpointEvent):
    """Triggered when a disabled endpoint is enabled again."""

    event_type: Literal["endpoint.enabled"] = "endpoint.enabled"


class EndpointRecovered(EndpointEvent):
    """Triggered when a failing endpoint takes a delivery again."""

    event_type: Literal["endpoint.recovered"] = "endpoint.recovered"


class DeliveryFailed(OperationalEvent):
    """Triggered when a delivery of a conversation event ends failed."""

    event_type: Literal["delivery.failed"] = "delivery.failed"
    payload: DeliveryFailure


class UnknownEvent(BaseEvent):
    """An event type this version does not know; the payload is kept as it came."""

    payload: Any = None


EVENT_CLASSES: dict[str, type[ConversationEvent]] = {
    EventType.USER_JOINED.value: UserJoined,
    EventType.USER_LEFT.value: UserLeft,
    EventType.COMPLETED.value: Completed,
    EventType.ANALYSIS_COMPLETED.value: AnalysisCompleted,
}
"""The conversation events: their payload is a :class:`Conversation`."""
OPERATIONAL_EVENT_CLASSES: dict[str, type[OperationalEvent]] = {
    OperationalEventType.ENDPOINT_DISABLED.value: EndpointDisabled,
    OperationalEventType.ENDPOINT_ENABLED.value: EndpointEnabled,
    OperationalEventType.ENDPOINT_RECOVERED.value: EndpointRecovered,
    OperationalEventType.DELIVERY_FAILED.value: DeliveryFailed,
}
"""convhook's operational events, kept apart: code that reads a conversation from every
event of :data:`EVENT_CLASSES` is not handed one of these."""
KNOWN_EVENT_TYPES = frozenset(EVENT_CLASSES) | frozenset(OPERATIONAL_EVENT_CLASSES)
CatalogueEventType = EventType | OperationalEventType
"""Any event type of the catalogue, as API fields and query parameters take them."""


def _event_tag(value: Any) -> str:
    event_type = (
        value.get("eventType") if isinstance(value, dict) else getattr(value, "event_type", None)
    )
    # Checked as a string first: a list or object there is a schema error, not a crash.
    if isinstance(event_type, str) and event_type in KNOWN_EVENT_TYPES:
        return event_type
    return "unknown"


Event = Annotated[
    Annotated[UserJoined, Tag(EventType.USER_JOINED.value)]
    | Annotated[UserLeft, Tag(EventType.USER_LEFT.value)]
    | Annotated[Completed, Tag(EventType.COMPLETED.value)]
    | Annotated[AnalysisCompleted, Tag(EventType.ANALYSIS_COMPLETED.value)]
    | Annotated[EndpointDisabled, Tag(OperationalEventType.ENDPOINT_DISABLED.value)]
    | Annotated[EndpointEnabled, Tag(OperationalEventType.ENDPOINT_ENABLED.value)]
    | Annotated[EndpointRecovered, Tag(OperationalEventType.ENDPOINT_RECOVERED.value)]
    | Annotated[DeliveryFailed, Tag(OperationalEventType.DELIVERY_FAILED.value)]
    | Annotated[UnknownEvent, Tag("unknown")],
    Discriminator(_event_tag),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
AnyEvent = (
    UserJoined
    | UserLeft
    | Completed
    | AnalysisCompleted
    | EndpointDisabled
    | EndpointEnabled
    | EndpointRecovered
    | DeliveryFailed
    | UnknownEvent
)


def parse_event(body: bytes | str, *, max_bytes: int = DEFAULT_MAX_BODY) -> AnyEvent:
    """Parse a webhook body, raising :class:`PayloadError` that names each bad field."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"body is {len(body)} bytes, over the {max_bytes}-byte limit",
            [FieldProblem("body", f"larger than {max_bytes} bytes")],
        )
    event = _validate(lambda: _EVENT_ADAPTER.validate_json(body))
    _refuse_non_finite(body)
    return event


def _refuse_non_finite(body: bytes | str) -> None:
    """Refuse what pydantic-core accepts beyond RFC 8259 or reads as infinity: ``NaN`` and
    ``Infinity`` tokens and numbers that overflow a float (``1e400``). A cheap byte test
    decides whether the body is parsed again to look."""
    if may_hold_non_finite(body):
        number = non_finite_number(body)
        if number is not None:
            raise PayloadError(
                "body holds a number that is not finite: JSON (RFC 8259) has no NaN or "
                "Infinity, and a float cannot hold it",
                [FieldProblem("body", f"{number} is not a finite number")],
            )


def event_from_dict(data: Mapping[str, Any]) -> AnyEvent:
    """Validate an already-decoded event document."""
    return _validate(lambda: _EVENT_ADAPTER.validate_python(dict(data)))


def _validate(run: Callable[[], AnyEvent]) -> AnyEvent:
    try:
        return run()
    except ValidationError as exc:
        raise payload_error(exc) from None


def _is_tag(part: object) -> bool:
    """Union member tags in an error location (event classes, ``str-enum[...]``) are not
    fields; dropping them leaves the path a sender can act on."""
    if not isinstance(part, str):
        return False
    return part in KNOWN_EVENT_TYPES or part in ("unknown", "str") or "[" in part


def payload_error(exc: ValidationError) -> PayloadError:
    """Turn pydantic's errors into a :class:`PayloadError` with one problem per field."""
    problems: list[FieldProblem] = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return PayloadError("body is not valid JSON", [FieldProblem("body", err["msg"])])
        loc = [str(p) for p in err["loc"] if not _is_tag(p)]
        message = err["msg"].removeprefix("Value error, ")
        field = ".".join(loc) or "body"
        # A lenient enum reports once per union member; the last (plain string) reads best.
        problems = [p for p in problems if p.field != field]
        problems.append(FieldProblem(field, message))
    return PayloadError(
        "event failed validation: " + "; ".join(f"{p.field}: {p.problem}" for p in problems),
        problems,
    )
