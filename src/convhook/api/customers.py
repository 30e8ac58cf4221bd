"""``/api/v2/customers``: create one or a batch (insert or upsert by identifier), get, list,
update."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from convhook.api.auth import CurrentWorkspace
from convhook.api.deps import get_store
from convhook.api.errors import ApiError
from convhook.api.fields import (
    MAX_BATCH,
    Email,
    Integer,
    Phone,
    RequestModel,
    batch_refused,
    item_error,
    validate_items,
)
from convhook.api.responses import CustomerBatchResult, CustomerPage
from convhook.errors import FieldProblem
from convhook.events import Customer, build_customer
from convhook.ids import new_id
from convhook.store.producer import NewCustomer, ProducerStore
from convhook.timefmt import format_ts, utcnow

router = APIRouter(prefix="/api/v2/customers", tags=["customers"])
Store = Annotated[ProducerStore, Depends(get_store)]


class Source(BaseModel):
    """How the customer was created."""

    model_config = ConfigDict(extra="forbid")
    method: str | None = None


class CustomerUpdate(RequestModel):
    """Fields of a customer; on update only the fields sent change."""

    # An update with no field is refused: the schema says so.
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: str | None = Field(None, max_length=500)
    email: Email | None = None
    phone_number: Phone | None = None
    identifier: str | None = Field(None, max_length=500)
    priority: Integer | None = None
    is_do_not_disturb_enabled: StrictBool | None = None
    metadata: dict[str, Any] | None = None
    source: Source | None = None


class CustomerIn(CustomerUpdate):
    """A customer to create."""

    model_config = ConfigDict(json_schema_extra={})


class Strategy(StrEnum):
    """What a batch does with an identifier that already exists."""

    INSERT = "insert"
    """Refuse the item."""
    UPSERT = "upsert"
    """Update the existing customer with the item's fields."""


class CustomerBatch(RequestModel):
    """Several customers in one request."""

    # Each item is validated alone (a bad one is reported, the others saved); the schema
    # still says what an item is.
    customers: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/CustomerIn"},
                "maxItems": MAX_BATCH,
            }
        ),
    ]
    strategy: Strategy = Strategy.INSERT


def _new(workspace_id: str, data: CustomerIn) -> NewCustomer:
    stamp = format_ts(utcnow())
    given = data.wire()
    fields = {
        "isDoNotDisturbEnabled": False,
        "source": {"method": "api"},
        **given,
        "id": new_id("cust"),
        "workspaceId": workspace_id,
    }
    document = build_customer(**fields, createdAt=stamp, updatedAt=stamp).to_wire()
    return NewCustomer(document, {**given, "updatedAt": stamp})


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc), status_code=status, media_type="application/json")


@router.post("", status_code=201, response_model=Customer)
async def create_customer(body: CustomerIn, workspace: CurrentWorkspace, store: Store) -> Response:
    """Create one customer; an identifier already used in the workspace answers 409."""
    [result] = await store.save_customers(workspace.id, [_new(workspace.id, body)], upsert=False)
    if result.problems:
        raise ApiError(409, "a customer with this identifier exists", result.problems)
    return _json(result.document, 201)


@router.post("/batch", response_model=CustomerBatchResult)
async def create_customers(
    body: CustomerBatch, workspace: CurrentWorkspace, store: Store
) -> Response:
    """Create customers; with ``strategy: upsert`` an existing identifier is updated. Each
    bad item is listed in ``errors`` with its index and field; the others are saved."""
    good, errors = validate_items(CustomerIn, body.customers, "customers")
    invalid = bool(errors)
    news = [_new(workspace.id, item) for _, item in good]
    saved = await store.save_customers(workspace.id, news, upsert=body.strategy is Strategy.UPSERT)
    results = []
    for (index, _), result in zip(good, saved, strict=True):
        if result.document is not None:
            results.append(result.document)
        errors.extend(item_error(index, p) for p in result.problems)
    errors.sort(key=lambda e: e["index"])
    if errors and not results:
        raise batch_refused("customers", errors, 422 if invalid else 409)
    return _json({"results": results, "errors": errors})


@router.get("/{customer_id}", response_model=Customer)
async def get_customer(customer_id: str, workspace: CurrentWorkspace, store: Store) -> Response:
    """One customer of the workspace."""
    return _json(await store.get_customer(workspace.id, customer_id))


@router.patch("/{customer_id}", response_model=Customer)
async def update_customer(
    customer_id: str,
    workspace: CurrentWorkspace,
    store: Store,
    body: Annotated[CustomerUpdate, Body()],
) -> Response:
    """Change the fields sent; the others keep their values."""
    changes = body.wire()
    if not changes:
        raise ApiError(422, "nothing to update", [FieldProblem("body", "no fields given")])
    changes["updatedAt"] = format_ts(utcnow())
    return _json(await store.update_customer(workspace.id, customer_id, changes))


@router.get("", response_model=CustomerPage)
async def list_customers(
    workspace: CurrentWorkspace,
    store: Store,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The workspace's customers, oldest first: ``{"data": [...], "nextCursor": ...}``."""
    page = await store.list_customers(workspace.id, cursor=cursor, limit=limit)
    return Response(page.to_json(), media_type="application/json")
