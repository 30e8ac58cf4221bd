"""The producer API refuses, with a 4xx JSON error naming the field and without storing
anything, every input it could not store, send or read back: text that is not valid Unicode
or holds NUL, JSON nested too deep, numbers that are not finite, integers past what the
databases or JSON parsers hold, timestamps outside the range that round-trips, loose
booleans, events over a receiver's size limit, stored rows that no longer validate.
Each case is a real request to a real uvicorn server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from yarl import URL

from convhook.api import ApiSettings, create_app
from convhook.api.app import ProducerApp
from convhook.api.fields import E164, EMAIL
from convhook.api.intake import MAX_DEPTH
from convhook.events import parse_event
from convhook.store.producer import ProducerStore
from convhook.wirecheck import check_event
from tests.support.servers import serve_app

JSON = "application/json"
TOO_BIG = 2**63
"""The smallest integer over 64 bits (signed)."""


def nest(levels: int, leaf: str = "1") -> str:
    """JSON objects nested ``levels`` deep around ``leaf``."""
    return '{"a":' * levels + leaf + "}" * levels


def cursor(seq: str) -> str:
    """A cursor in the API's encoding pointing after ``seq`` (which need not be a number)."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


@dataclass
class Api:
    """A running API over a fresh database, with a session carrying the workspace's key."""

    base: str
    app: ProducerApp
    store: ProducerStore
    workspace: str
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: bytes | Any = None, content_type: str = JSON
    ) -> tuple[int, str, Any]:
        """Status, content type and decoded body of one request (``path`` is sent as
        written: its percent-escapes are not touched)."""
        headers = {"content-type": content_type} if body is not None else {}
        async with self.http.request(
            method, URL(self.base + path, encoded=True), data=body, headers=headers
        ) as r:
            text = await r.text()
            decoded = json.loads(text) if r.content_type == JSON and text else text
            return r.status, r.content_type, decoded

    async def conversation(self, *actions: str, **fields: Any) -> str:
        """A new conversation moved through ``actions``."""
        status, _, doc = await self.call(
            "POST", "/api/v2/conversations", json.dumps({"agentId": "a", **fields}).encode()
        )
        assert status == 201, doc
        for action in actions:
            status, _, answer = await self.call(
                "POST", f"/api/v2/conversations/{doc['id']}/{action}"
            )
            assert status == 200, answer
        return str(doc["id"])

    async def customer(self, **fields: Any) -> str:
        """A new customer."""
        status, _, doc = await self.call(
            "POST", "/api/v2/customers", json.dumps({"name": "n", **fields}).encode()
        )
        assert status == 201, doc
        return str(doc["id"])

    async def stored(self) -> list[str]:
        """Everything the workspace has stored: conversations, customers, events, endpoints."""
        pages = [
            await self.store.list_conversations(self.workspace, limit=500),
            await self.store.list_customers(self.workspace, limit=500),
            await self.store.list_events(self.workspace, limit=500),
        ]
        _, _, endpoints = await self.call("GET", "/api/v2/endpoints?limit=500")
        return [p.to_json() for p in pages] + [json.dumps(endpoints)]

    async def refused(
        self,
        method: str,
        path: str,
        body: bytes | None,
        field: str,
        status: int = 422,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """Send a request the API must refuse: the status, a JSON error naming ``field``
        (or a field starting with it, followed by ``.`` or ``[``), nothing stored changed."""
        before = await self.stored()
        got, kind, doc = await self.call(method, path, body, content_type)
        where = f"{method} {path} {body[:80] if body else body!r}"
        assert (got, kind) == (status, JSON), f"{where}: {got} {doc}"
        assert isinstance(doc["error"], str), where
        assert doc["error"], where
        fields = [p["field"] for p in doc["problems"]]
        assert any(f == field or f.startswith((f"{field}.", f"{field}[")) for f in fields), (
            f"{where}: {field} not in {fields}"
        )
        assert await self.stored() == before, f"{where}: stored data changed"
        return dict(doc)

    async def refuses_all(
        self, cases: Iterable[tuple[str, str, bytes | None, str]], status: int = 422
    ) -> None:
        """:meth:`refused` for every ``(method, path, body, field)``."""
        for method, path, body, field in cases:
            await self.refused(method, path, body, field, status)


async def _event_bodies(api: Api) -> list[bytes]:
    page = json.loads((await api.store.list_events(api.workspace, limit=500)).to_json())
    return [(await api.store.get_event(api.workspace, e["eventId"])).encode() for e in page["data"]]


def _received(body: bytes) -> None:
    """The receiver takes ``body`` in: the fast check and the models both accept it."""
    check_event(body)
    parse_event(body)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """The API on a fresh database (either engine), serving on a loopback port."""
    store = ProducerStore.at(database_url, auto_upgrade=True)
    await store.open()
    workspace, key = await store.create_workspace("w")
    app = create_app(store, ApiSettings(max_active=100))
    assert isinstance(app, ProducerApp)
    async with (
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as http,
    ):
        yield Api(base, app, store, workspace.id, http)


async def test_text_that_is_not_valid_unicode_or_holds_nul_is_refused_in_bodies(api: Api) -> None:
    """A lone surrogate (escaped or as raw bytes) or a NUL in any string of any route's body,
    at any depth and in object keys, answers 422 naming that field and stores nothing."""
    ended = await api.conversation("join", "end")
    active = await api.conversation("join")
    cust = await api.customer()
    conv = "/api/v2/conversations"
    await api.refuses_all(
        [
            ("POST", f"{conv}/{ended}/analysis", rb'{"summary": "x\ud800y"}', "summary"),
            ("POST", f"{conv}/{ended}/analysis", b'{"summary": "\xed\xa0\x80"}', "summary"),
            ("POST", f"{conv}/{ended}/analysis", rb'{"transcript": "a\u0000"}', "transcript"),
            (
                "POST",
                f"{conv}/{ended}/analysis",
                rb'{"postCallMetadata": {"a": {"b\udc00": 1}}}',
                "postCallMetadata.a",
            ),
            (
                "POST",
                f"{conv}/{ended}/analysis",
                rb'{"postCallMetadata": {"l": ["ok", "\ud83d"]}}',
                "postCallMetadata.l[1]",
            ),
            (
                "POST",
                f"{conv}/{active}/end",
                rb'{"recordingUrl": "https://r/\u0000"}',
                "recordingUrl",
            ),
            (
                "POST",
                conv,
                rb'{"agentId": "a", "dynamicVariables": {"k": "\udfff"}}',
                "dynamicVariables.k",
            ),
            ("POST", conv, rb'{"agentId": "a\u0000"}', "agentId"),
            (
                "POST",
                conv,
                rb'{"conversations": [{"agentId": "a"}, {"agentId": "\ud800"}]}',
                "conversations[1].agentId",
            ),
            ("POST", "/api/v2/customers", rb'{"name": "\ud800"}', "name"),
            ("POST", "/api/v2/customers", rb'{"identifier": "a\u0000"}', "identifier"),
            (
                "POST",
                "/api/v2/customers",
                rb'{"metadata": {"deep": {"x": ["\u0000"]}}}',
                "metadata.deep.x[0]",
            ),
            (
                "POST",
                "/api/v2/customers/batch",
                rb'{"customers": [{"name": "n", "source": {"method": "\udfff"}}]}',
                "customers[0].source.method",
            ),
            ("PATCH", f"/api/v2/customers/{cust}", rb'{"metadata": {"\ud800": 1}}', "metadata"),
            ("POST", "/api/v2/events/evt_x/redeliver", rb'{"endpointId": "\u0000"}', "endpointId"),
            ("POST", "/api/v2/endpoints", rb'{"url": "https://example.com/\ud800"}', "url"),
        ]
    )


async def test_text_that_is_not_valid_unicode_or_holds_nul_is_refused_in_paths_and_queries(
    api: Api,
) -> None:
    """A path or query parameter that percent-decodes to bytes that are not UTF-8, or to a
    NUL, answers 422 naming the parameter on every route, before any database sees it."""
    conv = await api.conversation()
    await api.refuses_all(
        [
            ("GET", "/api/v2/conversations?agentId=%00", None, "agentId"),
            ("GET", "/api/v2/conversations?campaignId=%ED%A0%80", None, "campaignId"),
            ("GET", "/api/v2/events?conversationId=a%00b", None, "conversationId"),
            ("GET", "/api/v2/customers?cursor=%FF", None, "cursor"),
            ("GET", "/api/v2/conversations/%00", None, "conversation_id"),
            ("GET", "/api/v2/customers/a%ED%A0%80", None, "customer_id"),
            ("PATCH", "/api/v2/customers/%00", b'{"name": "n"}', "customer_id"),
            ("GET", "/api/v2/events/%00", None, "event_id"),
            ("GET", "/api/v2/events/%00/deliveries", None, "event_id"),
            ("POST", "/api/v2/events/%C0%80/redeliver", None, "event_id"),
            ("POST", "/api/v2/conversations/%00/join", None, "conversation_id"),
            ("POST", f"/api/v2/conversations/{conv}/join?x=%00", None, "x"),
            ("GET", "/api/v2/endpoints/%C0%80", None, "endpoint_id"),
            ("POST", "/api/v2/endpoints/%00/recover", b'{"since": "2024-01-01"}', "endpoint_id"),
        ]
    )


async def test_valid_text_in_every_spelling_is_accepted_and_received(api: Api) -> None:
    """Non-ASCII text raw or escaped, surrogate pairs and other escapes are taken as they
    are, and the events carrying them pass the receiver's checks."""
    cust = await api.customer(name="Zoë 🙂", metadata={"clé": ["ü", {"x": "\u2028"}]})
    conv = await api.conversation("join", "end", customerId=cust)
    status, _, doc = await api.call(
        "POST",
        f"/api/v2/conversations/{conv}/analysis",
        rb'{"summary": "caf\u00e9 \ud83d\ude42 \"q\" \\ \/", "transcript": "'
        + "日本語 é".encode()
        + b'"}',
    )
    assert status == 200, doc
    assert doc["summary"] == 'café 🙂 "q" \\ /'
    assert doc["customer"]["name"] == "Zoë 🙂"
    bodies = await _event_bodies(api)
    assert len(bodies) == 3
    for body in bodies:
        _received(body)


async def test_json_nested_deeper_than_the_limit_is_refused_on_every_route(api: Api) -> None:
    """A body nesting arrays or objects deeper than MAX_DEPTH (however deep, closed or not,
    sent in one piece or chunked) answers 422 naming ``body``, never 500."""
    new = await api.conversation()
    ended = await api.conversation("join", "end")
    cust = await api.customer()
    deep = nest(MAX_DEPTH)
    conv = "/api/v2/conversations"
    await api.refuses_all(
        [
            ("POST", f"{conv}/{new}/join", b"[" * 100_000 + b"]" * 100_000, "body"),
            ("POST", f"{conv}/{new}/join", b"[" * 100_000, "body"),
            (
                "POST",
                f"{conv}/{new}/join",
                b'{"a": "' + b"[" * 1000 + b'", "b":' + b"[" * 40,
                "body",
            ),
            (
                "POST",
                f"{conv}/{ended}/analysis",
                f'{{"postCallMetadata": {deep}}}'.encode(),
                "body",
            ),
            ("POST", conv, b"[" * 100_000 + b"]" * 100_000, "body"),
            ("POST", conv, f'{{"agentId": "a", "dynamicVariables": {deep}}}'.encode(), "body"),
            (
                "POST",
                conv,
                f'{{"conversations": [{{"agentId": "a", "dynamicVariables": {deep}}}]}}'.encode(),
                "body",
            ),
            ("POST", "/api/v2/customers", f'{{"metadata": {nest(900)}}}'.encode(), "body"),
            (
                "POST",
                "/api/v2/customers",
                b'{"metadata": {"k": ' + b"[" * 900 + b"]" * 900 + b"}}",
                "body",
            ),
            (
                "POST",
                "/api/v2/customers/batch",
                f'{{"customers": [{{"metadata": {deep}}}]}}'.encode(),
                "body",
            ),
            ("PATCH", f"/api/v2/customers/{cust}", f'{{"metadata": {deep}}}'.encode(), "body"),
            ("POST", "/api/v2/events/evt_x/redeliver", b"[" * 50 + b"]" * 50, "body"),
            (
                "POST",
                "/api/v2/endpoints",
                f'{{"url": "https://e.com", "x": {deep}}}'.encode(),
                "body",
            ),
        ]
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"[" * 10_000

    before = await api.stored()
    status, kind, doc = await api.call("POST", f"{conv}/{new}/join", chunks())
    assert (status, kind, doc["problems"][0]["field"]) == (422, JSON, "body"), doc
    assert await api.stored() == before


async def test_the_intake_checks_take_linear_time_on_hostile_bodies(api: Api) -> None:
    """Bodies built to make a scanner backtrack (thousands of escaped quotes after deep
    brackets, long digit runs, a megabyte of flat brackets) are answered within seconds."""
    conv = await api.conversation()
    hostile = [
        (b"[" * 40 + b'"' + b'\\"' * 300_000, 422),
        (b'{"a": [' + b"1" * 299 + b"," + (b"1" * 299 + b",") * 3000 + b"1]}", 422),
        (b"[" + b"[]," * 333_000 + b"[]]", 422),
    ]
    for body, status in hostile:
        for path in (f"/api/v2/conversations/{conv}/join", "/api/v2/customers"):
            started = time.monotonic()
            got, kind, doc = await api.call("POST", path, body)
            assert (got, kind) == (status, JSON), (path, body[:40], doc)
            assert time.monotonic() - started < 5, (path, body[:40])


async def test_json_nested_up_to_the_limit_is_accepted_and_received(api: Api) -> None:
    """A body nested exactly MAX_DEPTH deep (brackets inside strings not counting) is
    stored, and the events embedding it pass the receiver's checks."""
    inner = nest(MAX_DEPTH - 2, '"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["')
    status, _, cust = await api.call(
        "POST", "/api/v2/customers", f'{{"metadata": {{"m": {inner}}}}}'.encode()
    )
    assert status == 201, cust
    conv = await api.conversation("join", "end", customerId=cust["id"])
    status, _, doc = await api.call(
        "POST",
        f"/api/v2/conversations/{conv}/analysis",
        f'{{"postCallMetadata": {nest(MAX_DEPTH - 1)}}}'.encode(),
    )
    assert status == 200, doc
    for body in await _event_bodies(api):
        _received(body)


async def test_numbers_that_are_not_finite_are_refused(api: Api) -> None:
    """A number JSON parsing turns into infinity or NaN (NaN, Infinity, 1e400, a 400-digit
    decimal) answers 422 naming its field, since no receiver could parse it once sent; an
    integer too long to parse answers 400 naming ``body``."""
    ended = await api.conversation("join", "end")
    analysis = f"/api/v2/conversations/{ended}/analysis"
    await api.refuses_all(
        [
            ("POST", analysis, b'{"postCallMetadata": {"x": 1e400}}', "postCallMetadata.x"),
            ("POST", analysis, b'{"postCallMetadata": {"x": NaN}}', "postCallMetadata.x"),
            (
                "POST",
                analysis,
                b'{"postCallMetadata": {"l": [-Infinity]}}',
                "postCallMetadata.l[0]",
            ),
            ("POST", "/api/v2/customers", b'{"metadata": {"x": -1E+999}}', "metadata.x"),
            (
                "POST",
                "/api/v2/customers",
                b'{"metadata": {"x": 1' + b"1" * 250 + b"e99}}",
                "metadata.x",
            ),
            (
                "POST",
                "/api/v2/customers",
                b'{"metadata": {"x": 1' + b"0" * 400 + b".5}}",
                "metadata.x",
            ),
            (
                "POST",
                "/api/v2/conversations",
                b'{"agentId": "a", "dynamicVariables": {"x": Infinity}}',
                "dynamicVariables.x",
            ),
        ]
    )
    huge = b"9" * 5000
    await api.refused("POST", analysis, b'{"postCallMetadata": {"x": ' + huge + b"}}", "body", 400)
    await api.refused("POST", "/api/v2/customers", b'{"priority": ' + huge + b"}", "body", 400)
    status, _, doc = await api.call("POST", analysis, b'{"postCallMetadata": {"x": 1e308}}')
    assert status == 200, doc


async def test_timestamps_that_cannot_round_trip_are_refused(api: Api) -> None:
    """A timestamp written with a year outside 1000..9998 (its own offset pushing it past the
    date range included), or not as ISO-8601 text (a number of seconds), answers 422 naming
    it, in transition bodies and list filters alike."""
    new = await api.conversation()
    conv = "/api/v2/conversations"
    await api.refuses_all(
        [
            (
                "POST",
                f"{conv}/{new}/join",
                b'{"userJoinTime": "0999-12-31T23:59:59Z"}',
                "userJoinTime",
            ),
            (
                "POST",
                f"{conv}/{new}/join",
                b'{"userJoinTime": "0001-01-01T00:00:00+01:00"}',
                "userJoinTime",
            ),
            (
                "POST",
                f"{conv}/{new}/dial",
                b'{"callStartTime": "9999-12-31T23:59:59-01:00"}',
                "callStartTime",
            ),
            (
                "POST",
                f"{conv}/{new}/dial",
                b'{"callStartTime": "9999-06-01T00:00:00Z"}',
                "callStartTime",
            ),
            ("POST", f"{conv}/{new}/fail", b'{"callEndTime": -60000000000000}', "callEndTime"),
            ("POST", f"{conv}/{new}/join", b'{"userJoinTime": 1700000000}', "userJoinTime"),
            ("POST", f"{conv}/{new}/join", b'{"userJoinTime": "1700000000"}', "userJoinTime"),
            ("GET", f"{conv}?createdBefore=0.5", None, "createdBefore"),
            ("GET", f"{conv}?createdAfter=0001-01-01T00:00:00", None, "createdAfter"),
            ("GET", f"{conv}?createdBefore=0999-01-01", None, "createdBefore"),
            ("GET", "/api/v2/events?createdAfter=9999-12-31T23:59:59-01:00", None, "createdAfter"),
            ("GET", "/api/v2/events?createdBefore=0001-01-01", None, "createdBefore"),
        ]
    )


async def test_timestamps_at_the_edges_of_the_range_round_trip(api: Api) -> None:
    """The first and last instants of the range, in any offset, are stored in UTC, written
    with four-digit years (0999 and 9999 included), and received; a naive list filter is
    taken as UTC."""
    new = await api.conversation()
    conv = "/api/v2/conversations"
    status, _, doc = await api.call(
        "POST", f"{conv}/{new}/join", b'{"userJoinTime": "1000-01-01T00:30:00+01:00"}'
    )
    assert status == 200, doc
    assert doc["userJoinTime"] == "0999-12-31T23:30:00.000Z"
    status, _, doc = await api.call(
        "POST", f"{conv}/{new}/leave", b'{"userLeaveTime": "9998-12-31T23:59:59.999Z"}'
    )
    assert status == 200, doc
    assert doc["userLeaveTime"] == "9998-12-31T23:59:59.999Z"
    status, _, doc = await api.call(
        "POST", f"{conv}/{new}/end", b'{"callEndTime": "9998-12-31T23:00:00-01:00"}'
    )
    assert status == 200, doc
    assert doc["callEndTime"] == "9999-01-01T00:00:00.000Z"
    for body in await _event_bodies(api):
        _received(body)
    created = doc["createdAt"]
    status, _, page = await api.call("GET", f"{conv}?createdAfter={created[:23]}")
    assert (status, [c["id"] for c in page["data"]]) == (200, [new]), page


async def test_integers_over_64_bits_are_refused(api: Api) -> None:
    """Ids and cursors beyond what the databases store, and integer fields beyond what every
    JSON parser reads exactly (2^53 - 1), answer 4xx naming the parameter instead of
    overflowing in the driver; an integer field takes only integers."""
    cust = await api.customer()
    await api.refuses_all(
        [
            ("GET", f"/api/v2/deliveries/{TOO_BIG}", None, "delivery_id"),
            ("GET", f"/api/v2/deliveries/{-TOO_BIG - 1}", None, "delivery_id"),
            ("GET", "/api/v2/deliveries/" + "9" * 30, None, "delivery_id"),
            ("POST", "/api/v2/customers", f'{{"priority": {TOO_BIG}}}'.encode(), "priority"),
            (
                "PATCH",
                f"/api/v2/customers/{cust}",
                f'{{"priority": {-TOO_BIG - 1}}}'.encode(),
                "priority",
            ),
            ("POST", "/api/v2/customers", f'{{"priority": {2**53}}}'.encode(), "priority"),
            ("POST", "/api/v2/customers", b'{"priority": true}', "priority"),
            ("POST", "/api/v2/customers", b'{"priority": "5"}', "priority"),
            ("POST", "/api/v2/customers", b'{"priority": 5.5}', "priority"),
        ]
    )
    await api.refuses_all(
        [
            ("GET", f"/api/v2/conversations?cursor={cursor(str(TOO_BIG))}", None, "cursor"),
            ("GET", f"/api/v2/customers?cursor={cursor('9' * 30)}", None, "cursor"),
            ("GET", f"/api/v2/events?cursor={cursor('9' * 5000)}", None, "cursor"),
            ("GET", f"/api/v2/events?cursor={cursor('-1')}", None, "cursor"),
            ("GET", f"/api/v2/events?cursor={cursor('1_0')}", None, "cursor"),
        ],
        status=400,
    )
    status, _, doc = await api.call("POST", "/api/v2/customers", b'{"priority": 5.0}')
    assert (status, doc["priority"]) == (201, 5), doc
    status, _, doc = await api.call("GET", f"/api/v2/deliveries/{TOO_BIG - 1}")
    assert status == 404, doc
    status, _, doc = await api.call(
        "GET", f"/api/v2/conversations?cursor={cursor(str(TOO_BIG - 1))}"
    )
    assert (status, doc["data"]) == (200, []), doc


async def test_booleans_are_strict(api: Api) -> None:
    """Only JSON true and false are booleans: 0, 1, "true" and "false" answer 422 naming
    the field, on create, batch, update and conversation creation."""
    cust = await api.customer()
    cases: list[tuple[str, str, bytes | None, str]] = []
    for loose in ("0", "1", '"true"', '"false"', '"yes"'):
        cases += [
            (
                "POST",
                "/api/v2/customers",
                f'{{"isDoNotDisturbEnabled": {loose}}}'.encode(),
                "isDoNotDisturbEnabled",
            ),
            (
                "POST",
                "/api/v2/customers/batch",
                f'{{"customers": [{{"isDoNotDisturbEnabled": {loose}}}]}}'.encode(),
                "customers[0].isDoNotDisturbEnabled",
            ),
            (
                "PATCH",
                f"/api/v2/customers/{cust}",
                f'{{"isDoNotDisturbEnabled": {loose}}}'.encode(),
                "isDoNotDisturbEnabled",
            ),
            (
                "POST",
                "/api/v2/conversations",
                f'{{"agentId": "a", "ignoreDND": {loose}}}'.encode(),
                "ignoreDND",
            ),
        ]
    await api.refuses_all(cases)
    status, _, doc = await api.call(
        "PATCH", f"/api/v2/customers/{cust}", b'{"isDoNotDisturbEnabled": true}'
    )
    assert (status, doc["isDoNotDisturbEnabled"]) == (200, True), doc


async def test_a_change_whose_event_receivers_would_refuse_for_size_is_refused(api: Api) -> None:
    """A conversation too large for any of its events to fit a receiver's body limit is not
    created, and a transition that would record such an event answers 422 and stores
    nothing, though each request is within the API's own body limit."""
    wide = json.dumps("é" * 300_000, ensure_ascii=False)  # 600 kB sent, 1.8 MB as an event
    await api.refused(
        "POST",
        "/api/v2/conversations",
        f'{{"agentId": "a", "dynamicVariables": {{"k": {wide}}}}}'.encode(),
        "body",
    )
    ended = await api.conversation("join", "end")
    await api.refused(
        "POST", f"/api/v2/conversations/{ended}/analysis", f'{{"summary": {wide}}}'.encode(), "body"
    )
    status, _, doc = await api.call(
        "POST", f"/api/v2/conversations/{ended}/analysis", b'{"summary": "short"}'
    )
    assert status == 200, doc


async def test_transition_refusals_are_the_same_with_and_without_the_fast_path(
    api: Api,
) -> None:
    """Every refused transition body answers byte for byte the same whether the fast path or
    the FastAPI route (behind the intake middleware) takes it."""
    bodies = [
        rb'{"summary": "x\ud800y"}',
        b"[" * 100_000,
        b'{"postCallMetadata": {"x": NaN}}',
        b'{"postCallMetadata": {"x": ' + b"9" * 5000 + b"}}",
        b'{"userJoinTime": "0999-12-31T23:59:59Z"}',
        b'{"a": 1e400}',
    ]

    async def answers() -> list[tuple[int, str]]:
        ended = await api.conversation("join", "end")
        found = []
        for body in bodies:
            for content_type in (JSON, "text/plain"):
                async with api.http.post(
                    f"{api.base}/api/v2/conversations/{ended}/analysis",
                    data=body,
                    headers={"content-type": content_type},
                ) as r:
                    found.append((r.status, await r.text()))
        return found

    fast = api.app.fast_path
    with_fast_path = await answers()
    api.app.fast_path = None
    try:
        plain = await answers()
    finally:
        api.app.fast_path = fast
    assert with_fast_path == plain
    assert {status for status, _ in plain} == {400, 422}, plain


async def test_format_rules_are_in_the_json_schema_and_checked_at_run_time(api: Api) -> None:
    """The OpenAPI schemas of phone numbers and emails carry the pattern (and length) the
    API checks, and the API answers with the same messages as before for values breaking
    them; booleans are plain JSON booleans."""
    status, _, doc = await api.call("GET", "/openapi.json")
    assert status == 200
    schemas = doc["components"]["schemas"]

    def rule(model: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = schemas[model]["properties"][name]
        options: list[dict[str, Any]] = found.get("anyOf", [found])
        return next(s for s in options if s.get("type") != "null")

    for model, name in (
        ("CustomerIn", "phoneNumber"),
        ("ConversationIn", "toPhoneNumber"),
        ("ConversationIn", "fromPhoneNumber"),
    ):
        assert rule(model, name)["pattern"] == E164.pattern
        assert rule(model, name)["maxLength"] == 16
    email = rule("CustomerIn", "email")
    assert (email["format"], email["pattern"], email["maxLength"]) == ("email", EMAIL.pattern, 254)
    assert rule("CustomerIn", "isDoNotDisturbEnabled")["type"] == "boolean"
    for name, bad, message in (
        ("phoneNumber", "+0123", "must be an E.164 phone number such as +14155550100"),
        ("phoneNumber", "+14155550100\n", "must be an E.164 phone number such as +14155550100"),
        ("phoneNumber", "+1٤١٥٥٥٥٠١٠٠", "must be an E.164 phone number such as +14155550100"),
        ("email", "jane@", "must be an email address such as jane@example.com"),
        ("email", "jane@example.com\n", "must be an email address such as jane@example.com"),
    ):
        doc = await api.refused("POST", "/api/v2/customers", json.dumps({name: bad}).encode(), name)
        assert doc["problems"] == [{"field": name, "problem": message}]
    await api.customer(phoneNumber="+14155550100", email="jane@example.com")


async def test_a_stored_conversation_that_no_longer_validates_answers_422(api: Api) -> None:
    """A transition of a conversation stored with a value today's intake refuses (a
    three-digit year an older version wrote) answers 422 naming the field, not 500."""
    conv = await api.conversation()

    def damage(conn: Any) -> None:
        row = conn.execute("SELECT body FROM conversations WHERE id = ?", (conv,)).fetchone()
        body = {**json.loads(row["body"]), "createdAt": "999-01-01T00:00:00.000Z"}
        conn.execute("UPDATE conversations SET body = ? WHERE id = ?", (json.dumps(body), conv))

    await api.store.db.write(damage)
    await api.refused("POST", f"/api/v2/conversations/{conv}/join", None, "createdAt")
