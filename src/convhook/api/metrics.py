"""``/metrics``: Prometheus exposition of delivery counters and the backlog read now;
``/healthz`` and ``/readyz``: health checks for orchestrators.

The backlog is labelled with the endpoint ids of every workspace: with a metrics token
configured, a scrape must carry ``Authorization: Bearer <token>``. The health checks need no
key or token and answer no data (:func:`convhook.metrics.readiness`)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from convhook import metrics
from convhook.api.deps import ApiSettings, get_deliveries
from convhook.store.delivery import DeliveryStore

router = APIRouter(tags=["metrics"])
Deliveries = Annotated[DeliveryStore, Depends(get_deliveries)]


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request, deliveries: Deliveries) -> Response:
    """The metrics in the Prometheus text format; 401 without the metrics token, if one is
    configured."""
    token = getattr(request.app.state, "metrics_token", None)
    if not metrics.authorized(request.headers.get("authorization"), token):
        return Response(
            metrics.UNAUTHORIZED,
            status_code=401,
            media_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    now = time.time_ns() // 1_000_000
    snapshot = await deliveries.backlog(now)
    text = await asyncio.to_thread(metrics.exposition, snapshot)
    return Response(text, media_type=metrics.CONTENT_TYPE)


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    """200 while the process runs."""
    return Response(metrics.ALIVE, media_type="application/json")


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request, deliveries: Deliveries) -> Response:
    """200 when the database answers, its schema is current and (when this process
    dispatches) the dispatcher runs; 503 naming the failed check otherwise."""
    state = request.app.state
    settings: ApiSettings = state.settings
    ready = await metrics.readiness(deliveries.db, state.dispatcher, dispatching=settings.dispatch)
    return Response(ready.body(), status_code=ready.status, media_type="application/json")
