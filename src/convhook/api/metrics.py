"""``/metrics``: Prometheus exposition of delivery counters and the backlog read now."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from convhook import metrics
from convhook.api.deps import get_store
from convhook.store import delivery_log
from convhook.store.producer import ProducerStore

router = APIRouter(tags=["metrics"])
Store = Annotated[ProducerStore, Depends(get_store)]


@router.get("/metrics", include_in_schema=False)
async def scrape(store: Store) -> Response:
    """The metrics in the Prometheus text format (unauthenticated, as scrapers expect)."""
    now = time.time_ns() // 1_000_000
    snapshot = await store.db.read(lambda c: delivery_log.backlog(c, now))
    text = await asyncio.to_thread(metrics.exposition, snapshot)
    return Response(text, media_type=metrics.CONTENT_TYPE)
