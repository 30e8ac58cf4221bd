"""Retention: old, fully delivered events lose their payload in small batches and keep their
row; a pruned event answers 410 and is listed as a stub; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from convhook.api import create_app
from convhook.errors import ConfigError
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store.producer import GoneError, ProducerStore
from convhook.store.producer.retention import parse_period
from tests.support.servers import serve_app

DAY_MS = 86_400_000


def later(days: float) -> Any:
    """A clock ``days`` ahead of now, so events recorded now look that old."""
    return lambda: time.time() + days * 86_400


def has_table(store: ProducerStore, name: str) -> Any:
    def read(conn: Any) -> bool:
        if store.dialect == "postgres":
            return bool(conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0])
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return bool(found[0])

    return read


async def lifecycle(outbox: Outbox, workspace_id: str, n: int) -> list[str]:
    """``n`` conversations joined and left: two events each; their conversation ids."""
    created = await outbox.create(workspace_id, [({"agentId": "a"}, False)] * n)
    ids = [c.document["id"] for c in created if c.document]
    for conv_id in ids:
        for action in (Action.JOIN, Action.LEAVE):
            await outbox.transition(workspace_id, conv_id, action, {})
    return ids


async def test_prune_empties_old_finished_events_in_batches(database_url: str) -> None:
    """Events older than the period lose their payload, batch by batch; their rows, order
    and sequence stay; younger events and events with an unfinished delivery keep theirs."""
    async with ProducerStore.at(database_url, auto_upgrade=True) as store:
        workspace, key = await store.create_workspace("w")
        outbox = Outbox(store)
        endpoint = await store.db.read(has_table(store, "endpoints"))
        if endpoint:
            # An endpoint makes every event fan out to a pending delivery.
            await store.db.write(
                lambda c: c.execute(
                    "INSERT INTO endpoints (id, workspace_id, url, secret, created_at, "
                    "updated_at) VALUES ('ep_1', ?, 'http://127.0.0.1:9/', 'whsec_x', 0, 0)",
                    (workspace.id,),
                )
            )
        await lifecycle(outbox, workspace.id, 3)
        before = await store.events_after(0)
        assert len(before) == 6
        if endpoint:
            kept = before[0].id
            await store.db.write(
                lambda c: c.execute(
                    "UPDATE deliveries SET status = CASE WHEN event_id = ? THEN 'pending' "
                    "WHEN event_id = ? THEN 'failed' ELSE 'delivered' END",
                    (kept, before[1].id),
                )
            )

        young = await store.prune_events(older_than_ms=DAY_MS, batch=2)
        assert (young.events, young.batches) == (0, 0)
        done = await store.prune_events(older_than_ms=DAY_MS, batch=2, clock=later(2))
        expect_pruned = 5 if endpoint else 6
        assert done.events == expect_pruned
        assert done.batches == 3
        assert await store.events_after(0) == before

        page = await store.list_events(workspace.id, limit=500)
        assert len(page.items) == 6
        stubs = [i for i in page.items if '"pruned":true' in i]
        assert len(stubs) == expect_pruned
        with pytest.raises(GoneError, match="retention"):
            await store.get_event(workspace.id, before[-1].id)
        if endpoint:
            assert '"payload":{' in await store.get_event(workspace.id, before[0].id)

        again = await store.prune_events(older_than_ms=DAY_MS, batch=2, clock=later(2))
        assert again.events == 0

        app = create_app(store)
        async with serve_app(app) as base, aiohttp.ClientSession(headers={"x-api-key": key}) as s:
            async with s.get(f"{base}/api/v2/events/{before[-1].id}") as r:
                assert r.status == 410
                assert "retention" in (await r.json())["error"]
            async with s.get(f"{base}/api/v2/events?limit=500") as r:
                data = (await r.json())["data"]
            assert [e["eventId"] for e in data] == [e.id for e in before]
            assert data[-1] == {
                "eventId": before[-1].id,
                "eventType": "conversation.userLeft",
                "payload": None,
                "pruned": True,
            }


def test_periods_parse_with_units() -> None:
    """Retention periods are a number and a unit; anything else names the expected form."""
    assert parse_period("30d") == 30 * DAY_MS
    assert parse_period("12h") == 12 * 3_600_000
    assert parse_period("90s") == 90_000
    with pytest.raises(ConfigError, match="30d"):
        parse_period("30 days")
