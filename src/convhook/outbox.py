"""The transactional outbox: a conversation change and the events it emits commit together.

:meth:`Outbox.transition` hands the store a pure function that checks the lifecycle, builds the
conversation as it is after the change and its event in the exact wire form; the store runs it
and writes the row and the event in one write, so no event exists without its change and no
change without its event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from convhook import jsontext, tracing
from convhook.errors import EventTooLarge as EventTooLarge  # re-exported: its old home
from convhook.errors import UnsendableChange as UnsendableChange  # re-exported: its old home
from convhook.events import DEFAULT_MAX_BODY, Conversation, payload_error
from convhook.ids import new_id
from convhook.lifecycle import Action, apply, transition
from convhook.store.producer import (
    Change,
    ItemResult,
    NewConversation,
    NewEvent,
    ProducerStore,
    StoredConversation,
)
from convhook.timefmt import format_ts, utcnow
from convhook.tracing import TraceContext

log = logging.getLogger("convhook.outbox")

DEFAULT_MAX_ACTIVE = 20
MAX_EVENT_BYTES = DEFAULT_MAX_BODY
"""Largest event the outbox records: the size a receiver accepts by default. Every request
body is within the API's own limit, but a conversation gathers several of them."""
# What an event adds around its conversation, with the longest event type: a conversation
# must leave this much room under MAX_EVENT_BYTES to be created.
_ENVELOPE_BYTES = len('{"eventId":"","eventType":"conversation.analysisCompleted","payload":}') + 64


class Outbox:
    """Creates conversations and moves them through their lifecycle, recording each event."""

    def __init__(
        self,
        store: ProducerStore,
        *,
        max_active: int = DEFAULT_MAX_ACTIVE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.max_active = max_active
        self.clock = clock

    async def create(
        self, workspace_id: str, items: Sequence[tuple[dict[str, Any], bool]]
    ) -> list[ItemResult]:
        """Create conversations from ``(wire fields, ignoreDND)`` pairs; an item that cannot
        be created is reported with its problems and does not stop the others."""
        stamp = format_ts(self.clock())
        built: list[NewConversation] = []
        refused: dict[int, ItemResult] = {}
        for index, (given, ignore_dnd) in enumerate(items):
            fields = {
                "conversationType": "telephony",
                **given,
                "id": new_id("conv"),
                "workspaceId": workspace_id,
                "conversationStatus": "created",
                "createdAt": stamp,
                "updatedAt": stamp,
            }
            try:
                conversation = Conversation.build(**fields)
                conversation.check_emittable()
            except ValidationError as exc:
                refused[index] = ItemResult(index, problems=payload_error(exc).problems)
                continue
            wire = conversation.to_wire()
            size = len(jsontext.dumps(wire)) + _ENVELOPE_BYTES
            if size > MAX_EVENT_BYTES:
                # Every event would carry it: refused now rather than on its first move.
                refused[index] = ItemResult(
                    index, problems=EventTooLarge(size, MAX_EVENT_BYTES).problems
                )
                continue
            built.append(NewConversation(wire, ignore_dnd))
        stored = iter(await self.store.create_conversations(workspace_id, built) if built else [])
        results = []
        for index in range(len(items)):
            if index in refused:
                results.append(refused[index])
            else:
                result = next(stored)
                results.append(ItemResult(index, result.document, result.problems))
        return results

    async def transition(
        self,
        workspace_id: str,
        conversation_id: str,
        action: Action,
        given: dict[str, Any],
        *,
        trace: TraceContext | None = None,
        guard: Callable[[StoredConversation], None] | None = None,
    ) -> Change:
        """Apply ``action`` with the request's wire fields ``given``; raises
        :class:`~convhook.lifecycle.TransitionError` when the phase does not allow it.

        The change is recorded in a span under ``trace`` (else the current span, else a new
        trace) whose ``traceparent`` is stored with the event: every delivery attempt
        continues it.
        ``guard`` sees the conversation as it is inside the write, before the lifecycle does,
        and may raise to refuse: a decision made on an earlier read (the watchdog's) is
        checked again where no other change can interleave."""
        clock = self.clock
        traceparent = ""

        def change(current: StoredConversation) -> Change:
            if guard is not None:
                guard(current)
            move = transition(current.id, current.phase, action)
            fields = apply(move, current.fields, given, clock())
            # The stored fields are a complete Conversation.build() output already in wire
            # form and the request's fields were validated by its model, so validating the
            # merged dict (not rebuilding it) checks the result at a third of the cost.
            try:
                Conversation.model_validate(fields).check_emittable()
            except ValidationError as exc:
                # Only a row stored before today's intake checks can fail here.
                raise UnsendableChange(payload_error(exc)) from None
            text = jsontext.dumps(fields)
            events: tuple[NewEvent, ...] = ()
            if move.event is not None:
                event_id = new_id("evt")
                body = (
                    f'{{"eventId":"{event_id}","eventType":"{move.event.value}","payload":{text}}}'
                )
                if len(body) > MAX_EVENT_BYTES:  # ASCII: jsontext.dumps escapes the rest
                    raise EventTooLarge(len(body), MAX_EVENT_BYTES)
                events = (NewEvent(event_id, move.event.value, body, traceparent),)
            return Change(move.target, fields, text, events, move.takes_slot)

        attributes = {"convhook.conversation_id": conversation_id, "convhook.action": action.value}
        with tracing.span("record event", trace, kind="producer", attributes=attributes) as span:
            traceparent = span.header()
            result = await self.store.change_conversation(
                workspace_id, conversation_id, change, max_active=self.max_active
            )
        for event in result.events:
            log.info(
                "event recorded",
                extra={
                    "action": "event_recorded",
                    "event_id": event.id,
                    "event_type": event.event_type,
                    "conversation_id": conversation_id,
                    "workspace_id": workspace_id,
                },
            )
        return result
