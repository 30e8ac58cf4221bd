"""The published contract of the producer API on a real uvicorn server over a real SQLite
file: every error status documented with the error schema, ``Allow`` on a 405, cursor forms,
and the metrics token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from convhook import metrics
from convhook.api import create_app
from convhook.api.app import CURSOR_PATTERN, ENDPOINT_CURSOR_PATTERN
from convhook.api.endpoints import _number as endpoint_cursor_number
from convhook.store.producer import ProducerStore
from convhook.store.producer.paging import decode_cursor, encode_cursor
from tests.support.servers import free_port, serve_app

TOKEN = "metrics-token-for-tests"


@dataclass
class Api:
    """A running API and a session carrying its workspace key."""

    base: str
    http: aiohttp.ClientSession
    key: str


async def _api(path: Path, **options: Any) -> AsyncIterator[Api]:
    store = ProducerStore.at(str(path), synchronous="NORMAL")
    await store.open()
    _, key = await store.create_workspace("t")
    app = create_app(store, **options)
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        yield Api(base, http, key)


@pytest.fixture
async def api(db_path: Path) -> AsyncIterator[Api]:
    """The API with no metrics token."""
    async for a in _api(db_path):
        yield a


@pytest.fixture
async def guarded(db_path: Path) -> AsyncIterator[Api]:
    """The API with a metrics token."""
    async for a in _api(db_path, metrics_token=TOKEN):
        yield a


async def _openapi(api: Api) -> dict[str, Any]:
    async with api.http.get(f"{api.base}/openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


async def test_every_operation_documents_its_error_statuses(api: Api) -> None:
    """Every /api operation lists 400, 401, 413 and 422 (and 404 with a path parameter, 409
    and 429 for the lifecycle moves) with the error document as their schema."""
    doc = await _openapi(api)
    validate(doc)
    ref = {"$ref": "#/components/schemas/ErrorDocument"}
    operations = 0
    for path, items in doc["paths"].items():
        for method, operation in items.items():
            responses = operation["responses"]
            expected = {"400", "401", "413", "422"} | ({"404"} if "{" in path else set())
            if method == "post" and path.startswith("/api/v2/conversations/{conversation_id}/"):
                expected |= {"409", "429"}
            assert expected <= set(responses), (method, path)
            for status, answer in responses.items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == ref
            operations += 1
    assert operations >= 30
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    retry_after = doc["paths"]["/api/v2/conversations/{conversation_id}/dial"]["post"]
    assert "Retry-After" in retry_after["responses"]["429"]["headers"]


def _keywords(node: Any) -> Iterator[str]:
    """Every key of every schema object under ``node`` (property names excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from _keywords(sub)
                continue
            yield key
            yield from _keywords(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keywords(item)


async def test_bounds_are_published_as_json_schema_keywords(api: Api) -> None:
    """Numeric bounds reach the document as minimum/maximum (exclusive too), never as
    pydantic's own ge/le/gt/lt names, which JSON Schema tools ignore; 503 documents
    Retry-After."""
    doc = await _openapi(api)
    keywords = set(_keywords(doc["components"]["schemas"]))
    assert not keywords & {"ge", "le", "gt", "lt"}
    limit = doc["components"]["schemas"]["EndpointIn"]["properties"]["rateLimit"]["anyOf"][0]
    assert (limit["exclusiveMinimum"], limit["maximum"]) == (0, 10_000)
    answers = doc["paths"]["/api/v2/customers"]["get"]["responses"]
    assert "Retry-After" in answers["503"]["headers"]


async def test_error_answers_match_the_documented_schema(api: Api) -> None:
    """The 400, 401, 404 and 422 the API answers validate against the published ErrorDocument."""
    doc = await _openapi(api)
    # The references point into the document: validate from a root that holds them.
    schema = {"$ref": "#/components/schemas/ErrorDocument", "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    headers = {"x-api-key": api.key, "content-type": "application/json"}
    calls = [
        ("GET", "/api/v2/customers", {}, None, 401),
        ("GET", "/api/v2/customers/cust_nope", headers, None, 404),
        ("POST", "/api/v2/customers", headers, b"{", 400),
        ("POST", "/api/v2/endpoints", headers, b'{"url": 5}', 422),
        ("GET", "/api/v2/endpoints?after=x", headers, None, 400),
    ]
    for method, path, sent, body, status in calls:
        async with api.http.request(method, api.base + path, headers=sent, data=body) as r:
            assert r.status == status, path
            answer = await r.json()
        validator.validate(answer)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v2/customers", "GET, POST"),
        ("OPTIONS", "/api/v2/conversations", "GET, POST"),
        ("PUT", "/api/v2/customers/cust_1", "GET, PATCH"),
        ("PUT", "/api/v2/endpoints/ep_1", "DELETE, GET, PATCH"),
        ("PUT", "/api/v2/customers/batch", "POST"),
        ("GET", "/api/v2/conversations/conv_1/join", "POST"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    api: Api, method: str, path: str, allowed: str
) -> None:
    """A 405 names in ``Allow`` every method routed at the path, not only the first route's."""
    async with api.http.request(method, api.base + path) as r:
        assert r.status == 405
        assert r.headers["Allow"] == allowed
        assert (await r.json())["error"] == "Method Not Allowed"


async def test_cursor_parameters_publish_their_form(api: Api) -> None:
    """Every ``cursor`` query parameter carries the pattern of the cursors the lists return:
    the endpoints list's, whose cursors hold a whole endpoint id, has more digits."""
    doc = await _openapi(api)
    found = {
        path: p["schema"]["pattern"]
        for path, items in doc["paths"].items()
        for operation in items.values()
        for p in operation.get("parameters", ())
        if p["name"] == "cursor"
    }
    assert found.pop("/api/v2/endpoints") == ENDPOINT_CURSOR_PATTERN
    assert found
    assert set(found.values()) == {CURSOR_PATTERN}


@settings(max_examples=300, deadline=None)
@given(st.from_regex(ENDPOINT_CURSOR_PATTERN, fullmatch=True))
def test_an_endpoint_cursor_of_the_published_form_is_accepted(cursor: str) -> None:
    """Any string of the endpoints list's cursor form is read, as a row number or as an id."""
    assert 0 <= endpoint_cursor_number(cursor) < 10**34


@pytest.mark.parametrize("seq", [0, 1, 9, 10, 99, 100, 12345, 2**40 + 7, 10**17, 10**18 - 1])
def test_cursor_pattern_matches_the_cursors_handed_out(seq: int) -> None:
    """encode_cursor's output matches the published pattern for row numbers up to 18 digits."""
    assert re.fullmatch(CURSOR_PATTERN, encode_cursor(seq))


@settings(max_examples=300, deadline=None)
@given(st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_a_cursor_of_the_published_form_is_accepted(cursor: str) -> None:
    """Any string of the published cursor form decodes to a row number in 64 bits."""
    assert 0 <= decode_cursor(cursor) < 2**63


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_metrics_refuse_a_scrape_without_the_token(
    guarded: Api, authorization: str | None
) -> None:
    """With a metrics token, /metrics answers 401 (JSON, WWW-Authenticate) to any other
    Authorization."""
    headers = {} if authorization is None else {"Authorization": authorization}
    async with guarded.http.get(f"{guarded.base}/metrics", headers=headers) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "convhook_" not in await r.text()


async def test_metrics_answer_the_token(guarded: Api) -> None:
    """With a metrics token, ``Authorization: Bearer <token>`` reads the metrics."""
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        async with guarded.http.get(f"{guarded.base}/metrics", headers=headers) as r:
            assert r.status == 200
            assert "convhook_delivery_backlog" in await r.text()


async def test_metrics_stay_open_without_a_token(api: Api) -> None:
    """Without a metrics token, /metrics answers anyone, as before."""
    async with api.http.get(f"{api.base}/metrics") as r:
        assert r.status == 200
        assert "convhook_deliveries" in await r.text()


@pytest.mark.parametrize(
    ("token", "sent", "status"),
    [
        ("tok", None, 401),
        ("tok", "Bearer nope", 401),
        ("tok", "Bearer tok", 200),
        (None, None, 200),
    ],
)
async def test_dispatcher_metrics_server_checks_the_token(
    token: str | None, sent: str | None, status: int
) -> None:
    """The dispatcher's metrics port serves its counters only with the token, if one is set."""
    port = free_port()
    server = metrics.serve("127.0.0.1", port, token)
    try:
        headers = {"Authorization": sent} if sent else {}
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/metrics"
            async with http.get(url, headers=headers) as r:
                assert r.status == status
                text = await r.text()
            async with http.get(f"http://127.0.0.1:{port}/other") as r:
                assert r.status == 404
    finally:
        server.shutdown()
        server.server_close()
    assert ("convhook_delivery_attempts" in text) == (status == 200)
