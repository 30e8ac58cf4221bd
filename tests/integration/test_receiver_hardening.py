"""The receiver against hostile input over real HTTP: poison events refused at intake or ended
failed within their attempts, non-RFC 8259 bodies refused, absurd ids refused quickly while
other requests are answered, and connections that idle or never finish closed by the server;
on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from convhook.receiver import HandlerStatus, Receiver
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.inbox import receiver_at
from tests.support.servers import CLIProcess, eventually, free_port, serve_app, wait_for_port

SECRET = Secret.generate()


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    return {"content-type": "application/json", **sign([SECRET], msg_id, body)}


def event_doc(event_type: str = "conversation.userJoined") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(sample_event(event_type).to_json())
    return doc


def make_receiver(url: str | Path, **kwargs: Any) -> Receiver:
    return receiver_at(url, SECRET, **kwargs)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, msg_id: str
) -> tuple[int, dict[str, Any] | str]:
    async with session.post(url + "/webhook", data=body, headers=signed(body, msg_id)) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.content_type == "application/json" else text)


def fields(doc: Any) -> list[str]:
    return [p["field"] for p in doc["problems"]]


# -- poison events (section 3) ------------------------------------------------------------

OUT_OF_RANGE = [
    pytest.param("userJoinTime", b'"0001-01-01T00:30:00+01:00"', id="before-year-1"),
    pytest.param("callEndTime", b'"9999-12-31T23:30:00-01:00"', id="after-year-9999"),
    pytest.param("agentJoinTime", b'"\\u0039999-12-31T23:59:00-00:01"', id="escaped-digit"),
    pytest.param("createdAt", b'"0001-01-01T00:00:00.000+00:01"', id="one-minute-offset"),
    pytest.param("customer.updatedAt", b'"9999-12-31T23:59:59.999-23:59"', id="customer"),
    pytest.param("transferUserLeaveTime", b'"0001-01-01T00:00:00+14:00"', id="newer-field"),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
async def test_times_outside_the_date_range_are_refused_at_intake(
    database_url: str, session: aiohttp.ClientSession, field: str, value: bytes
) -> None:
    """A signed event whose time leaves years 1-9999 once moved to UTC gets 400 naming the
    field, and nothing is stored."""
    receiver = make_receiver(database_url)
    receiver.on_any(lambda event: None)
    doc = event_doc()
    target = doc["payload"]
    *parents, key = field.split(".")
    for parent in parents:
        target = target[parent]
    target[key] = "PLACEHOLDER"
    body = json.dumps(doc).encode().replace(b'"PLACEHOLDER"', value)
    async with serve_app(receiver.asgi_app()) as url:
        status, answer = await post(session, url, body, doc["eventId"])
        assert status == 400
        assert f"payload.{field}" in fields(answer)
        assert await receiver.inbox.recent() == []


NOT_RFC_8259 = [
    pytest.param(b'"metadata": {"n": NaN}', id="NaN"),
    pytest.param(b'"metadata": {"n": Infinity}', id="Infinity"),
    pytest.param(b'"metadata": {"n": -Infinity}', id="minus-Infinity"),
    pytest.param(b'"metadata": {"n": 1e400}', id="overflowing-exponent"),
    pytest.param(b'"metadata": {"n": -1E+400}', id="minus-overflowing-exponent"),
    pytest.param(b'"metadata": {"n": 1' + b"1" * 250 + b"e99}", id="overflowing-mantissa"),
    pytest.param(b'"metadata": {"n": [1, 2,]}', id="trailing-comma-array"),
    pytest.param(b'"metadata": {"n": 1,}', id="trailing-comma-object"),
    pytest.param(b'"metadata": {"n": 1 /* note */}', id="block-comment"),
    pytest.param(b'"metadata": {"n": 1} // note\n', id="line-comment"),
    pytest.param(b"\"metadata\": {'n': 1}", id="single-quoted-key"),
    pytest.param(b'"metadata": {"n": \'x\'}', id="single-quoted-string"),
    pytest.param(b'"metadata": {"n": "\\ud800"}', id="lone-high-surrogate"),
    pytest.param(b'"metadata": {"n": "\\udc00x"}', id="lone-low-surrogate"),
    pytest.param(b'"metadata": {"n": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(b'"metadata": {"n": "\xff"}', id="invalid-utf8"),
    pytest.param(b'"metadata": {"n": 0x10}', id="hex-number"),
    pytest.param(b'"metadata": {"n": +1}', id="plus-sign"),
    pytest.param(b'"metadata": {"n": 01}', id="leading-zero"),
    pytest.param(b'"metadata": {"n": "a\x01"}', id="raw-control-character"),
]


@pytest.mark.parametrize("metadata", NOT_RFC_8259)
@pytest.mark.parametrize("event_type", ["conversation.completed", "conversation.transferred"])
async def test_bodies_that_are_not_rfc_8259_json_are_refused(
    database_url: str, session: aiohttp.ClientSession, metadata: bytes, event_type: str
) -> None:
    """NaN, Infinity, comments, trailing commas, single quotes, lone surrogates and the like
    get 400 naming the body, for known and unknown event types; nothing is stored."""
    receiver = make_receiver(database_url)
    doc = event_doc("conversation.completed")
    doc["eventType"] = event_type
    doc["payload"]["metadata"] = {"n": 0}
    body = json.dumps(doc).encode().replace(b'"metadata": {"n": 0}', metadata)
    assert metadata in body
    async with serve_app(receiver.asgi_app()) as url:
        status, answer = await post(session, url, body, doc["eventId"])
        assert status == 400
        assert fields(answer) == ["body"]
        assert await receiver.inbox.recent() == []


async def test_duplicate_keys_keep_the_last_value_as_json_parsers_do(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A body repeating a key is accepted; the handler sees the last value, the inbox the
    exact bytes."""
    receiver = make_receiver(database_url)
    seen: list[Any] = []
    receiver.on_any(seen.append)
    doc = event_doc()
    body = json.dumps(doc).encode().replace(b'"agentId": ', b'"agentId": "first", "agentId": ', 1)
    async with serve_app(receiver.asgi_app()) as url:
        assert (await post(session, url, body, doc["eventId"]))[0] == 200
        await eventually(lambda: len(seen) == 1)
        assert seen[0].payload.agent_id == doc["payload"]["agentId"]
        entry = await receiver.inbox.get(doc["eventId"])
        assert entry is not None
        assert entry.body == body


