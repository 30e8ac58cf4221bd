"""Server time of each request the dashboard's Events page makes, with 10,000 and 100,000
events stored (target: under 300 ms each).

Seeds a temporary SQLite database through the outbox (conversations joined, left and ended),
serves it with ``create_app`` on uvicorn, and times each query the page sends (its default last
hour, by type, by conversation, a time window, the next page, an empty window) as the median of
five, printing one table per size. The page weight (its HTML, script and styles) is printed too.

    .venv/bin/python bench/dashboard.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import serve_app

from convhook.api import create_app
from convhook.api.deps import ApiSettings
from convhook.lifecycle import Action
from convhook.outbox import Outbox
from convhook.store.producer import ProducerStore

UI = Path(__file__).resolve().parent.parent / "src" / "convhook" / "ui"


async def seed(store: ProducerStore, events: int) -> str:
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


async def measure(events: int) -> dict[str, float]:
    import aiohttp

    with tempfile.TemporaryDirectory(prefix="convhook-dashboard-") as tmp:
        db = str(Path(tmp) / "p.db")
        key = await seed(ProducerStore.at(db, synchronous="NORMAL"), events)
        app = create_app(ProducerStore.at(db), ApiSettings(dispatch=False))
        now = datetime.now(UTC)
        hour_ago = (now - timedelta(hours=1)).isoformat()
        ahead = (now + timedelta(hours=1)).isoformat()
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
            conversation = first["data"][0]["payload"]["id"]
            queries = {
                "last hour": {"createdAfter": hour_ago},
                "type": {"eventType": "conversation.completed", "createdAfter": hour_ago},
                "conversation": {"conversationId": conversation},
                "window": {"createdAfter": hour_ago, "createdBefore": ahead},
                "next page": {"createdAfter": hour_ago, "cursor": first["nextCursor"]},
                "empty window": {"createdAfter": ahead},
            }
            return {
                name: statistics.median([(await page(q))[0] for _ in range(5)])
                for name, q in queries.items()
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    weight = {f.name: f.stat().st_size for f in sorted(UI.iterdir()) if f.is_file()}
    console.print(f"page weight: {sum(weight.values()):,} bytes {weight}")
    sizes = [int(n) for n in args.sizes.split(",")]
    results = {n: asyncio.run(measure(n)) for n in sizes}
    table = Table(title="events page: server time per request, ms (median of 5; target < 300)")
    table.add_column("query")
    for n in sizes:
        table.add_column(f"{n:,} events", justify="right")
    for name in results[sizes[0]]:
        table.add_row(name, *(f"{results[n][name]:.1f}" for n in sizes))
    console.print(table)


if __name__ == "__main__":
    main()
