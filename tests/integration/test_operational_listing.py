"""Operational events (``endpoint.*``, ``delivery.failed``) found through the events list and
the live stream by their type, over a real uvicorn server on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from convhook.api import ApiSettings, create_app
from convhook.cli.remote import SseParser
from convhook.events import OperationalEventType
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app

SETTINGS = ApiSettings(allow_private_targets=True, stream_poll=0.05)


@dataclass
class Served:
    """The API on a loopback port, a session with the workspace's key, and one endpoint that
    was disabled then enabled (an ``endpoint.disabled`` and an ``endpoint.enabled``)."""

    base: str
    session: aiohttp.ClientSession
    endpoint: str
    conversation: str


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[Served]:
    """A served app whose workspace recorded a conversation event and two operational ones."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    try:
        _, key = await store.create_workspace("w")
    finally:
        await store.close()
    app = create_app(ProducerStore.at(database_url), SETTINGS)
    async with (
        serve_app(app) as base,
        aiohttp.ClientSession(base_url=base, headers={"x-api-key": key}) as session,
    ):

        async def post(path: str, doc: Any = None) -> Any:
            async with session.post(path, json=doc) as r:
                assert r.status in (200, 201), await r.text()
                return await r.json()

        endpoint = (await post("/api/v2/endpoints", {"url": "http://127.0.0.1:9/hook"}))["id"]
        conversation = (await post("/api/v2/conversations", {"agentId": "agent-ops"}))["id"]
        await post(f"/api/v2/conversations/{conversation}/join")
        await post(f"/api/v2/endpoints/{endpoint}/disable")
        await post(f"/api/v2/endpoints/{endpoint}/enable")
        yield Served(base, session, endpoint, conversation)


async def _get(served: Served, path: str, **params: str) -> tuple[int, Any]:
    async with served.session.get(path, params=params) as r:
        return r.status, await r.json()


async def test_the_events_list_filters_by_each_operational_type(served: Served) -> None:
    """``eventType`` on ``GET /api/v2/events`` takes an operational type and lists only those
    events, filed under their endpoint; the other catalogue types still filter."""
    status, page = await _get(served, "/api/v2/events", eventType="endpoint.disabled")
    assert status == 200, page
    [event] = page["data"]
    assert event["eventType"] == "endpoint.disabled"
    assert event["payload"]["endpointId"] == served.endpoint
    assert event["payload"]["enabled"] is False
    for kind in OperationalEventType:
        status, page = await _get(served, "/api/v2/events", eventType=kind.value)
        assert status == 200, (kind, page)
        assert {e["eventType"] for e in page["data"]} <= {kind.value}
    status, page = await _get(
        served, "/api/v2/events", eventType="endpoint.enabled", conversationId=served.endpoint
    )
    assert [e["eventType"] for e in page["data"]] == ["endpoint.enabled"]
    status, page = await _get(served, "/api/v2/events", eventType="conversation.userJoined")
    assert [e["payload"]["id"] for e in page["data"]] == [served.conversation]


async def test_an_unknown_event_type_is_a_422_naming_the_parameter(served: Served) -> None:
    """An ``eventType`` outside the catalogue is refused with 422 naming ``eventType``, on the
    events list and on the stream."""
    for path in ("/api/v2/events", "/api/v2/stream"):
        for bogus in ("endpoint.bogus", "conversation.nope", ""):
            status, doc = await _get(served, path, eventType=bogus)
            assert status == 422, (path, bogus, doc)
            assert [p["field"] for p in doc["problems"]] == ["eventType"], (path, bogus, doc)
            assert "eventType" in doc["error"]


async def _stream(served: Served, **params: str) -> list[dict[str, Any]]:
    """The ``event`` messages the stream sends from the start until it is quiet for a while."""
    parser = SseParser()
    found: list[dict[str, Any]] = []
    async with served.session.get(
        "/api/v2/stream",
        params={"since": "start", **params},
        headers={"accept": "text/event-stream"},
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    ) as r:
        assert r.status == 200, await r.text()
        try:
            while True:
                chunk = await asyncio.wait_for(r.content.readany(), 1.0)
                for message in parser.feed(chunk):
                    if message.event == "event":
                        found.append(json.loads(message.data))
        except TimeoutError:
            return found


async def test_the_stream_filters_by_an_operational_type(served: Served) -> None:
    """``eventType`` on ``GET /api/v2/stream`` takes an operational type and sends only those
    events, each filed under its endpoint."""
    sent = await _stream(served, eventType="endpoint.enabled")
    assert [(m["eventType"], m["conversationId"]) for m in sent] == [
        ("endpoint.enabled", served.endpoint)
    ]
    assert sent[0]["event"]["payload"]["endpointId"] == served.endpoint
    sent = await _stream(served, eventType="conversation.userJoined")
    assert [m["conversationId"] for m in sent] == [served.conversation]
