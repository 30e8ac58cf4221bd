"""Whatever the producer API accepts yields events its own receiver accepts.

Generated customers, conversations and lifecycle transitions (any text including lone
surrogates and NUL, huge and non-finite numbers, timestamps at and past the edges of the date
range with any offset, nested metadata) are sent to a real API served by uvicorn over a real
SQLite file. Every answer is JSON and never a 5xx; every event recorded after a 2xx passes the
receiver's intake (:func:`convhook.wirecheck.check_event` and
:func:`convhook.events.parse_event`) byte for byte as endpoints would receive it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from convhook.api import ApiSettings, create_app
from convhook.events import UserJoined, parse_event
from convhook.store.producer import ProducerStore
from convhook.timefmt import MAX_YEAR, MIN_YEAR, format_ts
from convhook.wirecheck import check_event
from tests.support.servers import free_port, wait_for_port

# -- generated inputs --------------------------------------------------------------------

ODD_TEXT = ["\ud800", "a\udfffb", "\x00", "a\x00", "\u2028", "🙂", "é", '"\\', "\ufeff", ""]


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` four times in five: a request with one odd field is refused whole, and the
    property is about what gets through."""
    return st.one_of(good, good, good, good, odd)


good_texts = st.text(max_size=12)
odd_texts = st.one_of(
    st.sampled_from(ODD_TEXT),
    st.tuples(st.text(max_size=4), st.sampled_from(ODD_TEXT)).map("".join),
)
texts = mostly(good_texts, odd_texts)
good_numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
odd_numbers = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**30, float("inf"), float("nan")])
numbers = mostly(good_numbers, odd_numbers)


def nest(levels: int) -> Any:
    """Objects nested ``levels`` deep."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def trees(keys: st.SearchStrategy[str], leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON objects of up to four keys whose values nest arrays and objects."""
    values = st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8,
    )
    return st.dictionaries(keys, values, max_size=4)


good_leaves = st.none() | st.booleans() | good_numbers | good_texts
# Free-form objects are good ones four times in five: any odd leaf or key would refuse the
# whole request, and there are many of them.
objects = mostly(
    trees(good_texts, good_leaves),
    trees(texts, good_leaves | numbers | texts) | st.integers(26, 40).map(nest),
)

offsets = st.none() | st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
EDGES = [
    "0999-12-31T23:59:59.999Z",
    "1000-01-01T00:00:00Z",
    "1000-01-01T00:30:00+01:00",
    "0001-01-01T00:00:00+01:00",
    "9998-12-31T23:59:59.999Z",
    "9998-12-31T23:00:00-01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59",
    "0001-01-01",
]
timestamps = st.one_of(
    st.sampled_from(EDGES),
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        offsets,
    ),
    st.builds(
        lambda d, tz: d.replace(tzinfo=tz).isoformat(),
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
        offsets,
    ),
    st.integers(-(10**14), 10**14),
)
reasons = mostly(st.sampled_from(["user_hangup", "agent_hangup", "network_error"]), texts)
phones = mostly(st.sampled_from(["+14155550100", "+4930123456"]), st.just("0123") | texts)
booleans = mostly(st.booleans(), st.sampled_from([0, 1, "true"]))
ids = mostly(st.text("abcXYZ_-019", min_size=1, max_size=12), texts)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


