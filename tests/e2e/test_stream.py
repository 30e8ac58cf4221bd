"""``GET /api/v2/stream`` over a real uvicorn server on SQLite and PostgreSQL, read by a real
SSE client (aiohttp): resumption, filters, workspaces, heartbeats, dropped subscribers, and a
``convhook serve`` process stopped with streams open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from convhook.api import ApiSettings, create_app
from convhook.store.producer import ProducerStore
from tests.support.delivery import Receiver, Reply
from tests.support.servers import cli_process, eventually, free_port, serve_app

SETTINGS = ApiSettings(
    dispatch=True,
    allow_private_targets=True,
    stream_heartbeat=30.0,
    stream_poll=0.05,
    stream_gap_wait=0.5,
)


@dataclass(frozen=True)
class Msg:
    """One SSE message as the client parsed it."""

    id: str
    event: str
    data: dict[str, Any]


class SSE:
    """A Server-Sent Events reader over an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = 10.0) -> Msg | None:
        """The next message; None when the stream ended."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line)
                elif line:
                    name, _, value = line.partition(": ")
                    assert name not in fields, f"field {name} twice in one message"
                    fields[name] = value
                elif fields:
                    return Msg(fields["id"], fields["event"], json.loads(fields["data"]))

    async def take(self, count: int, timeout: float = 15.0) -> list[Msg]:
        """The next ``count`` messages."""
        found = []
        for _ in range(count):
            m = await self.next(timeout)
            assert m is not None, f"the stream ended after {len(found)} of {count} messages"
            found.append(m)
        return found

    async def quiet(self, seconds: float = 0.6) -> None:
        """Fail if a message arrives within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            m = await self.next(seconds)
            raise AssertionError(f"unexpected message {m}")


