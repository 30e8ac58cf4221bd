"""Checking a webhook body against the event catalogue without building models.

A receiver must refuse a body that fails the schema before acknowledging it, but it does not
need the typed event until a handler runs. Building the pydantic models costs ~25 µs per
event in isolation and twice that inside a loaded server; the msgspec decoders here check the
same rules in ~4 µs. They are generated from the pydantic models in :mod:`convhook.events`,
so the catalogue is written once.

The pydantic models stay the authority: anything the fast check refuses is parsed again by
:func:`~convhook.events.parse_event`, which either accepts it (pydantic is more lenient with
numbers, timestamps and snake_case keys) or raises the error that names each field. The fast
check must therefore never accept what the models refuse. Where msgspec alone is more
lenient, the check closes the gap itself: bodies with keys the models do not name go the slow
way (msgspec would skip their values unchecked: invalid UTF-8, numbers that overflow), as do
bodies with many brackets (pydantic-core refuses JSON nested ~200 deep, msgspec ~1,000), bodies
that are not valid UTF-8, and times that leave years 1-9999 once moved to UTC (msgspec keeps
the offset it read). ``tests/unit/test_wirecheck.py`` holds that
property against generated documents.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, NamedTuple

import msgspec
from annotated_types import MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from convhook.errors import FieldProblem, PayloadTooLarge
from convhook.events import (
    DEFAULT_MAX_BODY,
    EVENT_CLASSES,
    MAX_EVENT_ID,
    AnyEvent,
    Conversation,
    ConversationEvent,
    parse_event,
)

# pydantic-core refuses JSON nested ~200 deep while msgspec goes to ~1,000. A body with fewer
# opening brackets than this cannot be nested that deep; real events have about five.
_MAX_BRACKETS = 64
# Python-level validators the models run; each needs its counterpart below.
_KNOWN_VALIDATORS: dict[type[BaseModel], set[str]] = {Conversation: {"_encode_dynamic_variables"}}
_OVERRIDES: dict[str, Any] = {"dynamicVariables": str | dict[str, Any] | None}


class Checked(NamedTuple):
    """What the receiver needs from a valid body before its handlers run (a tuple: one
    is built per accepted request, and a frozen dataclass costs more to build)."""

    event_id: str
    event_type: str
    conversation_id: str | None = None
    """``payload.id`` of a conversation event (the receiver orders by it); None otherwise."""


def check_event(body: bytes, *, max_bytes: int = DEFAULT_MAX_BODY) -> Checked:
    """Check ``body`` as :func:`~convhook.events.parse_event` would, without building it.

    Raises the same :class:`~convhook.errors.PayloadError` for a bad body.
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            f"body is {len(body)} bytes, over the {max_bytes}-byte limit",
            [FieldProblem("body", f"larger than {max_bytes} bytes")],
        )
    checked = fast_check(body)
    if checked is None:
        # Unknown event types, lenient spellings and every error: the models decide.
        checked = checked_of(parse_event(body, max_bytes=max_bytes))
    return checked


def checked_of(event: AnyEvent) -> Checked:
    """What :func:`check_event` tells of an event the models built (a conversation event of a
    type this version does not know keeps its payload's ``id`` too, if it has one)."""
    payload = event.payload
    if isinstance(event, ConversationEvent):
        conversation: str | None = event.payload.id
    elif event.event_type.startswith("conversation.") and isinstance(payload, dict):
        found = payload.get("id")
        conversation = found if isinstance(found, str) else None
    else:
        conversation = None
    return Checked(event.event_id, event.event_type, conversation)


def fast_check(body: bytes) -> Checked | None:
    """The identifiers of a body of a known event type that is valid as it is strictly
    spelt; None when the models must decide (which they may still accept)."""
    if body.count(b"{") + body.count(b"[") >= _MAX_BRACKETS:
        return None
    if not body.isascii() and not _utf8(body):
        # msgspec skips the values of unknown keys without checking their UTF-8.
        return None
    try:
        envelope = _DECODER.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    payload = envelope.payload
    if envelope.eventType not in EVENT_CLASSES or not _variables_ok(payload):
        return None
    if not _times_ok(payload, _TIMES[Conversation]):
        return None
    return Checked(envelope.eventId, envelope.eventType, payload.id)


class _Times(NamedTuple):
    """Where a struct holds timestamps: its own datetime fields and its nested structs."""

    fields: tuple[str, ...]
    nested: tuple[tuple[str, _Times], ...]


