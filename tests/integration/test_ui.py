"""The dashboard's files over a real uvicorn server: ``/`` leads to ``/ui``, the page and its
assets are served from this server only, unknown names are 404, and the page is small."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from convhook.api import create_app
from convhook.api.deps import ApiSettings
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app

UI = Path(__file__).parents[2] / "src" / "convhook" / "ui"


def _app(tmp_path: Path) -> object:
    return create_app(ProducerStore.at(str(tmp_path / "p.db")), ApiSettings(dispatch=False))


async def test_root_redirects_to_the_dashboard(tmp_path: Path) -> None:
    """``GET /`` answers a redirect to ``/ui``, which needs no key to load."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/", allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["location"] == "/ui"
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert str(r.url) == f"{base}/ui"
            assert r.headers["content-type"] == "text/html; charset=utf-8"


async def test_the_page_loads_everything_from_this_server(tmp_path: Path) -> None:
    """Every script and style the page names is a path on this server answering its content
    type, no file names another host, and the page forbids loading from anywhere else."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/ui") as r:
            assert r.status == 200
            page = await r.text()
            policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self'" in policy
        links = [u for u in re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page) if u[0] == "/"]
        assert sorted(links) == ["/ui/assets/app.css", "/ui/assets/app.js"]
        kinds = {"/ui/assets/app.css": "text/css", "/ui/assets/app.js": "text/javascript"}
        for link in links:
            async with http.get(base + link) as r:
                assert r.status == 200, link
                assert r.headers["content-type"].startswith(kinds[link])
                assert r.headers["cache-control"] == "no-cache"
                assert await r.read() == (UI / link.rsplit("/", 1)[1]).read_bytes()
                etag = r.headers["etag"]
            async with http.get(base + link, headers={"if-none-match": etag}) as r:
                assert r.status == 304, link
                assert await r.read() == b""
        for name in ("index.html", "app.js", "app.css"):
            text = (UI / name).read_text()
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), name
            assert "innerHTML" not in text, name


async def test_unknown_assets_are_404(tmp_path: Path) -> None:
    """Only the dashboard's own file names are served under ``/ui/assets``."""
    async with serve_app(_app(tmp_path)) as base, aiohttp.ClientSession() as http:
        for name in ("index.html", "nope.js", "..%2f..%2fapi%2fui.py", "__init__.py"):
            async with http.get(f"{base}/ui/assets/{name}") as r:
                assert r.status == 404, name
                assert "error" in await r.json()


async def test_the_dashboard_is_not_in_the_api_contract(tmp_path: Path) -> None:
    """``/``, ``/ui`` and its assets stay out of ``/openapi.json`` (they are not API)."""
    async with (
        serve_app(_app(tmp_path)) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/openapi.json") as r,
    ):
        paths = (await r.json())["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]


def test_page_weight() -> None:
    """The page, its script and its style together stay under 64 KiB uncompressed."""
    sizes = {name: (UI / name).stat().st_size for name in ("index.html", "app.js", "app.css")}
    total = sum(sizes.values())
    print(f"dashboard page weight: {total} bytes ({sizes})")
    assert total < 64 * 1024


async def _seed(store: ProducerStore, events: int) -> str:
    """A workspace with ``events`` events (conversations joined, left and ended); its key."""
    await store.open()
    try:
        workspace, key = await store.create_workspace("w")
        outbox = Outbox(store, max_active=events)
        made = 0
        while made < events:
            created = await outbox.create(workspace.id, [({"agentId": "a"}, False)] * 500)
            ids = [c.document["id"] for c in created if c.document is not None]
            for action in (Action.JOIN, Action.LEAVE, Action.END):
                await asyncio.gather(*(outbox.transition(workspace.id, c, action, {}) for c in ids))
                made += len(ids)
        return key
    finally:
        await store.close()


@pytest.mark.slow
async def test_the_events_page_answers_within_300_ms_with_100_000_events(tmp_path: Path) -> None:
    """Each request the events page makes (its default last hour, a type, a conversation, a
    time window, the next page, an empty window) takes under 300 ms with 100,000 events."""
    db = str(tmp_path / "p.db")
    key = await _seed(ProducerStore.at(db), 100_000)
    app = create_app(ProducerStore.at(db), ApiSettings(dispatch=False))
    now = datetime.now(UTC)
    hour_ago, ahead = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    async with (
        serve_app(app) as base,
        aiohttp.ClientSession(base, headers={"x-api-key": key}) as http,
    ):

        async def page(query: dict[str, str]) -> tuple[float, Any]:
            started = time.perf_counter()
            async with http.get("/api/v2/events", params={"limit": "200", **query}) as r:
                assert r.status == 200, await r.text()
                doc = await r.json()
            return (time.perf_counter() - started) * 1000, doc

        _, first = await page({"createdAfter": hour_ago})
        assert first["nextCursor"]
        conversation = first["data"][0]["payload"]["id"]
        queries = {
            "last hour": {"createdAfter": hour_ago},
            "type": {"eventType": "conversation.completed", "createdAfter": hour_ago},
            "conversation": {"conversationId": conversation},
            "window": {"createdAfter": hour_ago, "createdBefore": ahead},
            "next page": {"createdAfter": hour_ago, "cursor": first["nextCursor"]},
            "empty window": {"createdAfter": ahead},
        }
        slow = {}
        for name, query in queries.items():
            median = statistics.median([(await page(query))[0] for _ in range(5)])
            print(f"events page, {name}: {median:.1f} ms")
            if median >= 300:
                slow[name] = median
    assert not slow, slow
