"""The receiver over real HTTP (uvicorn on loopback): acceptance, refusals, de-duplication,
handler retries, unknown events, FastAPI mounting and the sync-framework bridge; on SQLite
and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from convhook.errors import ConfigError
from convhook.events import UnknownEvent, UserJoined
from convhook.receiver import HandlerStatus, Receiver
from convhook.receiver.frameworks import ThreadedReceiver
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.inbox import receiver_at
from tests.support.servers import eventually, serve_app

SECRET = Secret.generate()
TEXT = "Webhook received successfully"


def signed(body: bytes, msg_id: str, **extra: str) -> dict[str, str]:
    return {"content-type": "application/json", **sign([SECRET], msg_id, body), **extra}


def event_body(event_type: str = "conversation.userJoined") -> tuple[str, bytes]:
    event = sample_event(event_type)
    return event.event_id, event.to_json()


def make_receiver(url: str | Path, **kwargs: Any) -> Receiver:
    return receiver_at(url, SECRET, **kwargs)


async def test_standardwebhooks_signed_event_is_accepted_and_handled(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """An event signed by the standardwebhooks package gets 200 text/plain and a typed handler."""
    receiver = make_receiver(database_url)
    seen: list[Any] = []
    receiver.on("conversation.userJoined")(seen.append)
    event_id, body = event_body()
    wh = Webhook(base64.b64encode(SECRET.key).decode())
    now = datetime.now(UTC)
    signature = wh.sign(event_id, now, body.decode())
    headers = {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    async with serve_app(receiver.asgi_app()) as url:
        async with session.post(url + "/webhook", data=body, headers=headers) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/plain")
            assert await r.text() == TEXT
        await eventually(lambda: len(seen) == 1)
        assert isinstance(seen[0], UserJoined)
        assert seen[0].event_id == event_id
        await eventually(lambda: _status(receiver, event_id, HandlerStatus.DONE))


async def _status(receiver: Receiver, event_id: str, status: HandlerStatus) -> bool:
    entry = await receiver.inbox.get(event_id)
    return entry is not None and entry.status is status


def _bad_requests() -> list[Any]:
    event_id, body = event_body()
    invalid = json.loads(body)
    del invalid["payload"]["agentId"]
    invalid_body = json.dumps(invalid).encode()
    old = sign([SECRET], event_id, body, timestamp=int(time.time()) - 3600)
    big = b"x" * (2 * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536

    return [
        pytest.param("GET", b"", {}, 405, None, id="wrong-method"),
        pytest.param(
            "POST",
            body,
            lambda: {**signed(body, event_id), "content-type": "text/plain"},
            415,
            None,
            id="wrong-content-type",
        ),
        pytest.param(
            "POST", b"{not json", lambda: signed(b"{not json", "m1"), 400, "body", id="not-json"
        ),
        pytest.param(
            "POST",
            invalid_body,
            lambda: signed(invalid_body, event_id),
            400,
            "payload.agentId",
            id="schema",
        ),
        pytest.param("POST", body, {"content-type": "application/json"}, 401, None, id="unsigned"),
        pytest.param(
            "POST",
            body,
            lambda: {**signed(body, event_id), "webhook-signature": "v1,AAAA"},
            401,
            None,
            id="bad-signature",
        ),
        pytest.param(
            "POST", body, {"content-type": "application/json", **old}, 401, None, id="too-old"
        ),
        pytest.param(
            "POST", lambda: io.BytesIO(big), lambda: signed(big, "m2"), 413, None, id="too-large"
        ),
        pytest.param("POST", chunks, lambda: signed(b"", "m3"), 413, None, id="too-large-chunked"),
    ]


@pytest.mark.parametrize(("method", "body", "headers", "status", "field"), _bad_requests())
async def test_bad_input_is_refused_and_nothing_stored(
    database_url: str,
    session: aiohttp.ClientSession,
    method: str,
    body: Any,
    headers: Any,
    status: int,
    field: str | None,
) -> None:
    """Each bad request gets its status with a JSON error naming the problem; nothing is stored."""
    receiver = make_receiver(database_url)
    data = body() if callable(body) else body
    # Signed when the test runs, not when it is collected: a long run outlasts the tolerance.
    headers = headers() if callable(headers) else headers
    async with serve_app(receiver.asgi_app()) as url:
        async with session.request(method, url + "/webhook", data=data, headers=headers) as r:
            assert r.status == status
            doc = await r.json()
            assert doc["error"]
            if field is not None:
                assert field in [p["field"] for p in doc["problems"]]
            if status == 405:
                assert r.headers["allow"] == "POST"
        assert await receiver.inbox.recent() == []


async def test_duplicates_are_answered_200_and_handled_once(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Redeliveries (same eventId, or same webhook-id) get 200 and do not run handlers again."""
    receiver = make_receiver(database_url)
    calls: list[str] = []

    @receiver.on_any
    async def record(event: Any) -> None:
        calls.append(event.event_id)

    event_id, body = event_body()
    async with serve_app(receiver.asgi_app()) as url:
        for headers in (
            signed(body, event_id),
            signed(body, event_id),
            signed(body, "another-delivery-id"),
        ):
            async with session.post(url + "/webhook", data=body, headers=headers) as r:
                assert (r.status, await r.text()) == (200, TEXT)
        other_id, other = event_body()
        async with session.post(url + "/webhook", data=other, headers=signed(other, event_id)) as r:
            assert r.status == 200
        await eventually(lambda: _status(receiver, event_id, HandlerStatus.DONE))
        await asyncio.sleep(0.2)
    assert calls == [event_id]
    async with receiver.inbox:
        assert await receiver.inbox.get(other_id) is None