customers = optional(
    name=texts,
    email=mostly(st.sampled_from(["jane@example.com", "o'neil+x@mail.example.org"]), texts),
    phoneNumber=phones,
    identifier=texts,
    priority=numbers,
    isDoNotDisturbEnabled=booleans,
    metadata=objects,
    source=optional(method=texts),
)
conversations = st.fixed_dictionaries(
    {"agentId": ids},
    optional={
        "phoneId": ids,
        "toPhoneNumber": phones,
        "dynamicVariables": objects,
        "campaignId": ids,
        "ignoreDND": booleans,
    },
)
BODIES = {
    "dial": optional(callStartTime=timestamps),
    "join": optional(userJoinTime=timestamps),
    "leave": optional(userLeaveTime=timestamps),
    "end": optional(callEndTime=timestamps, endReason=reasons, recordingUrl=texts),
    "fail": optional(callEndTime=timestamps, endReason=reasons),
    "analysis": optional(
        summary=texts,
        postCallNotes=texts,
        postCallCategory1=texts,
        transcript=texts,
        postCallMetadata=objects,
    ),
}
PATHS = [["dial", "join", "leave", "end", "analysis"], ["join", "end", "analysis"], ["fail"]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A customer (changed midway), a conversation and one lifecycle path, each body
    generated."""
    path = draw(st.sampled_from(PATHS))
    return Scenario(
        customer=draw(st.none() | customers),
        update=draw(st.none() | customers.map(lambda c: {"name": "changed", **c})),
        conversation=draw(conversations),
        moves=[(action, draw(st.none() | BODIES[action])) for action in path],
        raw=draw(st.booleans()),
    )


@dataclass
class Scenario:
    """Requests to send in order; ``raw`` sends non-ASCII text as UTF-8 bytes (lone
    surrogates as the bytes of their code point) instead of ``\\u`` escapes."""

    customer: dict[str, Any] | None
    update: dict[str, Any] | None
    """Changes to the customer after the first move: later events embed it changed."""
    conversation: dict[str, Any]
    moves: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    raw: bool = False

    def encode(self, body: Any) -> bytes:
        if not self.raw:
            return json.dumps(body).encode()
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


# -- the API under test ------------------------------------------------------------------


class Client:
    """A keep-alive HTTP/1.1 client of the API (synchronous: hypothesis drives it)."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.key = key

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Status and body; any answer must be JSON and below 500."""
        headers = {"x-api-key": self.key}
        if body is not None:
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status < 500, f"{method} {path} {body!r}: {response.status} {data!r}"
        assert response.getheader("content-type") == "application/json", (method, path, data)
        if response.status >= 400:
            doc = json.loads(data)
            assert isinstance(doc["error"], str), data
            if response.status in (400, 413, 422):
                assert doc["problems"], f"{method} {path}: no field named in {data!r}"
        return response.status, data

    def json(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        status, data = self.call(method, path, body)
        return status, json.loads(data)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """The API over a fresh SQLite file, served by uvicorn in a thread of its own."""
    path = Path(tmp_path_factory.mktemp("api")) / "convhook.db"

    async def workspace() -> str:
        async with ProducerStore.at(str(path), auto_upgrade=True) as store:
            return (await store.create_workspace("w"))[1]

    key = asyncio.run(workspace())
    port = free_port()
    app = create_app(ProducerStore.at(str(path)), ApiSettings(max_active=1_000_000))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    while not server.started:
        time.sleep(0.01)
    client = Client(port, key)
    try:
        yield client
    finally:
        client.conn.close()
        server.should_exit = True
        thread.join(30)


def _received(client: Client, conversation_id: str) -> int:
    """Check every event of the conversation as a receiver would; how many there are."""
    status, page = client.json("GET", f"/api/v2/events?conversationId={conversation_id}&limit=500")
    assert status == 200
    for item in page["data"]:
        status, body = client.call("GET", f"/api/v2/events/{item['eventId']}")
        assert status == 200
        checked = check_event(body)
        event = parse_event(body)
        assert (checked.event_id, event.event_id) == (item["eventId"], item["eventId"])
    return len(page["data"])


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios())
def test_every_event_the_api_records_is_one_the_receiver_accepts(
    client: Client, scenario: Scenario
) -> None:
    """For any customer, conversation and transition bodies, the API answers JSON below 500,
    and every event it records after a 2xx passes the receiver's checks."""
    fields = dict(scenario.conversation)
    customer_id = None
    if scenario.customer is not None:
        status, doc = client.json("POST", "/api/v2/customers", scenario.encode(scenario.customer))
        if status == 201:
            customer_id = fields["customerId"] = doc["id"]
    status, doc = client.json("POST", "/api/v2/conversations", scenario.encode(fields))
    event(f"conversation {status}")
    if status != 201:
        return
    conversation_id = doc["id"]
    events = 0
    for action, body in scenario.moves:
        sent = None if body is None else scenario.encode(body)
        status, _ = client.call("POST", f"/api/v2/conversations/{conversation_id}/{action}", sent)
        event(f"{action} {status}")
        if status != 200:
            break
        if action != "dial":
            events += 1
        assert _received(client, conversation_id) == events
        if customer_id is not None and scenario.update is not None:
            status, _ = client.call(
                "PATCH", f"/api/v2/customers/{customer_id}", scenario.encode(scenario.update)
            )
            event(f"customer update {status}")
            customer_id = None


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    offset=offsets,
)
def test_a_timestamp_in_range_round_trips_with_four_digit_years(
    moment: datetime, offset: timezone | None
) -> None:
    """format_ts writes every year with four digits, so what it writes parses back to the same
    instant (to the millisecond), whatever the offset it was given in."""
    value = moment.replace(tzinfo=offset, microsecond=moment.microsecond // 1000 * 1000)
    try:
        utc = value.astimezone(UTC) if offset is not None else value.replace(tzinfo=UTC)
    except OverflowError:
        return
    text = format_ts(value)
    assert len(text) == 24
    assert text[:4] == f"{utc.year:04d}"
    assert datetime.fromisoformat(text) == utc
    if MIN_YEAR <= utc.year <= MAX_YEAR:
        payload = {
            "id": "c",
            "phoneId": None,
            "agentId": "a",
            "workspaceId": "w",
            "customerId": None,
            "conversationStatus": "active",
            "telephonyStatus": None,
            "recordingStatus": None,
            "conversationType": "telephony",
            "userJoinTime": text,
        }
        body = json.dumps(
            {"eventId": "e", "eventType": "conversation.userJoined", "payload": payload}
        )
        event = parse_event(body)
        assert isinstance(event, UserJoined)
        assert event.payload.user_join_time == utc
