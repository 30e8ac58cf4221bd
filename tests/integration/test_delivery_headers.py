"""Every delivery attempt carries the event's conversation sequence, the previous event's id
and a ``traceparent`` continuing the trace of the API request that recorded the event, through
the real API, outbox and dispatcher to a real HTTP receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from convhook import tracing
from convhook.api import ApiSettings, create_app
from convhook.api.app import ProducerApp
from convhook.dispatcher import Dispatcher
from convhook.retry import RetryPolicy
from convhook.signing import Secret
from convhook.store.producer import ProducerStore
from tests.support.delivery import Receiver, Reply, add_endpoint
from tests.support.servers import serve_app

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ProducerStore]:
    """A producer store on SQLite and on PostgreSQL."""
    producer = ProducerStore.at(database_url, auto_upgrade=True)
    await producer.open()
    try:
        yield producer
    finally:
        await producer.close()


async def _run(
    store: ProducerStore, receiver: Receiver, headers: list[dict[str, str]], expect: int
) -> tuple[list[str], Receiver]:
    """Create a conversation, make its four transitions with ``headers[i]`` and deliver."""
    workspace, key = await store.create_workspace("w")
    app = create_app(store, ApiSettings())
    async with serve_app(receiver) as hook, serve_app(app) as base:
        now = int(time.time() * 1000)
        secret = str(Secret.generate())
        await store.db.write(lambda c: add_endpoint(c, workspace.id, hook + "/hook", secret, now))
        async with aiohttp.ClientSession(headers={"x-api-key": key}) as session:
            async with session.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
                conv_id = (await r.json())["id"]
            for action, extra in zip(("join", "leave", "end", "analysis"), headers, strict=True):
                url = f"{base}/api/v2/conversations/{conv_id}/{action}"
                async with session.post(url, headers=extra) as r:
                    assert r.status == 200, await r.text()
            policy = RetryPolicy(schedule=(0, 0.05, 0.05), jitter=lambda: 0.5)
            async with Dispatcher(store.db, allow_private=True, policy=policy) as dispatcher:
                dispatcher.wake()
                await receiver.wait_for(expect)
            events = await store.list_events(workspace.id, conversation_id=conv_id)
    ids = [json.loads(item)["eventId"] for item in events.items]
    return ids, receiver


async def test_sequence_previous_id_and_trace_reach_every_attempt(store: ProducerStore) -> None:
    """Attempts carry convhook-sequence 1..4 and the previous event's id (none for the
    first); each continues the trace the API request named, with a span id of its own, a
    retried attempt included."""
    receiver = Receiver().then(Reply(status=500))
    sent = [{"traceparent": TRACE}] * 4
    ids, receiver = await _run(store, receiver, sent, 5)
    got = receiver.received
    first, *rest = got
    assert first.headers["convhook-sequence"] == "1"
    assert rest[0].event["eventId"] == first.event["eventId"]  # the retry of the 500
    delivered = rest
    assert [r.headers["convhook-sequence"] for r in delivered] == ["1", "2", "3", "4"]
    assert [r.event["eventId"] for r in delivered] == ids
    assert "convhook-previous-event-id" not in delivered[0].headers
    assert [r.headers["convhook-previous-event-id"] for r in delivered[1:]] == ids[:-1]
    contexts = [tracing.parse(r.headers["traceparent"]) for r in got]
    incoming = tracing.parse(TRACE)
    assert {c.trace_id for c in contexts} == {incoming.trace_id}
    assert len({c.span_id for c in contexts} | {incoming.span_id}) == len(contexts) + 1


async def test_without_a_traceparent_each_request_starts_a_trace(store: ProducerStore) -> None:
    """A request without traceparent starts its own trace, which its event's attempts continue."""
    ids, receiver = await _run(store, Receiver(), [{}] * 4, 4)
    traces = [tracing.parse(r.headers["traceparent"]).trace_id for r in receiver.received]
    assert len(set(traces)) == 4
    assert len(ids) == 4


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(
    "value",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "x" * 5000,
    ],
)
async def test_a_malformed_traceparent_is_refused_and_nothing_moves(
    store: ProducerStore, value: str, fast_path: bool
) -> None:
    """A transition whose traceparent is not W3C Trace Context is a 400 naming the header,
    answered alike with and without the fast path, and the conversation does not move."""
    workspace, key = await store.create_workspace("w")
    app = create_app(store, ApiSettings())
    assert isinstance(app, ProducerApp)
    if not fast_path:
        app.fast_path = None
    auth = {"x-api-key": key}
    async with serve_app(app) as base, aiohttp.ClientSession(headers=auth) as session:
        async with session.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
            conv_id = (await r.json())["id"]
        url = f"{base}/api/v2/conversations/{conv_id}/join"
        async with session.post(url, headers={"traceparent": value}) as r:
            assert r.status == 400, await r.text()
            assert "traceparent" in await r.text()
        async with session.get(f"{base}/api/v2/conversations/{conv_id}") as r:
            assert (await r.json())["conversationStatus"] == "created"
        page = await store.list_events(workspace.id)
    assert page.items == []
