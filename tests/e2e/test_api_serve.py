"""The producer API as a real ``convhook serve`` process: lifecycle, outbox, bad input,
isolation and concurrency, over HTTP on a loopback port; every test runs once against SQLite
and once against PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from convhook.events import parse_event
from convhook.schema import json_schemas
from tests.support.postgres import TemporaryPostgres
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.slow

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")


class ServeProcess:
    """``convhook ARGS`` as a subprocess whose output files are closed when it stops.

    (``tests.support.servers.CLIProcess`` leaves its output files open, which
    ``filterwarnings = error`` turns into a failure.)
    """

    def __init__(self, args: list[str], cwd: Path, port: int | None = None) -> None:
        self.out_path = cwd / f"serve-{port}-{id(self)}.out"
        self.err_path = cwd / f"serve-{port}-{id(self)}.err"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convhook", *args],
            cwd=cwd,
            stdout=self._out,
            stderr=self._err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        if port is not None:
            try:
                wait_for_port(port, proc=self.proc)
            except (RuntimeError, TimeoutError) as exc:
                self.stop()
                raise RuntimeError(f"{exc}\nstderr:\n{self.stderr}") from exc

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, wait, then SIGKILL if it is still running."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _close(self) -> None:
        self._out.close()
        self._err.close()


@contextlib.contextmanager
def serve_process(args: list[str], cwd: Path, port: int | None = None) -> Iterator[ServeProcess]:
    """Run ``convhook ARGS`` for the ``with`` block."""
    proc = ServeProcess(args, cwd, port)
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Server:
    """A running ``convhook serve`` and the keys of two workspaces in it."""

    base: str
    key: str
    other_key: str
    db: str
    proc: ServeProcess


def create_workspace(db: Path | str, name: str) -> dict[str, str]:
    """Run ``convhook workspaces create NAME --json``."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", "workspaces", "create", name, "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    created: dict[str, str] = json.loads(done.stdout)
    return created


def upgrade(db: str) -> None:
    """Run ``convhook db upgrade`` for the producer schema (what an operator does before
    starting servers on PostgreSQL; SQLite upgrades itself)."""
    subprocess.run(
        [sys.executable, "-m", "convhook", "db", "upgrade", "--db", db, "--component", "producer"],
        capture_output=True,
        text=True,
        check=True,
    )


def fresh_database(engine: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    """A new empty database of ``engine``, schema applied: a SQLite path or a PostgreSQL URL."""
    if engine == "sqlite":
        return str(tmp / "api.db")
    pg: TemporaryPostgres = request.getfixturevalue("pg_server")
    url = pg.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One fresh database per module and engine (the ``database_url`` engines, module-wide so
    one server serves every test of the module)."""
    return fresh_database(str(request.param), tmp_path_factory.mktemp("db"), request)


@pytest.fixture(scope="module")
def server(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``convhook serve`` on a fresh database for the whole module."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    db = module_db
    with serve_process(["serve", "--port", str(port), "--db", db], tmp, port) as proc:
        match = KEY.search(proc.stderr)
        assert match, proc.stderr
        other = create_workspace(db, "other")
        yield Server(f"http://127.0.0.1:{port}", match[0], other["apiKey"], db, proc)


class Api:
    """A small client: JSON in, ``(status, JSON)`` out."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None) -> None:
        self.session = session
        self.base = base
        self.key = key

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"x-api-key": self.key} if self.key else {}
        return {**headers, **(extra or {})}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            data=data,
            headers=self.headers(headers),
        ) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def customer(self, **fields: Any) -> dict[str, Any]:
        status, doc = await self.post("/api/v2/customers", {"name": "Jane Doe", **fields})
        assert status == 201, doc
        return dict(doc)

    async def conversation(self, **fields: Any) -> dict[str, Any]:
        body = {"agentId": "agent_main", "toPhoneNumber": "+14155550101", **fields}
        status, doc = await self.post("/api/v2/conversations", body)
        assert status == 201, doc
        return dict(doc)

    async def all_pages(self, path: str) -> list[Any]:
        items: list[Any] = []
        cursor = None
        while True:
            sep = "&" if "?" in path else "?"
            status, page = await self.get(path + (f"{sep}cursor={cursor}" if cursor else ""))
            assert status == 200, page
            items.extend(page["data"])
            cursor = page["nextCursor"]
            if cursor is None:
                return items


