"""The lifecycle transitions answered ahead of FastAPI behave exactly like the FastAPI routes,
over a real uvicorn server, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from convhook.api import ApiSettings, create_app
from convhook.api.app import ProducerApp
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app

MAX_BODY = 4096
JSON = "application/json"


def _normalised(text: str) -> str:
    """The answer with ids and timestamps (which differ between two runs) blanked out."""
    text = re.sub(r"conv_[A-Za-z0-9_-]+", "CONV", text)
    text = re.sub(r"evt_[A-Za-z0-9_-]+", "EVT", text)
    return re.sub(r'"\d{4}-\d\d-\d\dT[^"]+"', '"TS"', text)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _answers(session: aiohttp.ClientSession, base: str, key: str) -> list[str]:
    """Status, headers that matter and body of many request shapes on fresh conversations."""
    ids = []
    for _ in range(4):
        async with session.post(
            f"{base}/api/v2/conversations", json={"agentId": "a"}, headers={"x-api-key": key}
        ) as r:
            ids.append((await r.json())["id"])
    a, b, c, d = (f"{base}/api/v2/conversations/{i}" for i in ids)
    auth = {"x-api-key": key}
    typed = {**auth, "content-type": JSON}
    cases: list[tuple[str, str, Any, dict[str, str]]] = [
        ("POST", f"{a}/join", None, auth),
        ("POST", f"{a}/join", None, auth),
        ("POST", f"{a}/leave", b'{"userLeaveTime": "2024-01-01T00:00:00Z"}', typed),
        ("POST", f"{a}/end", b"{}", typed),
        ("POST", f"{a}/analysis", b'{"summary": "s", "postCallMetadata": {"k": 1}}', typed),
        ("POST", f"{a}/analysis", b"null", typed),
        ("POST", f"{base}/api/v2/conversations/conv_nope/join", None, auth),
        ("POST", f"{b}/join", None, {}),
        ("POST", f"{b}/join", None, {"x-api-key": "chk_wrong"}),
        ("POST", f"{b}/join", None, {**auth, "x-workspace-id": "ws_other"}),
        ("POST", f"{b}/join", b"{", typed),
        ("POST", f"{b}/join", b"[1]", typed),
        ("POST", f"{b}/join", b'{"when": 1}', typed),
        ("POST", f"{b}/join", b'{"userJoinTime": "yesterday"}', typed),
        ("POST", f"{b}/fail", b'{"endReason": "bogus"}', typed),
        ("POST", f"{b}/join", b"{}", {**auth, "content-type": "text/plain"}),
        ("POST", f"{b}/join", b"{}", auth),
        ("POST", f"{b}/join", b"\xff", typed),
        ("POST", f"{b}/join", b'{"a": "' + b"x" * MAX_BODY + b'"}', typed),
        ("POST", f"{b}/join", _chunks(b"x" * MAX_BODY, b"x" * MAX_BODY), typed),
        ("POST", f"{b}/dial", None, {"authorization": f"Bearer {key}"}),
        ("POST", f"{c}/join", _chunks(b'{"userJoinTime":', b' "2024-01-01T00:00:00Z"}'), typed),
        ("POST", f"{d}/join", None, auth),
        ("GET", f"{d}/join", None, auth),
        ("POST", f"{d}/jump", None, auth),
        ("POST", f"{d}/end/", None, auth),
        ("POST", f"{d}/end?x=1", b'{"endReason": "user_hangup"}', {**typed, "x-extra": "1"}),
        # Free the busy slots so that the next run starts from the same counts.
        ("POST", f"{b}/fail", None, auth),
        ("POST", f"{c}/end", None, auth),
    ]
    answers = []
    for method, url, data, headers in cases:
        async with session.request(
            method, url, data=data, headers=headers, allow_redirects=False
        ) as r:
            kept = {k: r.headers.get(k) for k in ("content-type", "www-authenticate", "allow")}
            kept["retry-after"] = r.headers.get("retry-after")
            answers.append(f"{r.status} {method} {url} {kept} {await r.text()}")
    return [_normalised(a.replace(base, "")) for a in answers]


async def test_fast_path_answers_like_the_fastapi_routes(database_url: str) -> None:
    """Every request shape (success, 401, 404, 409, 413, 422, 429, bad JSON, chunked bodies,
    other methods and paths) gets the same status, headers and body with the fast path as
    from the FastAPI routes alone."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    _, key = await store.create_workspace("w")
    app = create_app(store, ApiSettings(max_active=2, max_body=MAX_BODY))
    assert isinstance(app, ProducerApp)
    fast = app.fast_path
    assert fast is not None
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        with_fast_path = await _answers(session, base, key)
        app.fast_path = None
        plain = await _answers(session, base, key)
        app.fast_path = fast
    assert with_fast_path == plain
    statuses = {int(a.split()[0]) for a in plain}
    assert statuses == {200, 307, 400, 401, 404, 405, 409, 413, 422, 429}, plain
