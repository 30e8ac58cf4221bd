"""``/metrics``: Prometheus exposition of delivery counters and the backlog read now.

The backlog is labelled with the endpoint ids of every workspace: with a metrics token
configured, a scrape must carry ``Authorization: Bearer <token>``."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from convhook import metrics
from convhook.api.deps import get_deliveries
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
