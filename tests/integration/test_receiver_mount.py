"""The receiver inside a FastAPI app and its health checks, over real HTTP (uvicorn on a
loopback port): a route answers on its exact path where a mount redirects, and /readyz
names the inbox, schema or worker check that failed."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.routing import Route

from convhook.receiver import Receiver
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.servers import eventually, serve_app

SECRET = Secret.generate()
TEXT = "Webhook received successfully"


def signed_event() -> tuple[str, bytes, dict[str, str]]:
    event = sample_event("conversation.completed")
    body = event.to_json()
    headers = {"content-type": "application/json", **sign([SECRET], event.event_id, body)}
    return event.event_id, body, headers


def host_app(receiver: Receiver, **kwargs: Any) -> FastAPI:
    """A FastAPI app that starts and stops ``receiver`` in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with receiver:
            yield

    return FastAPI(lifespan=lifespan, **kwargs)


async def test_a_route_takes_posts_on_its_exact_path(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Added as a Starlette route, `asgi_app(path=None)` answers POST /webhooks with 200 (no
    307 a sender would count as a failure) and its own 405 to a GET, and the host app's
    /readyz can report `receiver.readiness()`."""
    receiver = Receiver(SECRET, tmp_path / "inbox.db")
    seen: list[str] = []

    @receiver.on_any
    async def record(event: Any) -> None:
        seen.append(event.event_id)

    app = host_app(receiver, routes=[Route("/webhooks", receiver.asgi_app(path=None))])

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = await receiver.readiness()
        return Response(ready.body(), status_code=ready.status, media_type="application/json")

    event_id, body, headers = signed_event()
    async with serve_app(app) as base:
        url = base + "/webhooks"
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
            assert (r.status, await r.text()) == (200, TEXT)
        async with session.get(url, allow_redirects=False) as r:
            assert (r.status, r.headers["allow"]) == (405, "POST")
        async with session.get(base + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"database": "ok", "schema": "ok", "worker": "ok"}
        await eventually(lambda: seen == [event_id])


async def test_a_mount_redirects_the_path_without_its_slash(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Mounted with `app.mount("/webhooks", ...)`, POST /webhooks gets Starlette's 307 (why
    the docs use a route) while POST /webhooks/ is stored; the mounted app answers
    /webhooks/healthz and /webhooks/readyz, and with `health=False` it does not."""
    receiver = Receiver(SECRET, tmp_path / "inbox.db")
    app = host_app(receiver)
    app.mount("/webhooks", receiver.asgi_app(path=None))
    app.mount("/quiet", receiver.asgi_app(path=None, health=False))
    _, body, headers = signed_event()
    async with serve_app(app) as base:
        url = base + "/webhooks"
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
            assert r.status == 307
        async with session.post(url + "/", data=body, headers=headers) as r:
            assert (r.status, await r.text()) == (200, TEXT)
        async with session.get(url + "/healthz") as r:
            assert (r.status, await r.json()) == (200, {"status": "alive"})
        async with session.get(url + "/readyz") as r:
            assert (r.status, (await r.json())["status"]) == (200, "ready")
        async with session.get(base + "/quiet/readyz") as r:
            assert r.status == 405


async def test_readyz_names_a_schema_it_does_not_ship_and_a_stopped_worker(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A standalone receiver app answers /readyz 503 naming both schema versions once its
    inbox schema moved past this code's, and naming the worker once the worker stopped;
    /healthz stays 200."""
    db = tmp_path / "inbox.db"
    receiver = Receiver(SECRET, db)
    async with serve_app(receiver.asgi_app()) as base:
        async with session.get(base + "/readyz") as r:
            assert r.status == 200
        with sqlite3.connect(db) as conn:
            (shipped,) = conn.execute(
                "SELECT version FROM convhook_schema WHERE component = 'inbox'"
            ).fetchone()
            conn.execute(
                "UPDATE convhook_schema SET version = ? WHERE component = 'inbox'",
                (shipped + 1,),
            )
        async with session.get(base + "/readyz") as r:
            assert r.status == 503
            assert await r.json() == {
                "status": "unavailable",
                "checks": {
                    "database": "ok",
                    "schema": f"version {shipped + 1}, this code needs {shipped}",
                    "worker": "ok",
                },
            }
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE convhook_schema SET version = ? WHERE component = 'inbox'", (shipped,)
            )
        await receiver.worker.stop()
        async with session.get(base + "/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["worker"] == "not running"
        async with session.get(base + "/healthz") as r:
            assert r.status == 200


async def test_readyz_of_a_receiver_never_started(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A mounted receiver whose host app never started it answers /readyz 503 (and its POSTs
    503), so an orchestrator keeps it out of rotation."""
    receiver = Receiver(SECRET, tmp_path / "inbox.db")
    app = FastAPI()
    app.mount("/hooks", receiver.asgi_app(path=None))
    async with serve_app(app) as base, session.get(base + "/hooks/readyz") as r:
        assert r.status == 503
        assert await r.json() == {
            "status": "unavailable",
            "checks": {"database": "not open", "schema": "unknown", "worker": "not running"},
        }
