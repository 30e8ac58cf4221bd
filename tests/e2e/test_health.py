"""/healthz and /readyz on `convhook serve` and on the dispatcher's metrics port: real
processes, a real app on a loopback port, a PostgreSQL server stopped and started again."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from convhook.api import create_app
from convhook.api.deps import ApiSettings
from convhook.store.producer import ProducerStore
from tests.e2e.test_api_serve import serve_process
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import cli_process, eventually, free_port, serve_app

TOKEN = "metrics-token-for-tests"


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, json.loads(await r.read())


async def test_serve_answers_health_without_a_key(tmp_path: Path) -> None:
    """`convhook serve` answers /healthz and /readyz (database, schema and its dispatcher
    all ok) without an API key or the metrics token, and names no path or data."""
    port = free_port()
    db = tmp_path / "convhook.db"
    args = ["serve", "--port", str(port), "--db", str(db), "--metrics-token", TOKEN]
    with serve_process(args, tmp_path, port):
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            assert await _get(http, f"{base}/healthz") == (200, {"status": "alive"})
            status, ready = await _get(http, f"{base}/readyz")
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 401
            async with http.get(f"{base}/openapi.json") as r:
                paths = (await r.json())["paths"]
    assert status == 200
    assert ready == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok", "dispatcher": "ok"},
    }
    assert "/healthz" not in paths
    assert "/readyz" not in paths


async def test_readyz_follows_a_postgres_outage() -> None:
    """While the PostgreSQL server is down /readyz answers 503 naming the database check (and
    neither the server nor the URL) and /healthz stays 200; once it is back, 200 again."""
    with TemporaryPostgres(durable=True) as server:
        url = server.create_database("health")
        store = ProducerStore.at(url, auto_upgrade=True)
        await store.open()
        try:
            app = create_app(store, ApiSettings(dispatch=True))
            async with serve_app(app) as base, aiohttp.ClientSession() as http:
                assert (await _get(http, f"{base}/readyz"))[0] == 200
                server.halt()
                status, body = await _get(http, f"{base}/readyz")
                assert status == 503
                assert body["status"] == "unavailable"
                assert body["checks"]["database"] == "unreachable"
                assert body["checks"]["dispatcher"] == "ok"
                text = json.dumps(body)
                assert "postgresql" not in text
                assert str(server.port) not in text
                assert (await _get(http, f"{base}/healthz"))[0] == 200
                server.restart()

                async def ready() -> bool:
                    return (await _get(http, f"{base}/readyz"))[0] == 200

                await eventually(ready, timeout=20, interval=0.2)
        finally:
            await store.close()


async def test_readyz_fails_on_a_schema_it_does_not_ship(db_path: Path) -> None:
    """A database whose producer schema was moved to another version after the app started
    (a newer convhook upgraded it) answers 503 with the schema check naming both versions."""
    store = ProducerStore.at(str(db_path), synchronous="NORMAL")
    await store.open()
    try:
        async with serve_app(create_app(store)) as base, aiohttp.ClientSession() as http:
            status, body = await _get(http, f"{base}/readyz")
            assert (status, body["checks"]) == (200, {"database": "ok", "schema": "ok"})
            with sqlite3.connect(db_path) as conn:
                (shipped,) = conn.execute(
                    "SELECT version FROM convhook_schema WHERE component = 'producer'"
                ).fetchone()
                conn.execute(
                    "UPDATE convhook_schema SET version = ? WHERE component = 'producer'",
                    (shipped + 1,),
                )
            status, body = await _get(http, f"{base}/readyz")
            assert status == 503
            assert body["checks"] == {
                "database": "ok",
                "schema": f"version {shipped + 1}, this code needs {shipped}",
            }
    finally:
        await store.close()


async def test_readyz_fails_when_the_dispatcher_stopped(db_path: Path) -> None:
    """An app that dispatches answers 503 naming the dispatcher once its loop stopped."""
    store = ProducerStore.at(str(db_path), synchronous="NORMAL")
    await store.open()
    try:
        app = create_app(store, ApiSettings(dispatch=True))
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            assert (await _get(http, f"{base}/readyz"))[0] == 200
            await app.state.dispatcher.close()
            status, body = await _get(http, f"{base}/readyz")
            assert status == 503
            assert body["checks"]["dispatcher"] == "not running"
            assert body["checks"]["database"] == "ok"
    finally:
        await store.close()


async def test_dispatcher_metrics_port_answers_health(tmp_path: Path) -> None:
    """`convhook dispatcher --metrics-port` answers /healthz and /readyz without its metrics
    token (which /metrics still needs), and /readyz goes 503 while its PostgreSQL server is
    down and 200 once it is back."""
    with TemporaryPostgres(durable=True) as server:
        url = server.create_database("dispatch_health")
        upgrade = ProducerStore.at(url, auto_upgrade=True)
        async with upgrade:
            pass
        port = free_port()
        args = ["dispatcher", "--db", url, "--metrics-port", str(port)]
        args += ["--metrics-host", "127.0.0.1", "--metrics-token", TOKEN]
        with cli_process(args, cwd=tmp_path, port=port) as proc:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                assert await _get(http, f"{base}/healthz") == (200, {"status": "alive"})

                async def ready() -> bool:
                    return (await _get(http, f"{base}/readyz"))[0] == 200

                await eventually(ready, timeout=20, interval=0.1)
                status, body = await _get(http, f"{base}/readyz")
                assert body["checks"] == {"database": "ok", "schema": "ok", "dispatcher": "ok"}
                async with http.get(f"{base}/metrics") as r:
                    assert r.status == 401
                server.halt()
                started = time.monotonic()
                status, body = await _get(http, f"{base}/readyz")
                assert time.monotonic() - started < 5
                assert status == 503
                assert body["checks"]["database"] == "unreachable"
                assert str(server.port) not in json.dumps(body)
                server.restart()
                await eventually(ready, timeout=20, interval=0.2)
            assert proc.proc.poll() is None, proc.stderr
