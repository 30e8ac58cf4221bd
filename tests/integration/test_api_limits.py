"""Limits of the producer API served in-process by a real uvicorn: busy conversations (429)
and the body size (413), and the outbox's all-or-nothing write, on SQLite and PostgreSQL."""

from __future__ import annotations

import aiohttp
import pytest

from convhook.api import ApiSettings, create_app
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store.producer import Change, ProducerStore, StoredConversation
from tests.support.servers import serve_app


async def test_busy_limit_answers_429_with_retry_after(database_url: str) -> None:
    """Past max_active dialing/active conversations a dial or join answers 429 with
    Retry-After, writes nothing, and succeeds again once one ends."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    _, key = await store.create_workspace("w")
    app = create_app(store, ApiSettings(max_active=2, max_body=2048))
    async with serve_app(app) as base, aiohttp.ClientSession(headers={"x-api-key": key}) as s:
        ids = []
        for _ in range(3):
            async with s.post(f"{base}/api/v2/conversations", json={"agentId": "a"}) as r:
                ids.append((await r.json())["id"])
        for conv_id, action in ((ids[0], "join"), (ids[1], "dial")):
            async with s.post(f"{base}/api/v2/conversations/{conv_id}/{action}") as r:
                assert r.status == 200
        async with s.post(f"{base}/api/v2/conversations/{ids[2]}/join") as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            assert "retry" in (await r.json())["error"]
        async with s.get(f"{base}/api/v2/conversations/{ids[2]}") as r:
            assert (await r.json())["conversationStatus"] == "created"
        async with s.post(f"{base}/api/v2/conversations/{ids[0]}/end") as r:
            assert r.status == 200
        async with s.post(f"{base}/api/v2/conversations/{ids[2]}/join") as r:
            assert r.status == 200
        async with s.post(f"{base}/api/v2/customers", data=b"{" + b" " * 4096 + b"}") as r:
            assert r.status == 413
            assert (await r.json())["problems"][0]["field"] == "body"


async def test_a_refused_change_writes_neither_row_nor_event(database_url: str) -> None:
    """When the change function raises inside the write, the conversation and the outbox are
    both left as they were."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        workspace, _ = await store.create_workspace("w")
        outbox = Outbox(store)
        [created] = await outbox.create(workspace.id, [({"agentId": "a"}, False)])
        assert created.document is not None
        conv_id = created.document["id"]

        def explode(current: StoredConversation) -> Change:
            raise RuntimeError("refused")

        with pytest.raises(RuntimeError):
            await store.change_conversation(workspace.id, conv_id, explode, max_active=5)
        assert (await store.list_events(workspace.id)).items == []
        change = await outbox.transition(workspace.id, conv_id, Action.JOIN, {})
        [event] = (await store.list_events(workspace.id)).items
        assert change.events[0].body == event
        assert await store.get_conversation(workspace.id, conv_id) == change.fields