@pytest.fixture
async def session() -> Any:
    """An aiohttp session closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def api(server: Server, session: aiohttp.ClientSession) -> Api:
    """A client of the first workspace."""
    return Api(session, server.base, server.key)


@pytest.fixture
def other(server: Server, session: aiohttp.ClientSession) -> Api:
    """A client of the second workspace."""
    return Api(session, server.base, server.other_key)


async def counts(api: Api) -> tuple[int, int, int]:
    """How many customers, conversations and events the workspace has."""
    return (
        len(await api.all_pages("/api/v2/customers?limit=500")),
        len(await api.all_pages("/api/v2/conversations?limit=500")),
        len(await api.all_pages("/api/v2/events?limit=500")),
    )


async def test_lifecycle_records_four_events_matching_the_api(api: Api) -> None:
    """dial -> join -> leave -> end -> analysis records the four events in order, each in the
    wire form, valid against the published schema and equal to the API's answer."""
    customer = await api.customer(email="jane@example.com", phoneNumber="+14155550123")
    conv = await api.conversation(
        customerId=customer["id"], dynamicVariables={"plan": "gold"}, telephonyType="outbound"
    )
    assert conv["conversationStatus"] == "created"
    assert conv["customer"] == customer
    assert json.loads(conv["dynamicVariables"]) == {"plan": "gold"}
    path = f"/api/v2/conversations/{conv['id']}"
    status, dialled = await api.post(path + "/dial")
    assert (status, dialled["conversationStatus"]) == (200, "dialing")
    answers = []
    for action, body in [
        ("join", {"userJoinTime": "2024-05-01T10:00:00Z"}),
        ("leave", None),
        ("end", {"recordingUrl": "https://rec.example.com/1.mp3"}),
        ("analysis", {"summary": "Booked.", "postCallCategory1": "booked", "transcript": "hi"}),
    ]:
        status, doc = await api.post(f"{path}/{action}", body)
        assert status == 200, doc
        answers.append(doc)
    assert answers[0]["userJoinTime"] == "2024-05-01T10:00:00.000Z"
    assert answers[2]["conversationStatus"] == "completed"
    assert answers[2]["recordingStatus"] == "completed"
    assert answers[2]["endReason"] == "user_hangup"
    events = await api.all_pages(f"/api/v2/events?conversationId={conv['id']}")
    assert [e["eventType"] for e in events] == [
        "conversation.userJoined",
        "conversation.userLeft",
        "conversation.completed",
        "conversation.analysisCompleted",
    ]
    assert [e["eventId"] for e in events] == sorted(e["eventId"] for e in events)
    schemas = json_schemas()
    for event, answer in zip(events, answers, strict=True):
        assert set(event) == {"eventId", "eventType", "payload"}
        jsonschema.Draft202012Validator(schemas[event["eventType"]]).validate(event)
        assert event["payload"] == answer
        parse_event(json.dumps(event).encode())
        status, one = await api.get(f"/api/v2/events/{event['eventId']}")
        assert (status, one) == (200, event)
    status, final = await api.get(path)
    assert (status, final) == (200, answers[-1])


async def test_fail_emits_completed_with_reason(api: Api) -> None:
    """A conversation that is not answered fails and emits conversation.completed."""
    conv = await api.conversation()
    path = f"/api/v2/conversations/{conv['id']}"
    await api.post(path + "/dial")
    status, doc = await api.post(path + "/fail")
    assert status == 200
    assert (doc["conversationStatus"], doc["endReason"]) == ("failed", "user_did_not_answer")
    events = await api.all_pages(f"/api/v2/events?conversationId={conv['id']}")
    assert [e["eventType"] for e in events] == ["conversation.completed"]
    status, page = await api.get("/api/v2/events?eventType=conversation.completed&limit=500")
    assert conv["id"] in {e["payload"]["id"] for e in page["data"]}


