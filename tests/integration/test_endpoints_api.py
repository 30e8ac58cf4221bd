"""The endpoints API on a real uvicorn server over a real SQLite file or PostgreSQL database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from convhook.api import create_app
from convhook.dispatcher import Dispatcher
from convhook.signing import Secret, Verifier
from convhook.store.delivery import endpoints as endpoint_store
from convhook.store.producer import ProducerStore, encode_cursor
from tests.support.delivery import LIFECYCLE, Receiver, Reply, record_event
from tests.support.servers import serve_app


@dataclass
class Api:
    """A running API, its store and an authenticated session."""

    base: str
    store: ProducerStore
    workspace: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body) as r:
            text = await r.text()
            return r.status, (
                await r.json() if text and r.content_type == "application/json" else text
            )


async def _api(url: str, allow_private: bool) -> AsyncIterator[Api]:
    store = ProducerStore.at(url, synchronous="NORMAL", auto_upgrade=True)
    await store.open()
    workspace, key = await store.create_workspace("t")
    app = create_app(store)
    app.state.allow_private_targets = allow_private
    async with (
        serve_app(app) as base,
        aiohttp.ClientSession(headers={"x-api-key": key}) as http,
    ):
        yield Api(base, store, workspace.id, http)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """The API with private targets allowed (loopback receivers), on either engine."""
    async for a in _api(database_url, True):
        yield a


@pytest.fixture
async def strict_api(database_url: str) -> AsyncIterator[Api]:
    """The API with the default SSRF guard."""
    async for a in _api(database_url, False):
        yield a


async def test_create_returns_secret_once_and_crud(api: Api) -> None:
    """Create answers the whsec_ secret; get/list never show it; update, disable, delete work."""
    status, created = await api.call(
        "POST",
        "/api/v2/endpoints",
        {
            "url": "http://127.0.0.1:9/hook",
            "eventTypes": ["conversation.completed"],
            "description": "crm",
            "rateLimit": 5,
        },
    )
    assert status == 201
    assert created["secret"].startswith("whsec_")
    Secret.parse(created["secret"])
    ep = created["id"]
    status, got = await api.call("GET", f"/api/v2/endpoints/{ep}")
    assert status == 200
    assert "secret" not in got
    assert got["eventTypes"] == ["conversation.completed"]
    status, listed = await api.call("GET", "/api/v2/endpoints")
    assert [e["id"] for e in listed["data"]] == [ep]
    assert created["secret"] not in str(listed)
    status, updated = await api.call(
        "PATCH", f"/api/v2/endpoints/{ep}", {"description": "new", "eventTypes": None}
    )
    assert (status, updated["description"], updated["eventTypes"]) == (200, "new", None)
    status, disabled = await api.call("POST", f"/api/v2/endpoints/{ep}/disable")
    assert (status, disabled["enabled"]) == (200, False)
    status, enabled = await api.call("POST", f"/api/v2/endpoints/{ep}/enable")
    assert (status, enabled["enabled"], enabled["disabledReason"]) == (200, True, None)
    status, rotated = await api.call("POST", f"/api/v2/endpoints/{ep}/rotate-secret", {})
    assert status == 200
    assert rotated["secret"] != created["secret"]
    assert rotated["previousSecretExpiresAt"] is not None
    assert (await api.call("DELETE", f"/api/v2/endpoints/{ep}"))[0] == 204
    assert (await api.call("GET", f"/api/v2/endpoints/{ep}"))[0] == 404


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://localhost/", "http://169.254.169.254/", "ftp://x.example/"],
)
async def test_private_target_refused_at_creation(strict_api: Api, url: str) -> None:
    """Without allow_private, loopback, metadata and non-http URLs answer 422 naming url."""
    status, body = await strict_api.call("POST", "/api/v2/endpoints", {"url": url})
    assert status == 422
    assert body["problems"][0]["field"] == "url"


async def test_new_endpoint_gets_only_new_events(api: Api) -> None:
    """An endpoint created after an event does not receive it; later events it does."""
    db = api.store.db
    ws = api.workspace
    old_id, _ = await db.write(lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], 0))
    receiver = Receiver()
    async with serve_app(receiver) as hook:
        status, _ = await api.call("POST", "/api/v2/endpoints", {"url": hook})
        assert status == 201
        new_id, _ = await db.write(lambda c: record_event(c, ws, "conv_1", 2, LIFECYCLE[1], 0))
        async with Dispatcher(db, allow_private=True) as dispatcher:
            dispatcher.wake()
            await receiver.wait_for(1)
    assert [r.headers["webhook-id"] for r in receiver.received] == [new_id]
    status, none = await api.call("GET", f"/api/v2/events/{old_id}/deliveries")
    assert (status, none["data"]) == (200, [])


async def test_test_event_deliveries_and_redeliver(api: Api) -> None:
    """A test event is signed with the endpoint's secret; its log has attempts; redeliver re-sends."""
    receiver = Receiver().then(Reply(500, body=b"x" * 10_000))
    async with serve_app(receiver) as hook:
        _, created = await api.call("POST", "/api/v2/endpoints", {"url": hook})
        ep = created["id"]
        status, queued = await api.call("POST", f"/api/v2/endpoints/{ep}/test", {})
        assert status == 202
        async with Dispatcher(api.store.db, allow_private=True) as dispatcher:
            dispatcher.wake()
            await receiver.wait_for(1)
        status, log = await api.call("GET", f"/api/v2/events/{queued['eventId']}/deliveries")
        [delivery] = log["data"]
        assert delivery["status"] == "pending"
        [attempt] = delivery["attemptLog"]
        assert attempt["statusCode"] == 500
        assert len(attempt["responseBody"]) == 4096
        status, listed = await api.call("GET", f"/api/v2/endpoints/{ep}/deliveries")
        assert [d["id"] for d in listed["data"]] == [queued["deliveryId"]]
        status, one = await api.call("GET", f"/api/v2/deliveries/{queued['deliveryId']}")
        assert one["lastStatusCode"] == 500
        status, again = await api.call(
            "POST", f"/api/v2/events/{queued['eventId']}/redeliver", {"endpointId": ep}
        )
        assert (status, again["queued"]) == (202, 1)
        async with Dispatcher(api.store.db, allow_private=True) as dispatcher:
            dispatcher.wake()
            await receiver.wait_for(2)
    first = receiver.received[0]
    Verifier(created["secret"]).verify(first.headers, first.body)
    assert first.event["eventType"] == "conversation.userJoined"