async def test_failing_handler_is_retried_with_backoff_then_recorded(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A raising handler never changes the 200; it is retried, and its error is recorded."""
    receiver = make_receiver(database_url)
    flaky_calls: list[int] = []
    broken_calls: list[int] = []
    ok_calls: list[int] = []

    @receiver.on("conversation.completed")
    def flaky(event: Any, delivery: Any) -> None:
        flaky_calls.append(delivery.attempt)
        if delivery.attempt < 2:
            raise ConnectionError("CRM is down")

    @receiver.on("conversation.userLeft")
    async def broken(event: Any) -> None:
        broken_calls.append(1)
        raise ValueError("bad mapping")

    @receiver.on("conversation.userLeft")
    async def fine(event: Any) -> None:
        ok_calls.append(1)

    completed_id, completed = event_body("conversation.completed")
    left_id, left = event_body("conversation.userLeft")
    async with serve_app(receiver.asgi_app()) as url:
        for eid, body in ((completed_id, completed), (left_id, left)):
            async with session.post(url + "/webhook", data=body, headers=signed(body, eid)) as r:
                assert (r.status, await r.text()) == (200, TEXT)
        await eventually(lambda: _status(receiver, completed_id, HandlerStatus.DONE))
        await eventually(lambda: _status(receiver, left_id, HandlerStatus.FAILED))
        failed = await receiver.inbox.get(left_id)
    assert flaky_calls == [1, 2]
    assert len(broken_calls) == 3
    assert ok_calls == [1]  # it succeeded once and is not re-run on retries
    assert failed is not None
    assert failed.attempts == 3
    assert failed.last_error is not None
    assert "ValueError: bad mapping" in failed.last_error


async def test_unknown_event_type_is_stored_and_reaches_catch_all(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """An event type this version does not know is accepted, stored and given to the catch-all."""
    receiver = make_receiver(database_url)
    typed: list[Any] = []
    catch_all: list[Any] = []
    receiver.on("conversation.userJoined")(typed.append)
    receiver.on()(catch_all.append)
    body = json.dumps(
        {"eventId": "evt_new_1", "eventType": "conversation.transferred", "payload": {"x": 1}}
    ).encode()
    async with serve_app(receiver.asgi_app()) as url:
        async with session.post(url + "/webhook", data=body, headers=signed(body, "m")) as r:
            assert r.status == 200
        await eventually(lambda: len(catch_all) == 1)
        entry = await receiver.inbox.get("evt_new_1")
    assert isinstance(catch_all[0], UnknownEvent)
    assert typed == []
    assert entry is not None
    assert entry.body == body


async def test_sync_handlers_run_in_a_thread_and_async_ones_on_the_loop(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Sync handlers run off the event loop thread; async handlers run on it."""
    receiver = make_receiver(database_url)
    threads: dict[str, int] = {}

    @receiver.on("conversation.userJoined")
    def sync_handler(event: Any) -> None:
        threads["sync"] = threading.get_ident()

    @receiver.on("conversation.userJoined")
    async def async_handler(event: Any) -> None:
        threads["async"] = threading.get_ident()

    event_id, body = event_body()
    async with serve_app(receiver.asgi_app()) as url:
        async with session.post(url + "/webhook", data=body, headers=signed(body, event_id)):
            pass
        await eventually(lambda: len(threads) == 2)
    assert threads["async"] == threading.get_ident()
    assert threads["sync"] != threading.get_ident()


async def test_mounted_in_fastapi_with_explicit_lifecycle(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Mounted in FastAPI (lifecycle via `async with receiver`), it answers on the mount path."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    receiver = make_receiver(database_url)
    seen: list[Any] = []
    receiver.on_any(seen.append)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with receiver:
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/hooks/oration", receiver.asgi_app(path="/"))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"ok": "yes"}

    event_id, body = event_body()
    async with serve_app(app) as url:
        async with session.post(
            url + "/hooks/oration/", data=body, headers=signed(body, event_id)
        ) as r:
            assert (r.status, await r.text()) == (200, TEXT)
        async with session.get(url + "/health") as r:
            assert r.status == 200
        await eventually(lambda: len(seen) == 1)


async def test_unstarted_receiver_answers_503(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """Mounted without a lifecycle, the receiver refuses with 503 instead of losing events."""
    from fastapi import FastAPI

    receiver = make_receiver(database_url)
    app = FastAPI()
    app.mount("/hooks", receiver.asgi_app(path=None))
    event_id, body = event_body()
    async with (
        serve_app(app) as url,
        session.post(url + "/hooks/x", data=body, headers=signed(body, event_id)) as r,
    ):
        assert r.status == 503


def test_threaded_receiver_serves_sync_views(db_path: Path) -> None:
    """The sync-framework bridge answers from raw body bytes and any header case."""
    receiver = make_receiver(db_path)
    seen: list[Any] = []
    receiver.on_any(seen.append)
    event_id, body = event_body()
    headers = {k.title(): v for k, v in signed(body, event_id).items()}
    with ThreadedReceiver(receiver) as threaded:
        status, reply_headers, reply = threaded.handle(body, headers)
        assert (status, reply) == (200, TEXT.encode())
        assert reply_headers["content-type"].startswith("text/plain")
        reserialised = json.dumps(json.loads(body), indent=1).encode()
        assert threaded.handle(reserialised, headers)[0] == 401
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [e.event_id for e in seen] == [event_id]


def test_a_secret_is_required_unless_unsigned_is_allowed(db_path: Path) -> None:
    """Without secrets the receiver refuses to start unless unsigned events are explicitly allowed."""
    with pytest.raises(ConfigError, match="allow_unsigned"):
        Receiver(store=db_path)
    assert Receiver(store=db_path, allow_unsigned=True).verifier is None
