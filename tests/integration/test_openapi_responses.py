"""The responses ``/openapi.json`` publishes against what a real uvicorn server sends, over a
real SQLite file or PostgreSQL database: a schema for every answer, prefixed delivery ids,
and one way of paging every list."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convhook.api import create_app
from convhook.api.app import CURSOR_PATTERN, ENDPOINT_CURSOR_PATTERN
from convhook.api.responses import DELIVERY_ID_PATTERN, parse_delivery_id
from convhook.store.delivery import DeliveryStore
from convhook.store.producer import ProducerStore
from tests.support.servers import serve_app

LISTS = (
    "/api/v2/conversations",
    "/api/v2/customers",
    "/api/v2/events",
    "/api/v2/endpoints",
    "/api/v2/endpoints/{endpoint_id}/deliveries",
)
"""Every operation that answers one page of a list."""


@dataclass
class Api:
    """A running API, its store, its published document and a session with the key."""

    base: str
    store: ProducerStore
    workspace: str
    http: aiohttp.ClientSession
    doc: dict[str, Any]

    async def call(
        self, method: str, path: str, body: Any = None, *, template: str | None = None
    ) -> tuple[int, Any]:
        """Send a request; check a JSON answer against the schema the document gives the
        operation (``template``: its path as published, when ``path`` fills one in)."""
        async with self.http.request(method, self.base + path, json=body) as r:
            answer = await r.json() if r.content_type == "application/json" else None
            status = r.status
        route = template or path.partition("?")[0]
        responses = self.doc["paths"][route][method.lower()]["responses"]
        if answer is not None:
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            # References point into the document: validate from a root that holds them.
            root = {**schema, "components": self.doc["components"]}
            jsonschema.Draft202012Validator(
                root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
            ).validate(answer)
        return status, answer

    async def pages(self, path: str, template: str | None = None, **query: str) -> list[Any]:
        """Every item of a list, two a page, following ``nextCursor`` with ``cursor``."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2", **query} | ({"cursor": cursor} if cursor else {})
            status, page = await self.call(
                "GET",
                path + "?" + "&".join(f"{k}={v}" for k, v in params.items()),
                template=template,
            )
            assert status == 200, page
            items += page["data"]
            cursor = page["nextCursor"]
            if cursor is None:
                return items
            operation = self.doc["paths"][template or path]["get"]
            (published,) = (p for p in operation["parameters"] if p["name"] == "cursor")
            assert re.fullmatch(published["schema"]["pattern"], cursor)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """The API with private targets allowed, no dispatcher (deliveries stay pending)."""
    store = ProducerStore.at(database_url, synchronous="NORMAL", auto_upgrade=True)
    await store.open()
    workspace, key = await store.create_workspace("t")
    app = create_app(store)
    app.state.allow_private_targets = True
    async with (
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as http,
    ):
        async with http.get(f"{base}/openapi.json") as r:
            doc = await r.json()
        yield Api(base, store, workspace.id, http, doc)


