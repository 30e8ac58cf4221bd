"""``GET /api/v2/conversations/{id}/events`` reads a conversation back in sequence order, each
event byte for byte as delivered and linked to the one before it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiohttp

from convhook.api import ApiSettings, create_app
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app


async def _conversation(session: aiohttp.ClientSession, base: str, key: str) -> str:
    auth = {"x-api-key": key}
    async with session.post(
        f"{base}/api/v2/conversations", json={"agentId": "a"}, headers=auth
    ) as r:
        assert r.status == 201, await r.text()
        conv_id: str = (await r.json())["id"]
    for action in ("join", "leave", "end", "analysis"):
        async with session.post(
            f"{base}/api/v2/conversations/{conv_id}/{action}", headers=auth
        ) as r:
            assert r.status == 200, await r.text()
    return conv_id


async def test_a_conversation_reads_back_in_order_with_links(database_url: str) -> None:
    """Every event of the conversation comes back in sequence order, its body exactly the
    stored one, each naming the previous event's id; pages continue with afterSequence."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    try:
        workspace, key = await store.create_workspace("w")
        app = create_app(store, ApiSettings())
        async with serve_app(app) as base, aiohttp.ClientSession() as session:
            conv_id = await _conversation(session, base, key)
            url = f"{base}/api/v2/conversations/{conv_id}/events"
            auth = {"x-api-key": key}
            async with session.get(url, headers=auth) as r:
                assert r.status == 200, await r.text()
                page = await r.json()
            items = page["data"]
            assert [i["sequence"] for i in items] == [1, 2, 3, 4]
            assert [i["eventType"] for i in items] == [
                "conversation.userJoined",
                "conversation.userLeft",
                "conversation.completed",
                "conversation.analysisCompleted",
            ]
            assert page["nextAfterSequence"] is None
            assert items[0]["previousEventId"] is None
            for before, item in itertools.pairwise(items):
                assert item["previousEventId"] == before["eventId"]
            for item in items:
                stored = await store.get_event(workspace.id, item["eventId"])
                assert json.loads(stored) == item["event"]
                assert item["event"]["eventId"] == item["eventId"]

            async with session.get(url, params={"afterSequence": 1, "limit": 2}, headers=auth) as r:
                second = await r.json()
            assert [i["sequence"] for i in second["data"]] == [2, 3]
            assert second["nextAfterSequence"] == 3
            async with session.get(url, params={"afterSequence": 3}, headers=auth) as r:
                assert [i["sequence"] for i in (await r.json())["data"]] == [4]
            async with session.get(url, params={"afterSequence": 4}, headers=auth) as r:
                assert await r.json() == {"data": [], "nextAfterSequence": None}
    finally:
        await store.close()


async def test_bad_reads_are_refused_with_the_field_named(database_url: str) -> None:
    """Another workspace's conversation and an unknown one are 404; a negative, huge or
    non-numeric afterSequence and a bad limit are 422 naming the parameter, never 500."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    try:
        _, key = await store.create_workspace("w")
        _, other_key = await store.create_workspace("other")
        app = create_app(store, ApiSettings())
        async with serve_app(app) as base, aiohttp.ClientSession() as session:
            conv_id = await _conversation(session, base, key)
            url = f"{base}/api/v2/conversations/{conv_id}/events"
            async with session.get(url, headers={"x-api-key": other_key}) as r:
                assert r.status == 404, await r.text()
            async with session.get(
                f"{base}/api/v2/conversations/conv_nope/events", headers={"x-api-key": key}
            ) as r:
                assert r.status == 404
            async with session.get(url) as r:
                assert r.status == 401
            for params in (
                {"afterSequence": "-1"},
                {"afterSequence": str(2**63)},
                {"afterSequence": "x"},
                {"limit": "0"},
                {"limit": "501"},
            ):
                async with session.get(url, params=params, headers={"x-api-key": key}) as r:
                    text = await r.text()
                    assert r.status == 422, (params, text)
                    assert next(iter(params)) in text
    finally:
        await store.close()


async def test_a_transition_that_waited_for_the_lock_names_the_event_before_it(
    pg_url: str,
) -> None:
    """On PostgreSQL a transition of one process that waited for another's lock on the
    conversation still records the event that other one committed as its previous event."""
    first = ProducerStore.at(pg_url, auto_upgrade=True)
    second = ProducerStore.at(pg_url)
    await first.open()
    await second.open()
    try:
        workspace, _ = await first.create_workspace("w")
        one, two = Outbox(first), Outbox(second)
        [created] = await one.create(workspace.id, [({"agentId": "a"}, False)])
        assert created.document is not None
        conv_id = created.document["id"]
        await one.transition(workspace.id, conv_id, Action.JOIN, {})

        def slowly(current: object) -> None:
            time.sleep(0.5)  # inside the write: the conversation's row stays locked

        leave = asyncio.create_task(
            one.transition(workspace.id, conv_id, Action.LEAVE, {}, guard=slowly)
        )
        await asyncio.sleep(0.2)
        await two.transition(workspace.id, conv_id, Action.END, {})
        await leave
        items, _ = await first.conversation_events(
            workspace.id, conv_id, after_sequence=0, limit=10
        )
        events = [json.loads(item) for item in items]
        assert [e["eventType"] for e in events] == [
            "conversation.userJoined",
            "conversation.userLeft",
            "conversation.completed",
        ]
        for before, event in itertools.pairwise(events):
            assert event["previousEventId"] == before["eventId"]
    finally:
        await first.close()
        await second.close()