@pytest.mark.parametrize(
    ("steps", "action", "state"),
    [
        ([], "leave", "created"),
        (["join", "leave", "end"], "end", "ended"),
        (["join"], "analysis", "active"),
        (["join", "end", "analysis"], "analysis", "analysed"),
        (["dial"], "dial", "dialing"),
    ],
)
async def test_illegal_transitions_answer_409_and_write_nothing(
    api: Api, steps: list[str], action: str, state: str
) -> None:
    """A transition the state does not allow answers 409 naming the state and what is allowed,
    and records nothing."""
    conv = await api.conversation()
    path = f"/api/v2/conversations/{conv['id']}"
    for step in steps:
        assert (await api.post(f"{path}/{step}"))[0] == 200
    _, before = await api.get(path)
    events_before = await api.all_pages(f"/api/v2/events?conversationId={conv['id']}")
    status, doc = await api.post(f"{path}/{action}")
    assert status == 409, doc
    assert doc["state"] == state
    assert f"is {state}" in doc["error"]
    assert isinstance(doc["allowed"], list)
    assert (await api.get(path))[1] == before
    assert await api.all_pages(f"/api/v2/events?conversationId={conv['id']}") == events_before


async def test_unknown_conversation_answers_404(api: Api) -> None:
    """Transitions and reads of an unknown id answer 404 with a JSON error."""
    for status, doc in [
        await api.post("/api/v2/conversations/conv_nope/join"),
        await api.get("/api/v2/conversations/conv_nope"),
        await api.get("/api/v2/customers/cust_nope"),
        await api.get("/api/v2/events/evt_nope"),
    ]:
        assert status == 404
        assert "error" in doc


async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: Api, other: Api, server: Server
) -> None:
    """Non-JSON, invalid, unknown-field, oversized, foreign-reference, bad phone and bad
    email requests get their 4xx with the field named, and nothing is written."""
    foreign_customer = await other.customer()
    await other.conversation(agentId="agent_of_other")
    dnd = await api.customer(isDoNotDisturbEnabled=True)
    conv = await api.conversation()
    before = await counts(api)
    json_type = {"content-type": "application/json"}
    huge = io.BytesIO(json.dumps({"name": "x" * (1024 * 1024)}).encode())

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 100_000

    cases: list[tuple[Callable[[], Awaitable[tuple[int, Any]]], int, str]] = [
        (lambda: api.post("/api/v2/customers", data="{not json", headers=json_type), 400, "body"),
        (lambda: api.post("/api/v2/conversations", data="[1,", headers=json_type), 400, "body"),
        (
            lambda: api.post(
                f"/api/v2/conversations/{conv['id']}/join", data="{", headers=json_type
            ),
            400,
            "body",
        ),
        (lambda: api.post("/api/v2/customers", {"priority": "high"}), 422, "priority"),
        (lambda: api.post("/api/v2/customers", {"nmae": "typo"}), 422, "nmae"),
        (lambda: api.post("/api/v2/customers", {"email": "not-an-email"}), 422, "email"),
        (lambda: api.post("/api/v2/customers", {"phoneNumber": "0123456"}), 422, "phoneNumber"),
        (lambda: api.post("/api/v2/customers", data=huge, headers=json_type), 413, "body"),
        (lambda: api.post("/api/v2/customers", data=chunks(), headers=json_type), 413, "body"),
        (lambda: api.post("/api/v2/conversations", {"toPhoneNumber": "+1415"}), 422, "agentId"),
        (
            lambda: api.post(
                "/api/v2/conversations", {"agentId": "a", "toPhoneNumber": "555-0101"}
            ),
            422,
            "toPhoneNumber",
        ),
        (
            lambda: api.post("/api/v2/conversations", {"agentId": "a", "fromPhoneNumber": "+0999"}),
            422,
            "fromPhoneNumber",
        ),
        (
            lambda: api.post("/api/v2/conversations", {"agentId": "a", "conversationType": "fax"}),
            422,
            "conversationType",
        ),
        (lambda: api.post("/api/v2/conversations", {"agentId": "a", "extra": 1}), 422, "extra"),
        (
            lambda: api.post(
                "/api/v2/conversations", {"agentId": "a", "customerId": foreign_customer["id"]}
            ),
            422,
            "customerId",
        ),
        (lambda: api.post("/api/v2/conversations", {"agentId": "agent_of_other"}), 422, "agentId"),
        (
            lambda: api.post("/api/v2/conversations", {"agentId": "a", "customerId": dnd["id"]}),
            422,
            "customerId",
        ),
        (
            lambda: api.post(
                "/api/v2/conversations", {"conversations": [{"agentId": "agent_of_other"}]}
            ),
            422,
            "conversations[0].agentId",
        ),
        (
            lambda: api.post(f"/api/v2/conversations/{conv['id']}/fail", {"endReason": "bogus"}),
            422,
            "endReason",
        ),
        (
            lambda: api.post(
                f"/api/v2/conversations/{conv['id']}/join", {"userJoinTime": "yesterday"}
            ),
            422,
            "userJoinTime",
        ),
        (lambda: api.post(f"/api/v2/conversations/{conv['id']}/join", {"when": 1}), 422, "when"),
        (
            lambda: api.call("PATCH", f"/api/v2/customers/{dnd['id']}", {"email": "bad@"}),
            422,
            "email",
        ),
        (lambda: api.get("/api/v2/conversations?limit=501"), 422, "limit"),
        (lambda: api.get("/api/v2/events?cursor=!!!"), 400, "cursor"),
        (lambda: api.get("/api/v2/events?eventType=conversation.nope"), 422, "eventType"),
    ]
    for request, status, field in cases:
        got, doc = await request()
        assert got == status, (field, doc)
        assert isinstance(doc, dict), doc
        assert field in [p["field"] for p in doc["problems"]], doc
        assert doc["error"]
    assert await counts(api) == before
    assert (await api.conversation(customerId=dnd["id"], ignoreDND=True))["customerId"] == dnd["id"]


