"""``/api/v2/events``: the outbox, each event in the exact wire form endpoints receive."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import ValidationError, ValidatorFunctionWrapHandler, WrapValidator

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_store
from convhook.api.fields import Timestamp
from convhook.api.responses import Event, EventPage
from convhook.events import CatalogueEventType, EventType, OperationalEventType
from convhook.store.producer import ProducerStore

router = APIRouter(prefix="/api/v2/events", tags=["events"])
Store = Annotated[ProducerStore, Depends(get_store)]


_CATALOGUE = [t.value for t in (*EventType, *OperationalEventType)]
_NOT_IN_CATALOGUE = (
    "Input should be " + ", ".join(f"'{t}'" for t in _CATALOGUE[:-1]) + f" or '{_CATALOGUE[-1]}'"
)


def _one_problem(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # The union would report one problem per enumeration; the client wrote one value.
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(_NOT_IN_CATALOGUE) from None


EventTypeFilter = Annotated[CatalogueEventType, WrapValidator(_one_problem)]
"""A query parameter taking any type of the catalogue, conversation or operational."""


def _ms(value: Timestamp | None) -> int | None:
    # Timestamp values are in UTC: a naive query value is UTC, not the server's local time.
    return None if value is None else int(value.timestamp() * 1000)


@router.get("", response_model=EventPage)
async def list_events(
    workspace: CurrentWorkspace,
    store: Store,
    event_type: Annotated[EventTypeFilter | None, Query(alias="eventType")] = None,
    conversation_id: Annotated[str | None, Query(alias="conversationId")] = None,
    created_after: Annotated[
        Timestamp | None, Query(alias="createdAfter", description="Inclusive.")
    ] = None,
    created_before: Annotated[
        Timestamp | None, Query(alias="createdBefore", description="Exclusive.")
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The workspace's events, oldest first: ``{"data": [{eventId, eventType, payload}],
    "nextCursor": ...}``. An event older than the retention period whose payload was pruned
    is listed as ``{eventId, eventType, "payload": null, "pruned": true}``."""
    page = await store.list_events(
        workspace.id,
        event_type=event_type.value if event_type else None,
        conversation_id=conversation_id,
        created_after=_ms(created_after),
        created_before=_ms(created_before),
        cursor=cursor,
        limit=limit,
    )
    return Response(page.to_json(), media_type="application/json")


@router.get(
    "/{event_id}",
    response_model=Event,
    responses={
        404: {"description": "No such event in this workspace."},
        410: {"description": "The event's payload was removed by the retention job."},
    },
)
async def get_event(event_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """One event, byte for byte as endpoints receive it; 410 once its payload was pruned."""
    return Response(await store.get_event(workspace.id, event_id), media_type="application/json")
