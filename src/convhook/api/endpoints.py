"""``/api/v2/endpoints``: webhook subscriptions, their secrets, test events and deliveries.

The secret is returned when an endpoint is created and when it is rotated, never otherwise.
A new or changed endpoint receives events recorded from then on; old events are not re-sent
unless asked (``/api/v2/events/{id}/redeliver``, ``/api/v2/endpoints/{id}/recover``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, Field, StrictBool

from convhook.api.app import ENDPOINT_CURSOR_PATTERN
from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_deliveries
from convhook.api.errors import ApiError
from convhook.api.fields import RequestModel, Timestamp, json_number
from convhook.api.responses import Endpoint as EndpointDoc
from convhook.api.responses import (
    EndpointPage,
    EndpointWithSecret,
    Queued,
    QueuedTestEvent,
    delivery_id,
    endpoint_doc,
    json_response,
)
from convhook.errors import FieldProblem
from convhook.events import CatalogueEventType, EventType
from convhook.ids import new_id
from convhook.netguard import MAX_URL_LENGTH, TargetError, validate_url
from convhook.samples import sample_event, subject_of
from convhook.signing import Secret
from convhook.store.delivery import DeliveryStore, Endpoint
from convhook.store.producer import decode_cursor
from convhook.store.producer.paging import MAX_SEQ

router = APIRouter(prefix="/api/v2/endpoints", tags=["endpoints"])
Store = Annotated[DeliveryStore, Depends(get_deliveries)]

DEFAULT_GRACE_HOURS = 24.0
_ENDPOINT_ID = "ep_[0-9a-f]{28}"
AFTER_PATTERN = f"^(?:{_ENDPOINT_ID}|{ENDPOINT_CURSOR_PATTERN[1:-1]})$"
"""The deprecated ``after`` of the list: an endpoint id (``convhook.ids.new_id("ep")``, the
list's ``nextCursor`` before ``cursor``), or a cursor as ``cursor`` takes it."""
_AFTER_ID = re.compile(_ENDPOINT_ID + r"\Z")
_AFTER = re.compile(AFTER_PATTERN.removesuffix("$") + r"\Z")
URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://"
_URL_DOC = (
    "http(s) URL that receives the events; a host on loopback, a private network or a "
    "cloud metadata service is refused with 422 unless the server allows private targets."
)


# JSON numbers only: lax pydantic would also read true as 1 and "5" as 5.
RateLimit = Annotated[
    float,
    Field(gt=0, le=10_000, description="Deliveries per second."),
    BeforeValidator(json_number),
]
MaxInFlight = Annotated[
    int,
    Field(ge=1, le=1000, description="Concurrent deliveries at most."),
    BeforeValidator(json_number),
]


class EndpointIn(RequestModel):
    """An endpoint to create."""

    url: str = Field(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN, description=_URL_DOC)
    event_types: list[CatalogueEventType] | None = Field(
        None,
        description="Event types to send; absent or null means every conversation event. "
        "Operational events (endpoint.disabled, endpoint.enabled, endpoint.recovered, "
        "delivery.failed) are sent only to endpoints that list them.",
    )
    description: str = Field("", max_length=1000)
    enabled: StrictBool = True
    rate_limit: RateLimit | None = None
    max_in_flight: MaxInFlight = 10


class EndpointUpdate(RequestModel):
    """Fields to change; only the fields sent change."""

    url: str | None = Field(
        None, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN, description=_URL_DOC
    )
    event_types: list[CatalogueEventType] | None = None
    description: str | None = Field(None, max_length=1000)
    enabled: StrictBool | None = None
    rate_limit: RateLimit | None = None
    max_in_flight: MaxInFlight | None = None


class Rotation(RequestModel):
    """How long the old secret keeps signing after a rotation."""

    grace_hours: Annotated[float, BeforeValidator(json_number)] = Field(
        DEFAULT_GRACE_HOURS, ge=0, le=24 * 30
    )


class TestEvent(RequestModel):
    """Which sample event to send."""

    event_type: CatalogueEventType = EventType.USER_JOINED


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _check_url(request: Request, url: str) -> str:
    allow = bool(getattr(request.app.state, "allow_private_targets", False))
    try:
        return validate_url(url, allow_private=allow)
    except TargetError as exc:
        raise ApiError(422, str(exc), [FieldProblem("url", str(exc))]) from None


def wake(request: Request) -> None:
    """Nudge the dispatcher running in this process, if any."""
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()


def _not_found(endpoint_id: str) -> ApiError:
    return ApiError(404, f"no endpoint {endpoint_id!r} in this workspace")


async def require_endpoint(store: DeliveryStore, workspace_id: str, endpoint_id: str) -> Endpoint:
    """The workspace's endpoint, or the 404 naming it."""
    found = await store.get_endpoint(workspace_id, endpoint_id)
    if found is None:
        raise _not_found(endpoint_id)
    return found


@router.post("", status_code=201, response_model=EndpointWithSecret)
async def create_endpoint(
    body: EndpointIn, request: Request, workspace: CurrentWorkspace, store: Store
) -> Response:
    """Create an endpoint; the answer carries its ``secret``, shown this once."""
    url = _check_url(request, body.url)
    secret = str(Secret.generate())
    types = None if body.event_types is None else [t.value for t in body.event_types]
    now = now_ms()
    endpoint = await store.create_endpoint(
        endpoint_id=new_id("ep"),
        workspace_id=workspace.id,
        url=url,
        secret=secret,
        now=now,
        description=body.description,
        event_types=types,
        enabled=body.enabled,
        rate_limit=body.rate_limit,
        max_in_flight=body.max_in_flight,
    )
    return json_response(endpoint_doc(endpoint, secret=secret), 201)


# Endpoint ids are ``ep_``, 12 hex digits of their creation millisecond and 16 more
# (convhook.ids.new_id), and the list is in id order. A cursor holds the last listed id as one
# number, millisecond << 64 | the rest, written as the other lists write theirs (up to 34
# digits): the next page starts after that id whether or not it still exists.
_ID_SHIFT = 64
_ID_MIN = 1 << _ID_SHIFT
_ID_DIGITS = 34
# Cursors handed out before held the last listed id's millisecond times _PER_MS plus how many
# endpoints of that millisecond were listed, a 64-bit row number. They are still read,
# as they were: such a page skips one endpoint for each of that millisecond's deleted since.
# Any larger number (up to 34 digits) is an id position (ids give numbers of 2**64 and more),
# so every cursor of the published form reads.
_PER_MS = 100_000


def _ms(endpoint_id: str) -> int:
    return int(endpoint_id[3:15], 16)


def _cursor_after(endpoint_id: str) -> str:
    """The cursor of the page after ``endpoint_id``."""
    number = _ms(endpoint_id) << _ID_SHIFT | int(endpoint_id[15:], 16)
    return base64.urlsafe_b64encode(f"s{number}".encode()).decode().rstrip("=")


def _number(cursor: str) -> int:
    """The number a cursor holds; as every list reads it (400 when it is not one handed out),
    but for up to 34 digits."""
    with contextlib.suppress(ValueError, binascii.Error, UnicodeDecodeError):
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text[1:]
        wide = text.startswith("s") and digits.isascii() and digits.isdigit()
        if wide and len(digits) <= _ID_DIGITS and int(digits) > MAX_SEQ:
            return int(digits)
    return decode_cursor(cursor)


async def _resume_after(store: DeliveryStore, workspace_id: str, cursor: str) -> str | None:
    """The endpoint id the page of ``cursor`` starts after (None: the first page)."""
    number = _number(cursor)
    if number > MAX_SEQ:  # past every cursor of the earlier form
        ms, rest = divmod(number, _ID_MIN)
        return f"ep_{ms:012x}{rest:016x}"
    ms, listed = divmod(number, _PER_MS)
    if not number:
        return None
    start = f"ep_{ms:012x}"  # before every id of that millisecond
    if not listed:
        return start
    found = await store.list_endpoints(workspace_id, limit=listed, after=start)
    same = [e.id for e in found if _ms(e.id) == ms]
    return same[-1] if same else start


@router.get("", response_model=EndpointPage)
async def list_endpoints(
    workspace: CurrentWorkspace,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
    after: Annotated[
        str | None,
        Query(
            description="Deprecated: use `cursor`, which it also takes. The last endpoint id "
            "of the previous page; ignored when `cursor` is given.",
            json_schema_extra={"pattern": AFTER_PATTERN},
            deprecated=True,
        ),
    ] = None,
) -> Response:
    """The workspace's endpoints (never their secrets), oldest first:
    ``{"data": [...], "nextCursor"}``."""
    # Checked even beside a cursor: a request the contract calls invalid is refused whole.
    if after is not None and not _AFTER.match(after):
        # The same answer as the lists give a cursor they did not hand out.
        raise ApiError(
            400,
            "cursor is not one this API returned: pass nextCursor from the previous page",
            [FieldProblem("after", "malformed cursor")],
        )
    given = cursor if cursor is not None else after
    if not given:
        start = None
    elif cursor is None and _AFTER_ID.match(given):
        start = given  # the deprecated form: the previous page's last endpoint id
    else:
        start = await _resume_after(store, workspace.id, given)
    found = await store.list_endpoints(workspace.id, limit=limit + 1, after=start)
    page = found[:limit]
    next_cursor = _cursor_after(page[-1].id) if len(found) > limit else None
    return json_response({"data": [endpoint_doc(e) for e in page], "nextCursor": next_cursor})


@router.get("/{endpoint_id}", response_model=EndpointDoc)
async def get_endpoint(endpoint_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """One endpoint, without its secret."""
    return json_response(endpoint_doc(await require_endpoint(store, workspace.id, endpoint_id)))


@router.patch("/{endpoint_id}", response_model=EndpointDoc)
async def update_endpoint(
    endpoint_id: str,
    body: EndpointUpdate,
    request: Request,
    workspace: CurrentWorkspace,
    store: Store,
) -> Response:
    """Change an endpoint; enabling or disabling here is the same as the dedicated calls."""
    changes: dict[str, Any] = {}
    sent = body.model_fields_set
    if "url" in sent and body.url is not None:
        changes["url"] = _check_url(request, body.url)
    if "event_types" in sent:
        types = body.event_types
        changes["event_types"] = None if types is None else [t.value for t in types]
    for name in ("description", "rate_limit", "max_in_flight"):
        if name in sent and (getattr(body, name) is not None or name == "rate_limit"):
            changes[name] = getattr(body, name)
    now = now_ms()
    updated = await store.update_endpoint(workspace.id, endpoint_id, now, changes)
    if updated is None:
        raise _not_found(endpoint_id)
    if "enabled" in sent and body.enabled is not None and body.enabled != updated.enabled:
        return await _set_enabled(store, workspace.id, endpoint_id, body.enabled)
    return json_response(endpoint_doc(updated))


async def _set_enabled(store: Store, workspace_id: str, endpoint_id: str, on: bool) -> Response:
    now = now_ms()
    changed = await store.set_enabled(workspace_id, endpoint_id, on, now)
    if changed is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint_doc(changed))


@router.post("/{endpoint_id}/disable", response_model=EndpointDoc)
async def disable_endpoint(endpoint_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """Stop delivering; waiting deliveries become failed (recover them after enabling)."""
    return await _set_enabled(store, workspace.id, endpoint_id, False)


@router.post("/{endpoint_id}/enable", response_model=EndpointDoc)
async def enable_endpoint(endpoint_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """Deliver again, from the events recorded from now on."""
    return await _set_enabled(store, workspace.id, endpoint_id, True)


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """Delete the endpoint with its delivery log."""
    if not await store.delete_endpoint(workspace.id, endpoint_id):
        raise _not_found(endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(
    endpoint_id: str,
    workspace: CurrentWorkspace,
    store: Store,
    body: Rotation | None = None,
) -> Response:
    """Issue a new secret (returned once); the old one also signs during the grace period."""
    grace_ms = int((body or Rotation()).grace_hours * 3_600_000)
    secret = str(Secret.generate())
    now = now_ms()
    rotated = await store.rotate_secret(workspace.id, endpoint_id, secret, now, grace_ms)
    if rotated is None:
        raise _not_found(endpoint_id)
    return json_response(endpoint_doc(rotated, secret=secret))


@router.post("/{endpoint_id}/test", status_code=202, response_model=QueuedTestEvent)
async def send_test(
    endpoint_id: str,
    request: Request,
    workspace: CurrentWorkspace,
    store: Store,
    body: TestEvent | None = None,
) -> Response:
    """Queue a sample event for this endpoint only; follow it in its deliveries."""
    endpoint = await require_endpoint(store, workspace.id, endpoint_id)
    if not endpoint.enabled:
        raise ApiError(409, "the endpoint is disabled: enable it before sending a test event")
    event = sample_event((body or TestEvent()).event_type)
    data = event.to_json()
    now = now_ms()
    number = await store.enqueue_test(
        workspace_id=workspace.id,
        endpoint_id=endpoint_id,
        event_id=event.event_id,
        event_type=event.event_type,
        body=data,
        now=now,
        conversation_id=subject_of(event),
    )
    wake(request)
    return json_response({"deliveryId": delivery_id(number), "eventId": event.event_id}, 202)


class Recovery(RequestModel):
    """Which failed deliveries to retry."""

    since: Timestamp = Field(description="Retry failed deliveries created at or after this.")


@router.post("/{endpoint_id}/recover", status_code=202, response_model=Queued)
async def recover(
    endpoint_id: str,
    body: Recovery,
    request: Request,
    workspace: CurrentWorkspace,
    store: Store,
) -> Response:
    """Queue again every failed delivery of the endpoint since a time: ``{"queued": n}``."""
    endpoint = await require_endpoint(store, workspace.id, endpoint_id)
    if not endpoint.enabled:
        raise ApiError(409, "the endpoint is disabled: enable it before recovering deliveries")
    since = math.floor(body.since.timestamp() * 1000)
    now = now_ms()
    queued = await store.recover(workspace.id, endpoint_id, since, now)
    wake(request)
    return json_response({"queued": queued}, 202)