@dataclass
class Api:
    """The app on a loopback port, a receiver for its deliveries, two workspaces' keys."""

    base: str
    session: aiohttp.ClientSession
    key: str
    other_key: str
    hook: str
    app: Any

    def agent(self, key: str | None) -> str:
        """An agent of the key's workspace (an agent belongs to the first that names it)."""
        return "agent-other" if key == self.other_key else "agent-main"

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"x-api-key": key or self.key}

    async def post(self, path: str, doc: Any = None, key: str | None = None) -> Any:
        async with self.session.post(
            self.base + path, json=doc, headers=self.auth(key)
        ) as response:
            assert response.status in (200, 201), await response.text()
            return await response.json()

    async def joined(self, count: int, key: str | None = None) -> list[str]:
        """``count`` new conversations joined (one userJoined event each); their ids."""
        ids = [
            (await self.post("/api/v2/conversations", {"agentId": self.agent(key)}, key))["id"]
            for _ in range(count)
        ]
        await asyncio.gather(*(self.post(f"/api/v2/conversations/{i}/join", key=key) for i in ids))
        return ids

    @contextlib.asynccontextmanager
    async def stream(
        self, query: str = "", headers: dict[str, str] | None = None, key: str | None = None
    ) -> AsyncIterator[SSE]:
        async with self.session.get(
            f"{self.base}/api/v2/stream{query}",
            headers={**self.auth(key), "accept": "text/event-stream", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            assert response.status == 200, await response.text()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SSE(response)


@contextlib.asynccontextmanager
async def api_on(database_url: str, settings: ApiSettings = SETTINGS) -> AsyncIterator[Api]:
    store = ProducerStore.at(database_url, synchronous="NORMAL", auto_upgrade=True)
    await store.open()
    try:
        _, key = await store.create_workspace("main")
        _, other_key = await store.create_workspace("other")
    finally:
        await store.close()
    receiver = Receiver()
    app = create_app(ProducerStore.at(database_url, synchronous="NORMAL"), settings)
    async with (
        serve_app(receiver) as hook,
        serve_app(app) as base,
        aiohttp.ClientSession() as session,
    ):
        yield Api(base, session, key, other_key, hook + "/hook", app)


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_messages(
    database_url: str,
) -> None:
    """A client that reconnects with Last-Event-ID is sent exactly the messages a client that
    stayed connected got after that id: none missed, none repeated."""
    async with api_on(database_url) as api:
        await api.post("/api/v2/endpoints", {"url": api.hook})
        async with api.stream() as steady:
            async with api.stream() as leaving:
                await api.joined(3)
                first = await leaving.take(3)
            last_seen = first[-1].id
            await api.joined(4)
            # Three events and their attempts, then four more with theirs.
            got = await steady.take(14)
            ids = [m.id for m in got]
            assert last_seen in ids, "the steady client got the leaving client's messages"
            after = got[ids.index(last_seen) + 1 :]
            await steady.quiet()
        for header in ({"Last-Event-ID": last_seen}, None):
            query = "" if header else f"?lastEventId={last_seen}"
            async with api.stream(query, headers=header) as back:
                resumed = await back.take(len(after))
                await back.quiet()
            key = lambda m: json.dumps([m.event, m.data], sort_keys=True)  # noqa: E731
            assert sorted(map(key, resumed)) == sorted(map(key, after))
            assert len({m.id for m in resumed}) == len(resumed)
        assert sum(m.event == "event" for m in got) == 7
        attempts = [m.data for m in got if m.event == "attempt"]
        assert len(attempts) == 7
        assert {a["outcome"] for a in attempts} == {"delivered"}
        assert all(a["attempt"] == 1 and a["deliveryId"].startswith("dlv_") for a in attempts)


async def test_each_filter_holds_and_other_workspaces_never_appear(database_url: str) -> None:
    """eventType, conversationId and endpointId keep only matching messages, and a stream
    never carries another workspace's events or attempts, replayed or live."""
    async with api_on(database_url) as api:
        endpoint = (await api.post("/api/v2/endpoints", {"url": api.hook}))["id"]
        await api.post("/api/v2/endpoints", {"url": api.hook + "/2"})
        await api.post("/api/v2/endpoints", {"url": api.hook}, key=api.other_key)
        await api.joined(2, key=api.other_key)
        ours = await api.joined(2)
        await api.post(f"/api/v2/conversations/{ours[0]}/leave")
        async with (
            api.stream("?since=start") as every,
            api.stream("?since=start&eventType=conversation.userLeft") as left,
            api.stream(f"?since=start&conversationId={ours[1]}") as one,
            api.stream(f"?since=start&endpointId={endpoint}") as by_endpoint,
            api.stream("?since=start", key=api.other_key) as theirs,
        ):
            await api.joined(1, key=api.other_key)
            await api.post(f"/api/v2/conversations/{ours[1]}/leave")
            # Ours: 2 joins + 2 leaves, each delivered to two endpoints.
            everything = await every.take(12)
            await every.quiet()
            assert sum(m.event == "event" for m in everything) == 4
            mine = {m.data["conversationId"] for m in everything}
            assert mine == set(ours)
            only_left = await left.take(2 + 4)
            await left.quiet()
            assert {m.data["eventType"] for m in only_left} == {"conversation.userLeft"}
            only_one = await one.take(2 + 4)
            await one.quiet()
            assert {m.data["conversationId"] for m in only_one} == {ours[1]}
            of_endpoint = await by_endpoint.take(4)
            await by_endpoint.quiet()
            assert {(m.event, m.data["endpointId"]) for m in of_endpoint} == {("attempt", endpoint)}
            other = await theirs.take(3 + 3)
            await theirs.quiet()
            assert not {m.data["conversationId"] for m in other} & set(ours)


async def test_heartbeats_arrive_on_an_idle_stream(tmp_path: Path) -> None:
    """An idle stream carries a ``: ping`` comment every ``stream_heartbeat`` seconds."""
    settings = replace(SETTINGS, stream_heartbeat=0.2)
    async with api_on(str(tmp_path / "c.db"), settings) as api, api.stream() as sse:
        with contextlib.suppress(TimeoutError):
            await sse.next(0.9)
        assert sse.comments.count(": ping") >= 3


async def test_a_full_queue_drops_the_subscriber_and_its_reconnect_loses_nothing(
    database_url: str,
) -> None:
    """A subscriber whose queue fills is sent what it holds and disconnected; reconnecting
    with the last id it got brings every later message, once."""
    settings = replace(SETTINGS, stream_queue=3, stream_poll=1.0)
    async with api_on(database_url, settings) as api:
        ids = [(await api.post("/api/v2/conversations", {"agentId": "a"}))["id"] for _ in range(8)]
        async with api.stream() as slow:
            await asyncio.sleep(0.1)
            await asyncio.gather(*(api.post(f"/api/v2/conversations/{i}/join") for i in ids))
            held = await slow.take(3)
            assert await slow.next() is None, "the stream ends once the subscriber is dropped"
        async with api.stream(headers={"Last-Event-ID": held[-1].id}) as back:
            rest = await back.take(5)
            await back.quiet()
        seen = [m.data["conversationId"] for m in held + rest]
        assert sorted(seen) == sorted(ids)


async def test_a_client_that_goes_away_is_forgotten_and_the_poller_stops(tmp_path: Path) -> None:
    """A closed stream leaves the hub at once, and the hub stops reading the logs when the
    last one goes."""
    async with api_on(str(tmp_path / "c.db")) as api:
        async with api.stream(), api.stream():
            hub = api.app.state.stream_hub
            assert hub.subscribers == 2
        await eventually(lambda: hub.subscribers == 0 and hub._task.done(), timeout=5)


async def test_since_start_replays_pruned_events_with_a_null_body(tmp_path: Path) -> None:
    """``since=start`` sends every recorded event, those whose payload was pruned with
    ``event: null``, then continues live."""
    db = str(tmp_path / "c.db")
    async with api_on(db) as api:
        await api.joined(2)
        async with ProducerStore.at(db) as store:
            done = await store.prune_events(older_than_ms=0, clock=lambda: time.time() + 60)
        assert done.events == 2
        await api.joined(1)
        async with api.stream("?since=start") as sse:
            pruned = await sse.take(3)
            await api.joined(1)
            [live] = await sse.take(1)
        assert [m.data["event"] for m in pruned[:2]] == [None, None]
        assert pruned[2].data["event"]["eventType"] == "conversation.userJoined"
        assert live.data["event"]["payload"] is not None


async def test_malformed_last_event_id_is_refused(tmp_path: Path) -> None:
    """A Last-Event-ID that is not a message id answers 400 naming Last-Event-ID, and a
    stream without a key answers 401."""
    async with api_on(str(tmp_path / "c.db")) as api:
        for headers, query in (({"Last-Event-ID": "12"}, ""), ({}, "?lastEventId=a.b")):
            async with api.session.get(
                f"{api.base}/api/v2/stream{query}", headers={**api.auth(), **headers}
            ) as response:
                assert response.status == 400
                doc = await response.json()
                assert doc["problems"][0]["field"] == "Last-Event-ID"
        async with api.session.get(f"{api.base}/api/v2/stream") as response:
            assert response.status == 401


async def test_a_last_event_id_ahead_of_the_logs_is_refused(tmp_path: Path) -> None:
    """A Last-Event-ID past the end of either log (a database restored from an older copy)
    answers 400 naming Last-Event-ID and the stream's last message, instead of waiting in
    silence until the logs catch up; the position of the last message itself resumes."""
    async with api_on(str(tmp_path / "c.db")) as api:
        await api.joined(2)
        async with api.stream("?since=start") as stream:
            end = (await stream.take(2))[-1].id
        seq, attempt = (int(n) for n in end.split("."))
        for ahead in (f"{seq + 1}.{attempt}", f"{seq}.{attempt + 1}", "99999999.0"):
            async with api.session.get(
                f"{api.base}/api/v2/stream", headers={**api.auth(), "Last-Event-ID": ahead}
            ) as response:
                assert response.status == 400, ahead
                doc = await response.json()
                assert doc["problems"][0]["field"] == "Last-Event-ID"
                assert f"messages end at {end}" in doc["error"]
        async with api.session.get(
            f"{api.base}/api/v2/stream", headers={**api.auth(), "Last-Event-ID": end}
        ) as response:
            assert response.status == 200


async def test_a_reconnect_after_its_endpoint_was_deleted_resumes(database_url: str) -> None:
    """Deleting an endpoint deletes its attempts, the newest possibly: a client whose last
    message was one of them still resumes (the highest attempt id given out bounds the ids,
    not the highest one left)."""
    async with api_on(database_url) as api:
        endpoint = await api.post("/api/v2/endpoints", {"url": api.hook})
        async with api.stream() as stream:
            await api.joined(1)
            last = (await stream.take(2))[-1]
        assert last.event == "attempt"
        async with api.session.delete(
            f"{api.base}/api/v2/endpoints/{endpoint['id']}", headers=api.auth()
        ) as response:
            assert response.status in (200, 204), await response.text()
        async with api.stream(headers={"Last-Event-ID": last.id}) as back:
            await api.joined(1)
            [event] = await back.take(1)
        assert event.event == "event"


async def test_attempts_report_retries_and_the_final_failure(tmp_path: Path) -> None:
    """An attempt answered 500 is a ``retry`` with its number and status code."""
    receiver = Receiver().then(Reply(500))
    async with api_on(str(tmp_path / "c.db")) as api, serve_app(receiver) as failing:
        await api.post("/api/v2/endpoints", {"url": failing + "/x"})
        async with api.stream() as sse:
            [conversation] = await api.joined(1)
            event, attempt = await sse.take(2)
        assert event.data["conversationId"] == conversation
        assert event.data["event"]["eventType"] == "conversation.userJoined"
        assert re.fullmatch(r"\d+\.\d+", event.id)
        assert attempt.data["statusCode"] == 500
        assert attempt.data["outcome"] == "retry"
        assert attempt.data["attempt"] == 1


@pytest.mark.slow
def test_sigterm_with_open_streams_exits_promptly(tmp_path: Path) -> None:
    """``convhook serve`` told to stop with streams open ends them and exits within seconds."""
    port = free_port()
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "s.db"), "--no-dispatch"]
    with cli_process(args, cwd=tmp_path, port=port) as proc:
        key = re.search(r"chk_[A-Za-z0-9_-]+", proc.stdout + proc.stderr)
        assert key is not None

        async def go() -> float:
            async with aiohttp.ClientSession() as session:
                responses = [
                    await session.get(
                        f"http://127.0.0.1:{port}/api/v2/stream",
                        headers={"x-api-key": key[0]},
                    )
                    for _ in range(3)
                ]
                await asyncio.sleep(0.3)
                started = time.monotonic()
                proc.proc.send_signal(signal.SIGTERM)
                for response in responses:
                    async with asyncio.timeout(10):
                        assert await response.content.read() == b""
                    response.release()
                await asyncio.to_thread(proc.proc.wait, 10)
                return time.monotonic() - started

        took = asyncio.run(go())
        assert proc.proc.returncode in (0, -signal.SIGTERM)
        assert took < 3, f"the server took {took:.1f} s to stop"