def _successes(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (method, path, status, answer)
        for path, operations in doc["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if int(status) < 400
    ]


async def test_every_success_documents_a_schema(api: Api) -> None:
    """Every /api answer but a 204 has a JSON schema that is not empty; a list page is
    ``{data, nextCursor}``."""
    found = _successes(api.doc)
    assert len(found) >= 30
    for method, path, status, answer in found:
        if status == "204":
            assert "content" not in answer, (method, path)
            continue
        if path == "/api/v2/stream":
            assert "text/event-stream" in answer["content"], answer
            continue
        schema = answer["content"]["application/json"]["schema"]
        assert schema, (method, path, status)
    for path in LISTS:
        ref = api.doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[-1]
        page = api.doc["components"]["schemas"][name]
        assert set(page["required"]) == {"data", "nextCursor"}, path


async def test_every_list_pages_with_cursor(api: Api) -> None:
    """Every list takes ``cursor`` (with the one published form) and no other paging
    parameter but a deprecated one; each page answers ``nextCursor``."""
    for path in LISTS:
        parameters = {p["name"]: p for p in api.doc["paths"][path]["get"]["parameters"]}
        expected = ENDPOINT_CURSOR_PATTERN if path == "/api/v2/endpoints" else CURSOR_PATTERN
        assert parameters["cursor"]["schema"]["pattern"] == expected, path
        for old in ("after", "before"):
            if old in parameters:
                assert parameters[old]["deprecated"] is True, (path, old)


async def _endpoint(api: Api) -> str:
    status, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1:9/"})
    assert status == 201, created
    endpoint_id: str = created["id"]
    return endpoint_id


async def _conversation_with_events(api: Api) -> tuple[str, list[str]]:
    status, conv = await api.call("POST", "/api/v2/conversations", {"agentId": "agent_1"})
    assert status == 201, conv
    template = "/api/v2/conversations/{conversation_id}/"
    for action in ("dial", "join", "leave", "end"):
        status, _ = await api.call(
            "POST", f"/api/v2/conversations/{conv['id']}/{action}", template=template + action
        )
        assert status == 200
    events = await api.pages("/api/v2/events", conversationId=conv["id"])
    return conv["id"], [e["eventId"] for e in events]


async def test_lists_page_through_everything_once(api: Api) -> None:
    """Conversations, customers, events, endpoints and an endpoint's deliveries, two a page
    through ``cursor``, list every item once, in their order, and validate against the
    document."""
    endpoint = await _endpoint(api)
    customers = []
    for n in range(5):
        status, customer = await api.call("POST", "/api/v2/customers", {"name": f"c{n}"})
        assert status == 201
        customers.append(customer["id"])
    conversations = [(await _conversation_with_events(api))[0] for _ in range(2)]
    assert [c["id"] for c in await api.pages("/api/v2/customers")] == customers
    assert [c["id"] for c in await api.pages("/api/v2/conversations")] == conversations
    events = await api.pages("/api/v2/events")
    assert [e["payload"]["id"] for e in events] == [c for c in conversations for _ in range(3)]
    endpoints = [endpoint, *[await _endpoint(api) for _ in range(4)]]
    assert [e["id"] for e in await api.pages("/api/v2/endpoints")] == endpoints
    deliveries = await api.pages(
        f"/api/v2/endpoints/{endpoint}/deliveries",
        template="/api/v2/endpoints/{endpoint_id}/deliveries",
    )
    # Newest first: the six events' deliveries to the first endpoint.
    assert [d["eventId"] for d in deliveries] == [e["eventId"] for e in reversed(events)]
    numbers = [int(d["id"].removeprefix("dlv_")) for d in deliveries]
    assert numbers == sorted(numbers, reverse=True)


async def test_endpoints_of_one_millisecond_page_without_gaps_or_repeats(api: Api) -> None:
    """Endpoints whose ids share their millisecond are each listed once at every page size,
    and the deprecated ``after`` (an endpoint id or a cursor) continues where it says."""
    deliveries = DeliveryStore(api.store.db)
    ms = 0x0190F3C2A1B4
    made = [f"ep_{ms - 1:012x}{0:016x}"]
    made += [f"ep_{ms:012x}{n:016x}" for n in (5, 6, 7, 9, 12)]
    made += [f"ep_{ms + 1:012x}{0:016x}"]
    for endpoint_id in made:
        await deliveries.create_endpoint(
            endpoint_id=endpoint_id,
            workspace_id=api.workspace,
            url="http://127.0.0.1:9/",
            secret="whsec_" + "A" * 43,
            now=1,
        )
    for limit in range(1, 9):
        listed, cursor = [], None
        while True:
            query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            status, page = await api.call("GET", f"/api/v2/endpoints?{query}")
            assert status == 200, page
            listed += [e["id"] for e in page["data"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert listed == made, limit
    status, page = await api.call("GET", f"/api/v2/endpoints?limit=2&after={made[2]}")
    assert [e["id"] for e in page["data"]] == made[3:5]
    status, rest = await api.call("GET", f"/api/v2/endpoints?after={page['nextCursor']}")
    assert [e["id"] for e in rest["data"]] == made[5:]


async def test_delivery_ids_are_prefixed_everywhere_and_round_trip(api: Api) -> None:
    """A test event's ``deliveryId``, an endpoint's and an event's deliveries all carry the
    same ``dlv_`` id, which reads the delivery back; a test event's conversation is the sample
    conversation its body names, never its own event id."""
    endpoint = await _endpoint(api)
    status, queued = await api.call(
        "POST",
        f"/api/v2/endpoints/{endpoint}/test",
        {},
        template="/api/v2/endpoints/{endpoint_id}/test",
    )
    assert status == 202
    dlv = queued["deliveryId"]
    assert re.fullmatch(DELIVERY_ID_PATTERN, dlv)
    status, one = await api.call(
        "GET", f"/api/v2/deliveries/{dlv}", template="/api/v2/deliveries/{delivery_id}"
    )
    assert (status, one["id"], one["eventId"]) == (200, dlv, queued["eventId"])
    assert one["conversationId"].startswith("conv_")
    assert one["conversationId"] != queued["eventId"]
    status, listed = await api.call(
        "GET",
        f"/api/v2/endpoints/{endpoint}/deliveries",
        template="/api/v2/endpoints/{endpoint_id}/deliveries",
    )
    assert [d["id"] for d in listed["data"]] == [dlv]
    status, log = await api.call(
        "GET",
        f"/api/v2/events/{queued['eventId']}/deliveries",
        template="/api/v2/events/{event_id}/deliveries",
    )
    assert [d["id"] for d in log["data"]] == [dlv]
    conversation, events = await _conversation_with_events(api)
    status, log = await api.call(
        "GET",
        f"/api/v2/events/{events[0]}/deliveries",
        template="/api/v2/events/{event_id}/deliveries",
    )
    [real] = log["data"]
    assert re.fullmatch(DELIVERY_ID_PATTERN, real["id"])
    assert real["conversationId"] == conversation


async def test_a_bare_delivery_number_is_still_read(api: Api) -> None:
    """``/deliveries/<number>`` (deprecated) answers the same delivery as its ``dlv_`` id."""
    endpoint = await _endpoint(api)
    _, queued = await api.call(
        "POST",
        f"/api/v2/endpoints/{endpoint}/test",
        {},
        template="/api/v2/endpoints/{endpoint_id}/test",
    )
    template = "/api/v2/deliveries/{delivery_id}"
    _, by_id = await api.call(
        "GET", f"/api/v2/deliveries/{queued['deliveryId']}", template=template
    )
    number = queued["deliveryId"].removeprefix("dlv_")
    status, by_number = await api.call("GET", f"/api/v2/deliveries/{number}", template=template)
    assert (status, by_number) == (200, by_id)


@pytest.mark.parametrize(
    "delivery_id",
    [
        "dlv_",
        "dlv_0",
        "dlv_01",
        "dlv_x",
        "DLV_1",
        "del_1",
        "dlv_-1",
        "dlv_1.0",
        "dlv_9223372036854775808",
        "0",
    ],
)
async def test_a_malformed_delivery_id_is_refused(api: Api, delivery_id: str) -> None:
    """A delivery id that is not ``dlv_`` and a number from 1 to 2^63 - 1 answers 422
    naming ``delivery_id``."""
    status, body = await api.call(
        "GET", f"/api/v2/deliveries/{delivery_id}", template="/api/v2/deliveries/{delivery_id}"
    )
    assert status == 422, body
    assert [p["field"] for p in body["problems"]] == ["delivery_id"]


async def test_endpoint_deliveries_take_the_deprecated_before(api: Api) -> None:
    """``before`` still takes a delivery number, and also the ``nextCursor`` it is given
    with ``cursor``; both give the same page as ``cursor``."""
    endpoint = await _endpoint(api)
    for _ in range(3):
        await api.call(
            "POST",
            f"/api/v2/endpoints/{endpoint}/test",
            {},
            template="/api/v2/endpoints/{endpoint_id}/test",
        )
    path = f"/api/v2/endpoints/{endpoint}/deliveries?limit=1"
    template = "/api/v2/endpoints/{endpoint_id}/deliveries"
    _, first = await api.call("GET", path, template=template)
    cursor = first["nextCursor"]
    _, by_cursor = await api.call("GET", f"{path}&cursor={cursor}", template=template)
    _, by_before = await api.call("GET", f"{path}&before={cursor}", template=template)
    number = first["data"][0]["id"].removeprefix("dlv_")
    _, by_number = await api.call("GET", f"{path}&before={number}", template=template)
    assert by_cursor == by_before == by_number
    assert by_cursor["data"][0]["id"] != first["data"][0]["id"]


async def test_documented_fields_are_the_fields_sent(api: Api) -> None:
    """An endpoint, a delivery and an attempt-carrying delivery send exactly the properties
    their schemas publish."""
    schemas = api.doc["components"]["schemas"]
    status, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1:9/"})
    assert status == 201
    assert set(created) == set(schemas["EndpointWithSecret"]["properties"])
    _, got = await api.call(
        "GET", f"/api/v2/endpoints/{created['id']}", template="/api/v2/endpoints/{endpoint_id}"
    )
    assert set(got) == set(schemas["Endpoint"]["properties"])
    _, queued = await api.call(
        "POST",
        f"/api/v2/endpoints/{created['id']}/test",
        {},
        template="/api/v2/endpoints/{endpoint_id}/test",
    )
    assert set(queued) == set(schemas["QueuedTestEvent"]["properties"])
    _, one = await api.call(
        "GET",
        f"/api/v2/deliveries/{queued['deliveryId']}",
        template="/api/v2/deliveries/{delivery_id}",
    )
    assert set(one) == set(schemas["DeliveryWithAttempts"]["properties"])
    _, page = await api.call(
        "GET",
        f"/api/v2/endpoints/{created['id']}/deliveries",
        template="/api/v2/endpoints/{endpoint_id}/deliveries",
    )
    assert set(page["data"][0]) == set(schemas["Delivery"]["properties"])


async def test_events_and_pruned_events_match_their_schemas(api: Api) -> None:
    """One event validates against the catalogue's schema; once its payload is pruned the
    list shows the documented stub and the event answers 410."""
    _, events = await _conversation_with_events(api)
    template = "/api/v2/events/{event_id}"
    status, event = await api.call("GET", f"/api/v2/events/{events[0]}", template=template)
    assert (status, event["eventId"]) == (200, events[0])
    # Every event is older than an hour by a clock an hour ahead.
    await api.store.prune_events(older_than_ms=3_600_000, clock=lambda: time.time() + 7200)
    listed = await api.pages("/api/v2/events")
    assert [(e["eventId"], e["payload"], e["pruned"]) for e in listed] == [
        (e, None, True) for e in events
    ]
    status, gone = await api.call("GET", f"/api/v2/events/{events[0]}", template=template)
    assert status == 410, gone


@given(st.integers(min_value=-(2**64), max_value=2**64))
def test_delivery_ids_read_back_exactly_the_64_bit_numbers(number: int) -> None:
    """``dlv_<n>`` matches the published pattern and reads back as ``n`` exactly for n from
    1 to 2^63 - 1, and for no other integer."""
    wire = f"dlv_{number}"
    valid = 1 <= number < 2**63
    assert bool(re.fullmatch(DELIVERY_ID_PATTERN, wire)) == valid
    assert parse_delivery_id(wire) == (number if valid else None)


@pytest.mark.parametrize("number", [1, 9, 10, 10**17, 10**18 - 1, 10**18, 2**63 - 2, 2**63 - 1])
def test_delivery_id_pattern_takes_the_boundaries(number: int) -> None:
    """The numbers at each digit-count and 64-bit boundary are delivery ids; one past the
    last is not."""
    assert re.fullmatch(DELIVERY_ID_PATTERN, f"dlv_{number}")
    assert not re.fullmatch(DELIVERY_ID_PATTERN, f"dlv_{number + 2**63 - 1}")


async def test_a_malformed_deprecated_cursor_is_refused_beside_a_cursor(api: Api) -> None:
    """``after`` and ``before`` that break their published pattern are refused even when a
    ``cursor`` is given too (a request the contract calls invalid is never half-read)."""
    endpoint = await _endpoint(api)
    status, answer = await api.call("GET", "/api/v2/endpoints?after=FALSE&cursor=czk")
    assert status in (400, 422), answer
    assert "after" in str(answer)
    path = f"/api/v2/endpoints/{endpoint}/deliveries?before=FALSE&cursor=czk"
    status, answer = await api.call(
        "GET", path, template="/api/v2/endpoints/{endpoint_id}/deliveries"
    )
    assert status in (400, 422), answer
    assert "before" in str(answer)
