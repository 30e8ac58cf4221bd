"""What the live stream sends: message positions, their frames, the two kinds of message
built from log rows, their merge in time order and the per-subscriber filter."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple

from convhook.api.responses import delivery_id
from convhook.store.delivery.log import StreamAttempt
from convhook.store.producer.event_log import StreamEvent
from convhook.timefmt import format_ms

POSITION_PATTERN = r"^[0-9]{1,18}\.[0-9]{1,18}$"
"""A message id, as ``Last-Event-ID`` takes it."""
_POSITION = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})\Z")


class Position(NamedTuple):
    """Where a stream stands on the event log and on the attempt log."""

    seq: int
    attempt: int

    def __str__(self) -> str:
        return f"{self.seq}.{self.attempt}"


def parse_position(text: str) -> Position | None:
    """The position a message id names, None when ``text`` is not one."""
    found = _POSITION.match(text)
    return Position(int(found[1]), int(found[2])) if found else None


@dataclass(frozen=True)
class Message:
    """One message of the stream, rendered once for every subscriber it goes to."""

    kind: Literal["event", "attempt"]
    position: Position
    workspace_id: str
    event_type: str
    conversation_id: str | None
    endpoint_id: str | None
    frame: bytes


def _ts(ms: int) -> str:
    return format_ms(ms)


def _frame(kind: str, position: Position, data: str) -> bytes:
    return f"id: {position}\nevent: {kind}\ndata: {data}\n\n".encode()


def event_message(row: StreamEvent, position: Position) -> Message:
    """The ``event`` message of an outbox row; its body is passed through as stored."""
    body = row.body
    if body is None:
        body = "null"
    elif "\n" in body or "\r" in body:
        # A data line ends at a line break: only whitespace between tokens can hold one.
        body = json.dumps(json.loads(body), separators=(",", ":"))
    head = json.dumps(
        {
            "eventId": row.id,
            "eventType": row.event_type,
            "conversationId": row.conversation_id,
            "sequence": row.conversation_seq,
            "createdAt": _ts(row.created_at),
        },
        separators=(",", ":"),
    )
    data = f'{head[:-1]},"event":{body}}}'
    return Message(
        "event",
        position,
        row.workspace_id,
        row.event_type,
        row.conversation_id,
        None,
        _frame("event", position, data),
    )


def outcome(row: StreamAttempt) -> str:
    """What the attempt led to: ``delivered``, ``gone`` (410: the endpoint is disabled),
    ``failed`` (the delivery's last attempt, retries spent) or ``retry``."""
    if row.status_code is not None and 200 <= row.status_code < 300:
        return "delivered"
    if row.status_code == 410:
        return "gone"
    if row.last and row.delivery_status == "failed":
        return "failed"
    return "retry"


def attempt_message(row: StreamAttempt, position: Position) -> Message:
    """The ``attempt`` message of a recorded attempt."""
    # A test event is filed under its own id as the conversation (see delivery_doc).
    conversation = None if row.conversation_id == row.event_id else row.conversation_id
    data = json.dumps(
        {
            "deliveryId": delivery_id(row.delivery_id),
            "eventId": row.event_id,
            "eventType": row.event_type,
            "endpointId": row.endpoint_id,
            "conversationId": conversation,
            "attempt": row.number,
            "attemptedAt": _ts(row.attempted_at),
            "statusCode": row.status_code,
            "latencyMs": row.latency_ms,
            "outcome": outcome(row),
            "error": row.error,
        },
        separators=(",", ":"),
    )
    return Message(
        "attempt",
        position,
        row.workspace_id,
        row.event_type,
        conversation,
        row.endpoint_id,
        _frame("attempt", position, data),
    )


def merge(
    events: list[StreamEvent], attempts: list[StreamAttempt], start: Position
) -> list[Message]:
    """Both logs' rows as messages in the order they were recorded (ties: events first),
    each log's rows kept in their own order."""
    found: list[Message] = []
    seq, attempt = start
    i = j = 0
    while i < len(events) or j < len(attempts):
        if j == len(attempts) or (
            i < len(events) and events[i].created_at <= attempts[j].attempted_at
        ):
            seq = events[i].seq
            found.append(event_message(events[i], Position(seq, attempt)))
            i += 1
        else:
            attempt = attempts[j].id
            found.append(attempt_message(attempts[j], Position(seq, attempt)))
            j += 1
    return found


@dataclass(frozen=True)
class Filter:
    """What one subscriber asked for; ``endpoint_id`` keeps that endpoint's attempts only."""

    workspace_id: str
    event_type: str | None = None
    conversation_id: str | None = None
    endpoint_id: str | None = None

    def matches(self, m: Message) -> bool:
        """Whether ``m`` goes to this subscriber."""
        return (
            m.workspace_id == self.workspace_id
            and (self.event_type is None or m.event_type == self.event_type)
            and (self.conversation_id is None or m.conversation_id == self.conversation_id)
            and (self.endpoint_id is None or m.endpoint_id == self.endpoint_id)
        )


PING = b": ping\n\n"
