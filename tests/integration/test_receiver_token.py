"""Shared-token receiving over real HTTP: the plain ASGI app on uvicorn and a Flask view on a
WSGI server, both on loopback; refusals store nothing and never repeat the token."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import aiohttp
import pytest
from flask import Flask

from convhook.errors import ConfigError
from convhook.receiver import HandlerStatus, Receiver
from convhook.receiver.frameworks import ThreadedReceiver, flask_view
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.inbox import FAST_RETRY, inbox_at
from tests.support.servers import eventually, serve_app

TOKEN = "tok_9fJ2kQ7vX1mZ4pL8sR3nB6wY0cT5hD"
OTHER = "tok_wrongwrongwrongwrongwrongwrong"
JSON = {"content-type": "application/json"}


def token_receiver(url: str | Path, **kwargs: Any) -> Receiver:
    """A receiver taking TOKEN into a fresh inbox at ``url``."""
    kwargs.setdefault("tokens", [TOKEN])
    return Receiver(
        kwargs.pop("secrets", None), inbox_at(url), poll_interval=0.05, retry=FAST_RETRY, **kwargs
    )


def event_body() -> tuple[str, bytes]:
    event = sample_event("conversation.completed")
    return event.event_id, event.to_json()


async def _done(receiver: Receiver, event_id: str) -> bool:
    entry = await receiver.inbox.get(event_id)
    return entry is not None and entry.status is HandlerStatus.DONE


@pytest.mark.parametrize(
    "auth",
    [
        {"authorization": f"Bearer {TOKEN}"},
        {"authorization": f"bearer  {TOKEN}"},
        {"x-api-key": TOKEN},
        {"authorization": "Basic dXNlcjpwYXNz", "x-api-key": TOKEN},
        {"authorization": f"Bearer {TOKEN}", "x-api-key": TOKEN},
    ],
    ids=[
        "bearer",
        "bearer-lower-case-two-spaces",
        "x-api-key",
        "x-api-key-beside-other-auth",
        "both-headers-same-token",
    ],
)
async def test_a_request_with_the_token_is_stored_and_handled(
    database_url: str, session: aiohttp.ClientSession, auth: dict[str, str]
) -> None:
    """An unsigned event carrying the token (Bearer, any scheme case, or x-api-key) gets 200,
    is stored and reaches its handler."""
    receiver = token_receiver(database_url)
    seen: list[str] = []
    receiver.on_any(lambda event: seen.append(event.event_id))
    event_id, body = event_body()
    async with serve_app(receiver.asgi_app()) as url:
        async with session.post(url + "/webhook", data=body, headers={**JSON, **auth}) as r:
            assert r.status == 200, await r.text()
        await eventually(lambda: _done(receiver, event_id))
    assert seen == [event_id]


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({}, "no webhook token"),
        ({"authorization": f"Bearer {OTHER}"}, "the Bearer token does not match"),
        ({"x-api-key": OTHER}, "the x-api-key header does not match"),
        ({"authorization": "Bearer"}, "no token after Bearer"),
        ({"authorization": "Bearer   "}, "no token after Bearer"),
        (
            {"authorization": "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode()},
            "uses Basic auth",
        ),
        ({"authorization": TOKEN}, "is not of the form `Bearer <token>`"),
        ({"authorization": f"Token {TOKEN}"}, "is not of the form `Bearer <token>`"),
        ({"authorization": f"Bearer {TOKEN}x"}, "the Bearer token does not match"),
        ({"authorization": f"Bearer {TOKEN[:-1]}"}, "the Bearer token does not match"),
        ({"x-api-key": "é" + TOKEN}, "the x-api-key header does not match"),
        ({"x-api-key": ""}, "the x-api-key header is empty"),
        (
            {"authorization": f"Bearer {OTHER}", "x-api-key": OTHER},
            "the token does not match",
        ),
        (
            {"authorization": f"Bearer {OTHER}", "x-api-key": TOKEN},
            "x-api-key and Authorization: Bearer carry different tokens",
        ),
    ],
    ids=[
        "missing",
        "wrong-bearer",
        "wrong-api-key",
        "bearer-without-token",
        "bearer-with-blanks",
        "basic",
        "bare-token-without-scheme",
        "other-scheme",
        "longer",
        "prefix",
        "non-ascii",
        "empty-api-key",
        "both-headers-same-wrong-token",
        "both-headers-different-tokens",
    ],
)
async def test_a_request_without_the_right_token_gets_401_and_nothing_is_stored(
    db_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    auth: dict[str, str],
    message: str,
) -> None:
    """A missing or wrong token gets 401 with a challenge and an error naming what was wrong,
    stores nothing, and neither the answer nor the log repeats a token."""
    receiver = token_receiver(db_path)
    _, body = event_body()
    with caplog.at_level(logging.INFO, logger="convhook"):
        async with serve_app(receiver.asgi_app()) as url:
            async with session.post(url + "/webhook", data=body, headers={**JSON, **auth}) as r:
                assert r.status == 401
                assert r.headers["www-authenticate"] == "Bearer"
                text = await r.text()
            assert await receiver.inbox.recent() == []
    doc = json.loads(text)
    assert message in doc["error"]
    assert doc["problems"] == []
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    assert "webhook token" in logged
    for secret in (TOKEN, OTHER, TOKEN[:-1]):
        assert secret not in text
        assert secret not in logged


async def test_with_a_secret_and_a_token_both_are_required(
    db_path: Path, session: aiohttp.ClientSession
) -> None:
    """A receiver given a secret and a token refuses a request with only one of them (401)
    and accepts one with both."""
    secret = Secret.generate()
    receiver = token_receiver(db_path, secrets=[secret])
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with serve_app(receiver.asgi_app()) as url:
        event_id, body = event_body()
        async with session.post(url + "/webhook", data=body, headers={**JSON, **bearer}) as r:
            assert r.status == 401
            assert "webhook-" in (await r.json())["error"]
        signed = sign([secret], event_id, body)
        async with session.post(url + "/webhook", data=body, headers={**JSON, **signed}) as r:
            assert r.status == 401
            assert "no webhook token" in (await r.json())["error"]
        assert await receiver.inbox.recent() == []
        both = {**JSON, **signed, **bearer}
        async with session.post(url + "/webhook", data=body, headers=both) as r:
            assert r.status == 200
        [entry] = await receiver.inbox.recent()
    assert entry.event_id == event_id
    assert "authorization" not in entry.headers  # the token is never stored


async def test_several_tokens_are_accepted_during_a_rotation(
    db_path: Path, session: aiohttp.ClientSession
) -> None:
    """Each token of a rotation is accepted, through either header."""
    receiver = token_receiver(db_path, tokens=[OTHER, TOKEN])
    async with serve_app(receiver.asgi_app()) as url:
        for auth in ({"x-api-key": OTHER}, {"authorization": f"Bearer {TOKEN}"}):
            _, body = event_body()
            async with session.post(url + "/webhook", data=body, headers={**JSON, **auth}) as r:
                assert r.status == 200
        assert len(await receiver.inbox.recent()) == 2


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([""], "is empty"),
        (["has space"], "visible ASCII"),
        (["tab\there"], "visible ASCII"),
        (["naïve-token"], "visible ASCII"),
        ([b"bytes-token"], "must be a string"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_at_construction(
    db_path: Path, tokens: list[Any], message: str
) -> None:
    """An empty token, or one with spaces, control or non-ASCII characters, is a ConfigError
    naming the problem, never the token."""
    with pytest.raises(ConfigError, match=message) as info:
        Receiver(store=db_path, tokens=tokens)
    assert "has space" not in str(info.value)
    assert "naïve" not in str(info.value)


def test_a_token_alone_needs_no_allow_unsigned(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token stands in for a secret: no allow_unsigned, no unsigned warning, a token_mode
    line instead."""
    receiver = Receiver(store=db_path, tokens=TOKEN)
    assert receiver.verifier is None
    assert receiver.token_check is not None
    with caplog.at_level(logging.INFO, logger="convhook"), ThreadedReceiver(receiver):
        pass
    actions = [getattr(rec, "action", None) for rec in caplog.records]
    assert "token_mode" in actions
    assert "unsigned_mode" not in actions


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def flask_url(db_path: Path) -> Iterator[str]:
    """A Flask app serving a token receiver's view from a WSGI server on loopback."""
    receiver = token_receiver(db_path)
    with ThreadedReceiver(receiver) as threaded:
        app = Flask("token")
        app.add_url_rule("/webhook", view_func=flask_view(threaded), methods=["POST"])
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/webhook"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _stored(db_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM convhook_inbox")]


def test_the_flask_view_checks_the_token_too(flask_url: str, db_path: Path) -> None:
    """Through the Flask view a wrong token gets 401 and stores nothing; the right one (any
    header-name case) gets 200 and is stored."""
    event_id, body = event_body()
    status, text = _post(flask_url, body, {**JSON, "X-Api-Key": OTHER})
    assert status == 401
    assert "x-api-key header does not match" in text
    assert _stored(db_path) == []
    status, _ = _post(flask_url, body, {**JSON, "Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert _stored(db_path) == [event_id]


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {**JSON, "content-length": "999999999"},
    ],
    ids=["wrong-type", "too-large"],
)
async def test_a_sender_without_the_token_learns_nothing_else(
    db_path: Path, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Without the token, a request the receiver would refuse anyway (wrong type, too large)
    gets 401 like any other: the token is checked before the body is judged."""
    receiver = token_receiver(db_path)
    async with serve_app(receiver.asgi_app()) as url:
        async with session.post(url + "/webhook", data=b"{}", headers=headers) as r:
            assert r.status == 401
        assert await receiver.inbox.recent() == []