async def test_missing_or_wrong_key_answers_401(api: Api, server: Server) -> None:
    """No key, a wrong key, a key of another workspace id, or two different keys answer
    401; Bearer works, alone or repeating x-api-key."""
    anonymous = Api(api.session, server.base, None)
    assert (await anonymous.get("/api/v2/conversations"))[0] == 401
    assert (await Api(api.session, server.base, "chk_wrong").get("/api/v2/events"))[0] == 401
    mismatch = await api.get("/api/v2/events", headers={"x-workspace-id": "ws_someone_else"})
    assert mismatch[0] == 401
    bearer = await anonymous.get(
        "/api/v2/events", headers={"authorization": f"Bearer {server.key}"}
    )
    assert bearer[0] == 200
    status, doc = await anonymous.post("/api/v2/customers", {"name": "nobody"})
    assert status == 401
    assert doc["error"]
    both = await api.get("/api/v2/events", headers={"authorization": "Bearer chk_wrong"})
    assert both[0] == 401  # two different keys: which one was meant cannot be known
    conv = await api.conversation()
    status, doc = await api.post(
        f"/api/v2/conversations/{conv['id']}/join", headers={"authorization": "Bearer chk_wrong"}
    )
    assert status == 401, doc  # the transition fast path reads the keys the same way
    same = await api.get("/api/v2/events", headers={"authorization": f"Bearer {server.key}"})
    assert same[0] == 200


