"""Delivery log routes: an event's deliveries and attempts, one delivery, redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import Field

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_deliveries
from convhook.api.endpoints import delivery_doc, json_response, now_ms, wake
from convhook.api.errors import ApiError
from convhook.api.fields import MAX_INT64, RequestModel
from convhook.store.delivery import DeliveryStore

router = APIRouter(prefix="/api/v2", tags=["deliveries"])
Store = Annotated[DeliveryStore, Depends(get_deliveries)]


@router.get("/events/{event_id}/deliveries")
async def event_deliveries(event_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """Every delivery of one event with every attempt: ``{"eventId", "data": [...]}``."""
    found = await store.of_event(workspace.id, event_id)
    if not found and not await store.event_known(workspace.id, event_id):
        raise ApiError(404, f"no event {event_id!r} in this workspace")
    return json_response(
        {"eventId": event_id, "data": [delivery_doc(d, attempts=True) for d in found]}
    )


class Redelivery(RequestModel):
    """Where to send the event again."""

    endpoint_id: str | None = Field(None, description="One endpoint; absent means all.")


@router.post("/events/{event_id}/redeliver", status_code=202)
async def redeliver(
    event_id: str,
    request: Request,
    workspace: CurrentWorkspace,
    store: Store,
    body: Redelivery | None = None,
) -> Response:
    """Send the event again to one endpoint or to every endpoint it went to: ``{"queued"}``."""
    target = body.endpoint_id if body else None
    now = now_ms()
    queued = await store.redeliver(
        workspace.id, event_id, None if target is None else [target], now
    )
    if not queued:
        raise ApiError(
            404,
            f"nothing to redeliver: no event {event_id!r} with a finished delivery"
            + (f" to endpoint {target!r}" if target else ""),
        )
    wake(request)
    return json_response({"queued": queued}, 202)


@router.get("/deliveries/{delivery_id}")
async def get_delivery(
    delivery_id: Annotated[int, Path(ge=1, le=MAX_INT64)], workspace: CurrentWorkspace, store: Store
) -> Response:
    """One delivery with its attempts."""
    found = await store.get_delivery(workspace.id, delivery_id)
    if found is None:
        raise ApiError(404, f"no delivery {delivery_id} in this workspace")
    return json_response(delivery_doc(found, attempts=True))
