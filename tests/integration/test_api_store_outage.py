"""The API while its PostgreSQL server is down: 503 with Retry-After, then service again."""

from __future__ import annotations

import aiohttp

from convhook.api import create_app
from convhook.store.producer import ProducerStore
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import serve_app


async def test_database_outage_answers_503_and_recovers() -> None:
    """A request that cannot reach the database answers 503 JSON with Retry-After and no
    server or database name; once the server is back, requests succeed again."""
    with TemporaryPostgres(durable=True) as server:
        url = server.create_database("outage")
        store = ProducerStore.at(url, auto_upgrade=True)
        await store.open()
        try:
            _, key = await store.create_workspace("t")
            async with (
                serve_app(create_app(store)) as base,
                aiohttp.ClientSession(headers={"x-api-key": key}) as http,
            ):
                body = {"name": "Jane Roe", "phoneNumber": "+14155550100"}
                async with http.post(f"{base}/api/v2/customers", json=body) as r:
                    assert r.status == 201, await r.text()
                server.halt()
                async with http.get(f"{base}/api/v2/customers") as r:
                    assert r.status == 503
                    assert r.content_type == "application/json"
                    assert int(r.headers["Retry-After"]) >= 1
                    doc = await r.json()
                assert "retry" in doc["error"]
                assert "postgresql://" not in doc["error"]
                assert str(server.port) not in doc["error"]
                server.restart()
                for _ in range(50):
                    async with http.get(f"{base}/api/v2/customers") as r:
                        if r.status == 200:
                            assert len((await r.json())["data"]) == 1
                            break
                else:
                    raise AssertionError("the API did not recover after the restart")
        finally:
            await store.close()