async def test_a_workspace_sees_none_of_anothers_data(api: Api, other: Api) -> None:
    """Every read and change of another workspace's objects answers 404, and lists hold only
    the workspace's own objects."""
    customer = await api.customer()
    conv = await api.conversation(customerId=customer["id"])
    await api.post(f"/api/v2/conversations/{conv['id']}/join")
    event = (await api.all_pages(f"/api/v2/events?conversationId={conv['id']}"))[0]
    for status, _ in [
        await other.get(f"/api/v2/customers/{customer['id']}"),
        await other.call("PATCH", f"/api/v2/customers/{customer['id']}", {"name": "x"}),
        await other.get(f"/api/v2/conversations/{conv['id']}"),
        await other.post(f"/api/v2/conversations/{conv['id']}/leave"),
        await other.get(f"/api/v2/events/{event['eventId']}"),
    ]:
        assert status == 404
    workspace_id = conv["workspaceId"]
    for path in ("/api/v2/customers", "/api/v2/conversations", "/api/v2/events"):
        for item in await other.all_pages(path + "?limit=500"):
            doc = item.get("payload", item)
            assert doc["workspaceId"] != workspace_id
    assert await other.all_pages(f"/api/v2/events?conversationId={conv['id']}") == []
    assert (await api.get(f"/api/v2/conversations/{conv['id']}"))[1]["userLeaveTime"] is None


async def test_concurrent_transitions_leave_one_event_per_success(api: Api) -> None:
    """50 concurrent transitions on one conversation: exactly one event per successful
    emitting transition, in a legal order, and the conversation equals the last event."""
    conv = await api.conversation()
    path = f"/api/v2/conversations/{conv['id']}"
    actions = ["join", "leave", "end", "analysis", "fail"] * 10
    outcomes = await asyncio.gather(*(api.post(f"{path}/{a}") for a in actions))
    wins = [a for a, (status, _) in zip(actions, outcomes, strict=True) if status == 200]
    assert {s for s, _ in outcomes} <= {200, 409}
    assert wins.count("join") + wins.count("fail") == 1
    events = await api.all_pages(f"/api/v2/events?conversationId={conv['id']}")
    assert len(events) == len(wins)
    types = [e["eventType"].split(".")[1] for e in events]
    expected = {"join": "userJoined", "leave": "userLeft", "end": "completed"}
    expected |= {"analysis": "analysisCompleted", "fail": "completed"}
    assert sorted(types) == sorted(expected[a] for a in wins)
    order = ["userJoined", "userLeft", "completed", "analysisCompleted"]
    assert types == sorted(types, key=order.index)
    _, final = await api.get(path)
    assert final == events[-1]["payload"]


async def test_batches_report_each_bad_item(api: Api) -> None:
    """A batch saves its good items and names each bad item's index and field."""
    status, doc = await api.post(
        "/api/v2/conversations",
        {
            "conversations": [
                {"agentId": "agent_main"},
                {"agentId": "agent_main", "toPhoneNumber": "nope"},
                {"agentId": "agent_main", "customerId": "cust_missing"},
            ]
        },
    )
    assert status == 201, doc
    assert len(doc["results"]) == 1
    assert [(e["index"], e["field"]) for e in doc["errors"]] == [
        (1, "toPhoneNumber"),
        (2, "customerId"),
    ]
    status, doc = await api.post(
        "/api/v2/customers/batch",
        {"customers": [{"identifier": "dup-1"}, {"identifier": "dup-1"}, {"priority": "x"}]},
    )
    assert status == 200, doc
    assert [c["identifier"] for c in doc["results"]] == ["dup-1"]
    assert [(e["index"], e["field"]) for e in doc["errors"]] == [
        (1, "identifier"),
        (2, "priority"),
    ]
    status, doc = await api.post(
        "/api/v2/customers/batch",
        {"strategy": "upsert", "customers": [{"identifier": "dup-1", "name": "Renamed"}]},
    )
    assert status == 200, doc
    assert doc["results"][0]["name"] == "Renamed"
    assert doc["results"][0]["identifier"] == "dup-1"
    status, doc = await api.post(
        "/api/v2/customers/batch", {"customers": [{"identifier": "dup-1"}, {"identifier": "dup-1"}]}
    )
    assert status == 409, doc  # every item conflicts with what is stored, as a single create
    assert [(e["index"], e["field"]) for e in doc["errors"]] == [
        (0, "identifier"),
        (1, "identifier"),
    ]
    status, doc = await api.post(
        "/api/v2/customers/batch", {"customers": [{"identifier": "dup-1"}, {"priority": "x"}]}
    )
    assert status == 422, doc  # one item is invalid: the batch is a validation failure