class Fatal(BaseException):
    """Raised by a handler: not an Exception, and not a cancellation."""


@pytest.mark.parametrize(
    "raised",
    [Fatal("boom"), KeyboardInterrupt(), SystemExit(2), RecursionError("deep"), MemoryError()],
    ids=lambda e: type(e).__name__,
)
async def test_a_handler_failing_with_any_exception_ends_failed_with_its_error(
    database_url: str, session: aiohttp.ClientSession, raised: BaseException
) -> None:
    """An accepted event whose handler raises anything ends failed after the last attempt,
    with the error recorded, and is never attempted past the maximum."""
    receiver = make_receiver(database_url)
    calls: list[int] = []

    @receiver.on_any
    async def poison(event: Any) -> None:
        calls.append(1)
        raise raised

    doc = event_doc()
    async with serve_app(receiver.asgi_app()) as url:
        assert (await post(session, url, json.dumps(doc).encode(), doc["eventId"]))[0] == 200

        async def finished() -> bool:
            entry = await receiver.inbox.get(doc["eventId"])
            return entry is not None and entry.status is HandlerStatus.FAILED

        await eventually(finished, timeout=10)
        await asyncio.sleep(0.3)  # a further attempt would show by now
        entry = await receiver.inbox.get(doc["eventId"])
    assert entry is not None
    assert (entry.status, entry.attempts, len(calls)) == (HandlerStatus.FAILED, 3, 3)
    assert entry.last_error is not None
    assert type(raised).__name__ in entry.last_error


# -- absurd ids and slow clients (section 5) -----------------------------------------------