async def test_recover_requeues_failed(api: Api) -> None:
    """Recover answers how many failed deliveries since a time were queued again."""
    _, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1:9/"})
    ep = created["id"]
    await api.call("POST", f"/api/v2/endpoints/{ep}/test", {})
    await api.call("POST", f"/api/v2/endpoints/{ep}/disable")  # fails the waiting test event
    await api.call("POST", f"/api/v2/endpoints/{ep}/enable")
    status, body = await api.call(
        "POST", f"/api/v2/endpoints/{ep}/recover", {"since": "2020-01-01T00:00:00Z"}
    )
    assert (status, body["queued"]) == (202, 1)


async def test_metrics_exposes_backlog(api: Api) -> None:
    """/metrics lists events recorded, deliveries by status and the per-endpoint backlog."""
    _, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1:9/"})
    ws = api.workspace
    await api.store.db.write(lambda c: record_event(c, ws, "conv_1", 1, LIFECYCLE[0], 0))
    async with api.http.get(api.base + "/metrics") as r:
        text = await r.text()
        assert r.status == 200
    assert "convhook_events_recorded_total 1.0" in text
    assert 'convhook_deliveries{status="pending"} 1.0' in text
    assert f'convhook_delivery_backlog{{endpoint="{created["id"]}",state="due"}} 1.0' in text
    assert "convhook_delivery_oldest_pending_seconds" in text
    assert "convhook_delivery_attempt_seconds_bucket" in text


@pytest.mark.parametrize("after", ["garbage", "ep_", "ep_" + "f" * 29, "EP_" + "0" * 28, "1" * 30])
async def test_list_refuses_a_cursor_it_did_not_hand_out(api: Api, after: str) -> None:
    """A malformed deprecated ``after`` answers 400 naming the field, as a malformed
    ``cursor`` does."""
    async with api.http.get(f"{api.base}/api/v2/endpoints", params={"after": after}) as r:
        assert r.status == 400
        body = await r.json()
    assert body["problems"] == [{"field": "after", "problem": "malformed cursor"}]


