"""``/api/v2/conversations``: create one or many, get one, list with filters."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import Field, StrictBool, ValidationError

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_outbox, get_store
from convhook.api.errors import ApiError, validation_problems
from convhook.api.fields import (
    MAX_BATCH,
    Id,
    Phone,
    RequestModel,
    Timestamp,
    batch_refused,
    item_error,
    validate_items,
)
from convhook.api.responses import (
    ConversationBatchResult,
    ConversationPage,
    Event,
    PrunedEvent,
    WireOut,
)
from convhook.errors import FieldProblem
from convhook.events import Conversation, ConversationStatus, ConversationType, TelephonyType
from convhook.outbox import Outbox
from convhook.store.producer import ProducerStore

router = APIRouter(prefix="/api/v2/conversations", tags=["conversations"])
Store = Annotated[ProducerStore, Depends(get_store)]
OutboxDep = Annotated[Outbox, Depends(get_outbox)]


class ConversationIn(RequestModel):
    """A conversation to create; it starts ``created`` and moves on through its transitions."""

    agent_id: Id
    phone_id: Id | None = None
    customer_id: Id | None = None
    conversation_type: ConversationType = ConversationType.TELEPHONY
    telephony_type: TelephonyType | None = None
    to_phone_number: Phone | None = None
    from_phone_number: Phone | None = None
    dynamic_variables: dict[str, Any] | None = None
    campaign_id: Id | None = None
    campaign_run_id: Id | None = None
    ignore_dnd: StrictBool = Field(False, alias="ignoreDND")
    """Create it even though the customer has do-not-disturb enabled."""


class ConversationBatch(RequestModel):
    """Several conversations in one request."""

    conversations: list[ConversationIn] = Field(max_length=MAX_BATCH)


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ConversationIn"},
                        {"$ref": "#/components/schemas/ConversationBatch"},
                    ]
                }
            }
        },
    }
}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status_code=status, media_type="application/json")


def _given(item: ConversationIn) -> tuple[dict[str, Any], bool]:
    fields = item.model_dump(mode="json", by_alias=True, exclude_unset=True)
    ignore = bool(fields.pop("ignoreDND", False))
    fields.setdefault("conversationType", item.conversation_type.value)
    return fields, ignore


@router.post(
    "",
    status_code=201,
    openapi_extra=_BODY_DOC,
    response_model=Conversation | ConversationBatchResult,
    responses={
        201: {"description": "The conversation, or `{results, errors}` for a batch."},
        200: {
            "model": ConversationBatchResult,
            "description": "An empty batch: nothing was created.",
        },
    },
)
async def create_conversations(
    workspace: CurrentWorkspace,
    outbox: OutboxDep,
    body: Annotated[dict[str, Any], Body()],
) -> Response:
    """Create one conversation, or many with ``{"conversations": [...]}``: each bad item is
    listed in ``errors`` with its index and field and the others are created."""
    if "conversations" not in body:
        try:
            item = ConversationIn.model_validate(body)
        except ValidationError as exc:
            problems = validation_problems(exc.errors(include_url=False), strip=0)
            text = "; ".join(f"{p.field}: {p.problem}" for p in problems)
            raise ApiError(422, f"request failed validation: {text}", problems) from None
        [result] = await outbox.create(workspace.id, [_given(item)])
        if result.problems:
            text = "; ".join(f"{p.field}: {p.problem}" for p in result.problems)
            raise ApiError(422, f"conversation refused: {text}", result.problems)
        return _json(result.document, 201)
    items = body["conversations"]
    extra = sorted(set(body) - {"conversations"})
    if not isinstance(items, list) or extra:
        raise _envelope_error(extra)
    good, errors = validate_items(ConversationIn, items, "conversations")
    created = await outbox.create(workspace.id, [_given(item) for _, item in good])
    results = []
    for (index, _), result in zip(good, created, strict=True):
        if result.document is not None:
            results.append(result.document)
        errors.extend(item_error(index, p) for p in result.problems)
    errors.sort(key=lambda e: e["index"])
    if errors and not results:
        raise batch_refused("conversations", errors)
    return _json({"results": results, "errors": errors}, 201 if results else 200)


def _envelope_error(extra: list[str]) -> ApiError:
    if extra:
        return ApiError(422, "unknown field", [FieldProblem(f, "unknown field") for f in extra])
    return ApiError(
        422, "conversations must be a list", [FieldProblem("conversations", "not a list")]
    )


@router.get("/{conversation_id}", response_model=Conversation)
async def get_conversation(
    conversation_id: str, workspace: CurrentWorkspace, store: Store
) -> Response:
    """One conversation with its customer embedded."""
    return _json(await store.get_conversation(workspace.id, conversation_id))


class SequencedEvent(WireOut):
    """One event of a conversation with its place in the conversation's sequence."""

    sequence: int = Field(ge=1, description="1 for the conversation's first event.")
    event_id: str
    event_type: str
    previous_event_id: str | None = Field(description="null for the first event.")
    created_at: str
    pruned: bool = Field(False, description="The retention job removed the payload.")
    event: Event | PrunedEvent = Field(description="Byte for byte what endpoints were sent.")


class ConversationEventPage(WireOut):
    """One page of a conversation's events, in sequence order."""

    data: list[SequencedEvent]
    next_after_sequence: int | None = Field(
        description="Pass as `afterSequence` for the next page; null on the last page."
    )


# Sequences are SQLite integers: a larger value would overflow the bound parameter.
_MAX_SEQUENCE = 2**53


@router.get(
    "/{conversation_id}/events",
    response_model=ConversationEventPage,
    responses={404: {"description": "No such conversation in this workspace."}},
)
async def conversation_events(
    conversation_id: str,
    workspace: CurrentWorkspace,
    store: Store,
    after_sequence: Annotated[
        int,
        Query(
            alias="afterSequence",
            ge=0,
            le=_MAX_SEQUENCE,
            description="Events with a greater sequence; 0 for the first.",
        ),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """A conversation's events in order (the ``convhook-sequence`` header of each delivery),
    so a receiver that missed one can fetch it: ``{"data": [{sequence, eventId, eventType,
    previousEventId, createdAt, event}], "nextAfterSequence": ...}``."""
    items, next_after = await store.conversation_events(
        workspace.id, conversation_id, after_sequence=after_sequence, limit=limit
    )
    tail = "null" if next_after is None else str(next_after)
    body = f'{{"data":[{",".join(items)}],"nextAfterSequence":{tail}}}'
    return Response(body, media_type="application/json")


def _ms(value: Timestamp | None) -> int | None:
    # Timestamp values are in UTC: a naive query value is UTC, not the server's local time.
    return None if value is None else int(value.timestamp() * 1000)


@router.get("", response_model=ConversationPage)
async def list_conversations(
    workspace: CurrentWorkspace,
    store: Store,
    status: ConversationStatus | None = None,
    agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    campaign_id: Annotated[str | None, Query(alias="campaignId")] = None,
    created_after: Annotated[
        Timestamp | None, Query(alias="createdAfter", description="Inclusive.")
    ] = None,
    created_before: Annotated[
        Timestamp | None, Query(alias="createdBefore", description="Exclusive.")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The workspace's conversations matching every filter, oldest first, paginated."""
    page = await store.list_conversations(
        workspace.id,
        status=status.value if status else None,
        agent_id=agent_id,
        customer_id=customer_id,
        campaign_id=campaign_id,
        created_after=_ms(created_after),
        created_before=_ms(created_before),
        cursor=cursor,
        limit=limit,
    )
    return Response(page.to_json(), media_type="application/json")