@pytest.mark.parametrize("header", ["webhook-id", "svix-id"])
async def test_overlong_ids_are_refused_naming_the_field(
    database_url: str, session: aiohttp.ClientSession, header: str
) -> None:
    """An eventId or a webhook-id (svix-id) header over 256 characters gets 400 naming it; 256
    characters are accepted."""
    receiver = make_receiver(database_url, allow_unsigned=True)
    doc = event_doc()
    async with serve_app(receiver.asgi_app()) as url:
        doc["eventId"] = "e" * 257
        body = json.dumps(doc).encode()
        status, answer = await post(session, url, body, "short-id")
        assert (status, fields(answer)) == (400, ["eventId"])
        doc["eventId"] = "e" * 256
        body = json.dumps(doc).encode()
        headers = {"content-type": "application/json", header: "w" * 257}
        if header == "webhook-id":
            headers = {**signed(body, "w" * 257), **headers}
        async with session.post(url + "/webhook", data=body, headers=headers) as r:
            assert r.status == 400
            assert fields(await r.json()) == [header]
        assert (await post(session, url, body, "w" * 256))[0] == 200
        assert [e.event_id for e in await receiver.inbox.recent()] == ["e" * 256]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, CLIProcess]]:
    """`convhook listen` as a real process with one-second connection timeouts."""
    port = free_port()
    env = {
        "CONVHOOK_LISTEN_TIMEOUT_KEEP_ALIVE": "1",
        "CONVHOOK_LISTEN_READ_TIMEOUT": "1",
        "COLUMNS": "80",
    }
    args = ["listen", "--port", str(port), "--secret", str(SECRET), "--db", "inbox.db"]
    proc = CLIProcess(args, cwd=tmp_path, env=env)
    try:
        wait_for_port(port, 30.0, proc.proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("size", [20_000, 100_000])
async def test_huge_ids_are_refused_quickly_while_other_requests_are_answered(
    listener: tuple[str, CLIProcess], session: aiohttp.ClientSession, size: int
) -> None:
    """A repeated delivery with a huge eventId or webhook-id is answered 400 at once, and a
    normal event sent meanwhile is answered promptly: nothing stalls the event loop."""
    url, proc = listener
    doc = event_doc()
    doc["eventId"] = "x" * size
    huge = json.dumps(doc).encode()
    normal = event_doc()
    # Accepted, but printed as one bounded line.
    normal["payload"]["customer"]["name"] = "n" * size
    normal_body = json.dumps(normal).encode()

    async def timed(body: bytes, msg_id: str) -> tuple[int, float]:
        started = time.monotonic()
        status, _ = await post(session, url, body, msg_id)
        return status, time.monotonic() - started

    results = await asyncio.gather(
        timed(huge, "first"),
        timed(huge, "second"),
        timed(b"{}", "h" * size),
        timed(normal_body, normal["eventId"]),
    )
    assert [status for status, _ in results] == [400, 400, 400, 200]
    assert max(elapsed for _, elapsed in results) < 1.5, results
    # The next request is answered promptly too: no rendering was left queued on the loop.
    assert (await timed(normal_body, normal["eventId"]))[1] < 1.0
    await asyncio.sleep(0.3)
    await eventually(lambda: normal["eventId"] in proc.stdout)
    assert max(len(line) for line in proc.stderr.splitlines()) < 2_000
    assert max(len(line) for line in proc.stdout.splitlines()) < 2_000


async def test_sender_header_values_are_echoed_bounded(
    database_url: str, session: aiohttp.ClientSession
) -> None:
    """A huge content-type is answered 415 with a bounded echo of it."""
    receiver = make_receiver(database_url)
    async with serve_app(receiver.asgi_app()) as url:
        headers = {"content-type": "text/" + "x" * 20_000}
        async with session.post(url + "/webhook", data=b"{}", headers=headers) as r:
            assert r.status == 415
            assert len(await r.read()) < 500


def _closed_within(port: int, data: bytes, limit: float) -> float | None:
    """Seconds until the server closes a connection that sent ``data`` and then nothing, or
    None if it is still open after ``limit`` seconds."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(limit)
        if data:
            sock.sendall(data)
        started = time.monotonic()
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return time.monotonic() - started
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - started


SLOW_CLIENTS = [
    pytest.param(b"", id="never-sends"),
    pytest.param(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: app", id="headers-unfinished"
    ),
    pytest.param(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        id="body-unfinished",
    ),
    pytest.param(b"GET /webhook HTTP/1.1\r\nHost: x\r\n\r\n", id="idle-after-a-response"),
]


@pytest.mark.slow
@pytest.mark.parametrize("data", SLOW_CLIENTS)
async def test_idle_and_slow_connections_are_closed_by_the_listener(
    listener: tuple[str, CLIProcess], data: bytes
) -> None:
    """`convhook listen` closes a connection that idles, or never finishes its request,
    within its timeouts (one second each here)."""
    url, _ = listener
    port = int(url.rsplit(":", 1)[1])
    closed = await asyncio.to_thread(_closed_within, port, data, 5.0)
    assert closed is not None, "the connection was still open after 5 s"
    assert closed < 3.0


@pytest.mark.slow
async def test_oversized_headers_are_refused_by_the_listener(
    listener: tuple[str, CLIProcess], session: aiohttp.ClientSession
) -> None:
    """Request headers over the size bound get 400 and the connection is closed."""
    url, _ = listener
    port = int(url.rsplit(":", 1)[1])
    request = b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 100_000 + b"\r\n\r\n"

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            return sock.recv(65536)

    assert (await asyncio.to_thread(send)).startswith(b"HTTP/1.1 400")


@pytest.mark.slow
@pytest.mark.parametrize("data", SLOW_CLIENTS[:3])
@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_plain_uvicorn_leaves_unfinished_requests_open(http: str, data: bytes) -> None:
    """Measures the limit docs/receiver.md describes: uvicorn by itself keeps a connection
    that sends nothing, or never finishes its request, open past its keep-alive timeout."""
    port = free_port()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=http, timeout_keep_alive=1, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started)
        assert await asyncio.to_thread(_closed_within, port, data, 2.5) is None
    finally:
        server.should_exit = True
        await task


@pytest.mark.slow
@pytest.mark.parametrize(
    ("start", "piece"),
    [
        pytest.param(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\n",
            b"X-Pad: " + b"p" * 2000 + b"\r\n",
            id="headers",
        ),
        pytest.param(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"p" * 2000, id="one-header-value"
        ),
        pytest.param(b"POST /webhook?", b"q" * 2000, id="url"),
    ],
)
async def test_a_head_sent_in_pieces_past_the_bound_is_refused(
    listener: tuple[str, CLIProcess], start: bytes, piece: bytes
) -> None:
    """A head that grows past the size bound over many reads (more headers, one header value
    that never ends, or a URL that never ends) gets 400 and is closed before the client is
    done: the parser does not buffer it without bound."""
    url, _ = listener
    port = int(url.rsplit(":", 1)[1])

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(start)
            try:
                for _ in range(200):
                    sock.sendall(piece)
                    time.sleep(0.002)
            except OSError:
                pass  # closed by the server mid-head, as it should be
            return sock.recv(65536)

    assert (await asyncio.to_thread(send)).startswith(b"HTTP/1.1 400")


@pytest.mark.slow
async def test_a_large_body_with_its_headers_in_one_read_is_not_a_large_head(
    listener: tuple[str, CLIProcess],
) -> None:
    """A body far over the head bound, arriving with small headers, reaches the receiver
    (which judges the body), not the head bound."""
    url, _ = listener
    port = int(url.rsplit(":", 1)[1])
    body = b'{"eventId": "' + b"x" * 300_000 + b'"}'
    head = (
        b"POST /webhook HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + body)
            return sock.recv(65536)

    answer = await asyncio.to_thread(send)
    assert b"headers too large" not in answer
    assert answer.split(b"\r\n", 1)[0] in (
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 401 Unauthorized",
    )
    assert b"application/json" in answer