async def test_list_pages_with_the_cursor_it_hands_out(api: Api) -> None:
    """``nextCursor`` of one page, sent back as the deprecated ``after``, gives the next page;
    empty is first."""
    ids = []
    for n in range(3):
        _, created = await api.call("POST", "/api/v2/endpoints", {"url": f"http://127.0.0.1/{n}"})
        ids.append(created["id"])
    status, first = await api.call("GET", "/api/v2/endpoints?limit=2&after=")
    assert (status, [e["id"] for e in first["data"]]) == (200, ids[:2])
    status, rest = await api.call("GET", f"/api/v2/endpoints?limit=2&after={first['nextCursor']}")
    assert (status, [e["id"] for e in rest["data"]], rest["nextCursor"]) == (200, ids[2:], None)


@pytest.mark.parametrize("before", [2**63, 2**64 + 1, -(2**63) - 1, 0])
async def test_deliveries_cursor_beyond_64_bits_is_refused(api: Api, before: int) -> None:
    """A ``before`` cursor outside the delivery ids' 64-bit range answers 422 naming it."""
    _, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1/"})
    path = f"/api/v2/endpoints/{created['id']}/deliveries?before={before}"
    status, body = await api.call("GET", path)
    assert status == 422
    assert [p["field"] for p in body["problems"]] == ["before"]


@pytest.mark.parametrize(
    "since",
    ["0001-01-01T00:00:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", 1700000000],
)
async def test_recover_since_out_of_range_is_refused(api: Api, since: object) -> None:
    """A ``since`` outside the years the API stores (or not ISO-8601 text) answers 422
    naming it, never a 500."""
    _, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1/"})
    path = f"/api/v2/endpoints/{created['id']}/recover"
    status, body = await api.call("POST", path, {"since": since})
    assert status == 422, body
    assert [p["field"] for p in body["problems"]] == ["since"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("enabled", 0),
        ("enabled", "false"),
        ("maxInFlight", True),
        ("maxInFlight", "5"),
        ("rateLimit", True),
        ("rateLimit", "2.5"),
    ],
)
async def test_endpoint_fields_take_json_types_only(api: Api, field: str, value: object) -> None:
    """Booleans are JSON booleans and numbers JSON numbers, on create and on update: 0,
    "false", true-as-a-number and numeric strings answer 422 naming the field."""
    status, body = await api.call(
        "POST", "/api/v2/endpoints", {"url": "http://127.0.0.1/", field: value}
    )
    assert status == 422, body
    assert [p["field"] for p in body["problems"]] == [field]
    _, created = await api.call("POST", "/api/v2/endpoints", {"url": "http://127.0.0.1/"})
    status, body = await api.call("PATCH", f"/api/v2/endpoints/{created['id']}", {field: value})
    assert status == 422, body
    assert [p["field"] for p in body["problems"]] == [field]


SECRET = str(Secret.generate())


async def _same_millisecond(api: Api, count: int) -> list[str]:
    """``count`` endpoints whose ids share one creation millisecond, in id order."""
    ms = int(time.time() * 1000)
    ids = [f"ep_{ms:012x}{n:016x}" for n in range(1, count + 1)]
    ws = api.workspace
    for endpoint_id in ids:
        await api.store.db.write(
            lambda c, e=endpoint_id: endpoint_store.create(
                c, endpoint_id=e, workspace_id=ws, url="http://127.0.0.1:9/", secret=SECRET, now=ms
            )
        )
    return ids


async def test_deleting_listed_endpoints_never_makes_the_next_page_skip_one(api: Api) -> None:
    """Endpoints created in one millisecond, paged one at a time while each listed one is
    deleted (a clean-up script's loop): every endpoint is listed once, none skipped."""
    ids = await _same_millisecond(api, 4)
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = await api.call("GET", f"/api/v2/endpoints?limit=1&cursor={cursor}")
        assert status == 200, page
        seen += [e["id"] for e in page["data"]]
        for e in page["data"]:
            assert (await api.call("DELETE", f"/api/v2/endpoints/{e['id']}"))[0] == 204
        if page["nextCursor"] is None:
            break
        cursor = page["nextCursor"]
    assert seen == ids


async def test_a_cursor_handed_out_before_still_pages(api: Api) -> None:
    """A cursor of the earlier form (the last listed id's millisecond and how many of that
    millisecond were listed) still gives the rest of the list."""
    ids = await _same_millisecond(api, 3)
    earlier = encode_cursor(
        int(ids[0][3:15], 16) * 100_000 + 1
    )  # after the first endpoint of that millisecond
    status, page = await api.call("GET", f"/api/v2/endpoints?cursor={earlier}")
    assert (status, [e["id"] for e in page["data"]]) == (200, ids[1:])
