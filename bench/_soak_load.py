"""The soak test's traffic through the producer API, and what the API reports on deliveries.

Conversations start at a steady pace and each goes created -> join -> leave -> end ->
analysis, one move every ``step`` seconds: four events per conversation, so ``rate`` events/s
means a new conversation every ``4 / rate`` s. An event counts as acknowledged when the API
answered its move with a 2xx; a move that fails ends its conversation there (after an
unanswered call the conversation's phase is unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

EVENT_OF = {
    "join": "conversation.userJoined",
    "leave": "conversation.userLeft",
    "end": "conversation.completed",
    "analysis": "conversation.analysisCompleted",
}
BODY_OF: dict[str, dict[str, Any]] = {"analysis": {"summary": "Soak test call."}}


class Api:
    """The producer API of one workspace, on loopback."""

    def __init__(self, port: int, key: str) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v2"
        self.http = aiohttp.ClientSession(
            headers={"x-api-key": key},
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=100),
        )

    async def close(self) -> None:
        await self.http.close()

    async def post(self, path: str, doc: dict[str, Any]) -> tuple[int, Any]:
        async with self.http.post(self.base + path, json=doc) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def created(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """POST that must answer 201; returns its document."""
        status, body = await self.post(path, doc)
        if status != 201:
            raise RuntimeError(f"POST {path} answered {status}: {body}")
        found: dict[str, Any] = body
        return found

    async def customers(self, count: int) -> list[str]:
        """``count`` new customers (distinct phone numbers); their ids."""
        ids = []
        for n in range(count):
            doc = {"name": f"Soak Customer {n}", "phoneNumber": f"+1415555{n:04d}"}
            ids.append((await self.created("/customers", doc))["id"])
        return ids

    async def deliveries(self, endpoint: str, status: str, limit: int | None = None) -> int:
        """How many of the endpoint's deliveries have ``status`` (up to ``limit``)."""
        count, before = 0, None
        while True:
            params: dict[str, str | int] = {"status": status, "limit": min(limit or 500, 500)}
            if before is not None:
                params["before"] = before
            url = f"{self.base}/endpoints/{endpoint}/deliveries"
            async with self.http.get(url, params=params) as r:
                if r.status != 200:
                    raise RuntimeError(f"GET {url} answered {r.status}: {await r.text()}")
                page = await r.json()
            count += len(page["data"])
            before = page["nextCursor"]
            if before is None or (limit is not None and count >= limit):
                return count

    async def unfinished(self, endpoint: str) -> int:
        """Deliveries pending or in flight (0 or more; capped at 1 per status: a cheap look)."""
        pending = await self.deliveries(endpoint, "pending", limit=1)
        return pending + await self.deliveries(endpoint, "delivering", limit=1)


@dataclass
class Load:
    """What the load generator did and what the API answered."""

    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    """(conversation id, event type) of every move the API answered 2xx."""
    refused: Counter[str] = field(default_factory=Counter)
    """Calls not answered 2xx, by ``"<call>: <status or error>"``."""
    examples: dict[str, str] = field(default_factory=dict)
    """The first answer (or error) behind each key of :attr:`refused`."""
    conversations: int = 0
    seconds: float = 0.0


async def drive(
    api: Api, rate: float, seconds: float, customers: list[str], step: float = 1.0
) -> Load:
    """Start a conversation every ``4 / rate`` s for ``seconds`` s, each running its
    lifecycle; returns once the last started conversation has finished."""
    load = Load()
    rng = random.Random(7)
    running: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    n = 0
    while (due := start + n * 4 / rate) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(_lifecycle(api, load, rng.choice(customers), step))
        running.add(task)
        task.add_done_callback(running.discard)
        n += 1
    load.seconds = time.monotonic() - start
    if running:
        await asyncio.gather(*running)
    return load


async def _lifecycle(api: Api, load: Load, customer: str, step: float) -> None:
    doc = {"agentId": "agent_soak", "customerId": customer}
    if (conv := await _call(api, load, "create", "/conversations", doc, 201)) is None:
        return
    load.conversations += 1
    for action, event_type in EVENT_OF.items():
        await asyncio.sleep(step)
        path = f"/conversations/{conv['id']}/{action}"
        if await _call(api, load, action, path, BODY_OF.get(action, {}), 200) is None:
            return
        load.acknowledged.add((conv["id"], event_type))


async def _call(
    api: Api, load: Load, name: str, path: str, doc: dict[str, Any], expected: int
) -> dict[str, Any] | None:
    try:
        status, body = await api.post(path, doc)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _refused(load, f"{name}: {type(exc).__name__}", repr(exc))
        return None
    if status != expected:
        _refused(load, f"{name}: {status}", json.dumps(body) if isinstance(body, dict) else body)
        return None
    found: dict[str, Any] = body
    return found


def _refused(load: Load, key: str, detail: str) -> None:
    load.refused[key] += 1
    load.examples.setdefault(key, detail[:300])


async def wait_drained(api: Api, endpoint: str, timeout: float) -> float:
    """Seconds until the endpoint has no delivery pending or in flight (or ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(aiohttp.ClientError, RuntimeError):
            if await api.unfinished(endpoint) == 0:
                break
        await asyncio.sleep(1)
    return time.monotonic() - start
