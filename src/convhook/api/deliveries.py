"""Delivery log routes: an endpoint's deliveries, an event's deliveries and attempts, one
delivery, redelivery.

A delivery id is ``dlv_`` and the number the database gave the delivery; the bare number is
still read in a path (deprecated), anything else answers 422 naming ``delivery_id``.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from convhook.api.app import CURSOR_PATTERN
from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_deliveries
from convhook.api.endpoints import now_ms, require_endpoint, wake
from convhook.api.errors import ApiError, invalid
from convhook.api.fields import RequestModel
from convhook.api.responses import (
    DELIVERY_ID_PARAMETER,
    NUMBER_PATTERN,
    DeliveryPage,
    DeliveryWithAttempts,
    EventDeliveries,
    Queued,
    delivery_doc,
    json_response,
    parse_delivery_id,
)
from convhook.errors import FieldProblem
from convhook.store.delivery import DeliveryStore
from convhook.store.producer import decode_cursor, encode_cursor

router = APIRouter(prefix="/api/v2", tags=["deliveries"])
Store = Annotated[DeliveryStore, Depends(get_deliveries)]


BEFORE_PATTERN = f"^(?:{NUMBER_PATTERN}|{CURSOR_PATTERN[1:-1]})$"
"""The deprecated ``before``: a delivery number (the list's ``nextCursor`` before ``cursor``)
or a cursor."""
_NUMBER = re.compile(NUMBER_PATTERN + r"\Z")
_BEFORE = re.compile(BEFORE_PATTERN.removesuffix("$") + r"\Z")


def _older_than(cursor: str | None, before: str | None) -> int | None:
    """The delivery number a page starts below; None for the first page."""
    # Checked even beside a cursor: a request the contract calls invalid is refused whole.
    if before is not None and not _BEFORE.match(before):
        problem = FieldProblem("before", "not a delivery number from 1 to 2^63 - 1")
        raise invalid([problem])
    if cursor is None and before is not None:
        if _NUMBER.match(before):
            return int(before)
        cursor = before
    return decode_cursor(cursor) or None


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    endpoint_id: str,
    workspace: CurrentWorkspace,
    store: Store,
    status: Annotated[str | None, Query(pattern="^(pending|delivering|delivered|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    before: Annotated[
        str | None,
        Query(
            description="Deprecated: use `cursor`, which it also takes. Deliveries older than "
            "this number (the list's `nextCursor` before `cursor`); ignored when `cursor` is "
            "given.",
            json_schema_extra={"pattern": BEFORE_PATTERN},
            deprecated=True,
        ),
    ] = None,
) -> Response:
    """The endpoint's deliveries, newest first: ``{"data": [...], "nextCursor"}``."""
    older = _older_than(cursor, before)
    await require_endpoint(store, workspace.id, endpoint_id)
    found = await store.of_endpoint(
        workspace.id, endpoint_id, status=status, limit=limit + 1, before=older
    )
    page, more = found[:limit], len(found) > limit
    return json_response(
        {
            "data": [delivery_doc(d) for d in page],
            "nextCursor": encode_cursor(page[-1].id) if more else None,
        }
    )


@router.get("/events/{event_id}/deliveries", response_model=EventDeliveries)
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


@router.post("/events/{event_id}/redeliver", status_code=202, response_model=Queued)
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


@router.get("/deliveries/{delivery_id}", response_model=DeliveryWithAttempts)
async def get_delivery(
    delivery_id: Annotated[
        str,
        Path(
            description="`dlv_` and a number; the bare number is deprecated.",
            json_schema_extra={"pattern": DELIVERY_ID_PARAMETER},
        ),
    ],
    workspace: CurrentWorkspace,
    store: Store,
) -> Response:
    """One delivery with its attempts."""
    number = parse_delivery_id(delivery_id)
    if number is None:
        problem = FieldProblem("delivery_id", "not a delivery id: dlv_ and a number from 1")
        raise invalid([problem])
    found = await store.get_delivery(workspace.id, number)
    if found is None:
        raise ApiError(404, f"no delivery {delivery_id!r} in this workspace")
    return json_response(delivery_doc(found, attempts=True))
