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
from convhook.api.deps import get_store
from convhook.store.delivery import log as delivery_log
from convhook.store.producer import ProducerStore

router = APIRouter(tags=["metrics"])
Store = Annotated[ProducerStore, Depends(get_store)]


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request, store: Store) -> Response:
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
    snapshot = await store.db.read(lambda c: delivery_log.backlog(c, now))
    text = await asyncio.to_thread(metrics.exposition, snapshot)
    return Response(text, media_type=metrics.CONTENT_TYPE)