async def test_lists_filter_and_paginate(api: Api) -> None:
    """Conversation lists filter by status, agent, customer and campaign, and paginate with
    an opaque cursor without repeats or gaps."""
    customer = await api.customer()
    made = [
        await api.conversation(agentId="agent_pages", customerId=customer["id"], campaignId="camp")
        for _ in range(7)
    ]
    await api.post(f"/api/v2/conversations/{made[0]['id']}/join")
    pages = []
    cursor = None
    while True:
        query = "/api/v2/conversations?agentId=agent_pages&limit=3"
        status, page = await api.get(query + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        pages.append(page["data"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [c["id"] for p in pages for c in p] == [c["id"] for c in made]
    status, active = await api.get("/api/v2/conversations?agentId=agent_pages&status=active")
    assert [c["id"] for c in active["data"]] == [made[0]["id"]]
    by_customer = await api.all_pages(f"/api/v2/conversations?customerId={customer['id']}")
    assert len(by_customer) == 7
    assert len(await api.all_pages("/api/v2/conversations?campaignId=camp&limit=2")) >= 7
    assert await api.all_pages("/api/v2/conversations?createdAfter=2999-01-01T00:00:00Z") == []


async def test_openapi_publishes_routes_and_the_event_catalogue(api: Api) -> None:
    """/openapi.json is valid OpenAPI with the event catalogue under webhooks; /docs serves."""
    from openapi_spec_validator import validate

    status, doc = await api.get("/openapi.json")
    assert status == 200
    validate(doc)
    assert set(doc["webhooks"]) == set(json_schemas())
    assert "/api/v2/conversations/{conversation_id}/join" in doc["paths"]
    async with api.session.get(api.base + "/docs") as r:
        assert r.status == 200
        assert "swagger" in (await r.text()).lower()


async def _metrics_status(base: str, authorization: str | None) -> tuple[int, str]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics", headers=headers) as r:
        return r.status, await r.text()


async def test_serve_metrics_need_the_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CONVHOOK_METRICS_TOKEN`` makes ``convhook serve``'s /metrics answer 401 without
    ``Authorization: Bearer <token>`` and the metrics with it."""
    monkeypatch.setenv("CONVHOOK_METRICS_TOKEN", "s3cret-token")
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "m.db"), "--no-dispatch"]
    with serve_process(args, tmp_path, port):
        base = f"http://127.0.0.1:{port}"
        assert (await _metrics_status(base, None))[0] == 401
        assert (await _metrics_status(base, "Bearer wrong"))[0] == 401
        status, text = await _metrics_status(base, "Bearer s3cret-token")
        assert status == 200
        assert "convhook_delivery_backlog" in text


async def test_dispatcher_metrics_port_needs_its_token(tmp_path: Path) -> None:
    """``convhook dispatcher --metrics-token`` serves its counters on the metrics port only
    with ``Authorization: Bearer <token>``."""
    port = free_port()
    args = ["dispatcher", "--db", str(tmp_path / "d.db"), "--metrics-port", str(port)]
    args += ["--metrics-host", "127.0.0.1", "--metrics-token", "disp-token"]
    with serve_process(args, tmp_path, port):
        base = f"http://127.0.0.1:{port}"
        assert (await _metrics_status(base, None))[0] == 401
        status, text = await _metrics_status(base, "Bearer disp-token")
        assert status == 200
        assert "convhook_delivery_attempts" in text


@pytest.mark.parametrize(
    ("command", "exposes"),
    [("serve", "endpoint ids of every workspace"), ("dispatcher", "attempt counts")],
)
def test_help_says_what_open_metrics_expose(command: str, exposes: str) -> None:
    """``--help`` names the metrics token, its variable, and what /metrics shows without it."""
    done = subprocess.run(
        [sys.executable, "-m", "convhook", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "400", "TERM": "dumb"},
    )
    text = " ".join(done.stdout.split())
    assert "--metrics-token" in text
    assert "CONVHOOK_METRICS_TOKEN" in text
    assert exposes in text