def _times_ok(struct: Any, times: _Times) -> bool:
    """False if a timestamp leaves years 1-9999 when moved to UTC, which the models refuse.

    msgspec keeps the offset it read, so only the two boundary years can be affected; the
    check costs a getattr per timestamp field.
    """
    for name in times.fields:
        value = getattr(struct, name)
        if value is not None and value.year in (1, 9999) and value.utcoffset():
            try:
                value.astimezone(UTC)
            except OverflowError:
                return False
    for name, inner in times.nested:
        value = getattr(struct, name)
        if value is not None and not _times_ok(value, inner):
            return False
    return True


def _times_of(model: type[BaseModel]) -> _Times:
    fields: list[str] = []
    nested: list[tuple[str, _Times]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        for kind in _leaves(info.annotation):
            if kind is datetime:
                fields.append(key)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                inner = _times_of(kind)
                if inner.fields or inner.nested:
                    nested.append((key, inner))
    return _Times(tuple(fields), tuple(nested))


def _leaves(kind: Any) -> list[Any]:
    """The types a field annotation may hold, through Annotated and unions."""
    origin = typing.get_origin(kind)
    if origin is Annotated:
        return _leaves(typing.get_args(kind)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [leaf for arg in typing.get_args(kind) for leaf in _leaves(arg)]
    return [kind]


def _utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _variables_ok(payload: Any) -> bool:
    value = payload.dynamicVariables
    if not isinstance(value, str):
        return True
    try:
        # msgspec refuses NaN, Infinity and numbers that overflow, as the models do.
        return isinstance(_VARIABLES.decode(value), dict)
    except (msgspec.DecodeError, RecursionError):
        return False


def _struct(model: type[BaseModel], cache: dict[type[BaseModel], Any]) -> Any:
    """A msgspec Struct with the model's wire keys, types and required fields."""
    if model in cache:
        return cache[model]
    decorators = model.__pydantic_decorators__
    validators = set(decorators.field_validators) | set(decorators.model_validators)
    if validators - _KNOWN_VALIDATORS.get(model, set()):
        raise TypeError(f"{model.__name__} has validators the fast check does not mirror")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        kind = _OVERRIDES.get(key) if model is Conversation else None
        kind = kind or _field_type(info, cache)
        fields.append((key, kind) if info.is_required() else (key, kind, None))
    struct = msgspec.defstruct(
        f"Fast{model.__name__}", fields, kw_only=True, forbid_unknown_fields=True
    )
    cache[model] = struct
    return struct


def _field_type(info: FieldInfo, cache: dict[type[BaseModel], Any]) -> Any:
    kind = _convert(info.annotation, cache)
    return _constrain(kind, info.metadata)


def _constrain(kind: Any, metadata: list[Any]) -> Any:
    low = next((m.min_length for m in metadata if isinstance(m, MinLen)), None)
    high = next((m.max_length for m in metadata if isinstance(m, MaxLen)), None)
    if low is None and high is None:
        return kind
    return Annotated[kind, msgspec.Meta(min_length=low, max_length=high)]


def _convert(kind: Any, cache: dict[type[BaseModel], Any]) -> Any:
    origin = typing.get_origin(kind)
    if origin is Annotated:
        base, *metadata = typing.get_args(kind)
        flat = [m for item in metadata for m in _field_metadata(item)]
        return _constrain(_convert(base, cache), flat)
    if origin is typing.Union or origin is types.UnionType:
        members = [_convert(arg, cache) for arg in typing.get_args(kind)]
        # A lenient enumeration (Enum | str) takes any string.
        members = [m for m in members if not (isinstance(m, type) and issubclass(m, Enum))]
        return typing.Union[tuple(members)]  # noqa: UP007 - built from a runtime tuple
    if origin is dict:
        return dict[str, Any]
    if kind in (str, int, bool, datetime, types.NoneType) or kind is Any:
        return kind
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return _struct(kind, cache)
    raise TypeError(f"the fast check has no msgspec type for {kind!r}")


def _field_metadata(item: Any) -> list[Any]:
    return list(item.metadata) if isinstance(item, FieldInfo) else [item]


def _envelope() -> Any:
    cache: dict[type[BaseModel], Any] = {}
    fields = [
        ("eventId", Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]),
        ("eventType", Annotated[str, msgspec.Meta(min_length=1)]),
        ("payload", _struct(Conversation, cache)),
    ]
    return msgspec.defstruct("FastEvent", fields, kw_only=True, forbid_unknown_fields=True)


_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_envelope())
_VARIABLES: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_TIMES = {Conversation: _times_of(Conversation)}
