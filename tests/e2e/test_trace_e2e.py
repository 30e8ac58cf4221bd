"""One trace from the API call to the receiver's handler: a ``traceparent`` sent to a real
``convhook serve`` reaches the handler of a real receiver process, and with OTLP configured
both processes export the spans of that trace (API request, event recorded, each delivery
attempt, the handler) to a loopback collector, each the child of the one before."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp

from convhook import tracing
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from tests.support.otlp import Collector, collector_fixture  # noqa: F401 - the fixture
from tests.support.servers import cli_process, free_port, wait_for_port

KEY = re.compile(r"chk_[A-Za-z0-9_-]+")
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

RECEIVER = """
import json, sys
import uvicorn
from convhook import tracing
from convhook.samples import sample_event
from convhook.signing import Secret, sign
from convhook.receiver import Receiver

port, secret, store, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
tracing.configure("trace-test-receiver")
receiver = Receiver(secrets=[secret], store=store)

@receiver.on_any
async def seen(event) -> None:
    context = tracing.current()
    with open(out, "a") as f:
        f.write(json.dumps({"eventType": event.event_type, "traceparent": context.header()}) + "\\n")

try:
    uvicorn.run(receiver.asgi_app(path="/webhook"), port=int(port), log_level="warning")
finally:
    tracing.shutdown()
"""


def _lines(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def _eventually_lines(path: Path, count: int, timeout: float = 20) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _lines(path)
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"the handler ran fewer than {count} times")


async def test_a_traceparent_reaches_the_handler_and_every_span(
    tmp_path: Path, collector: Collector, database_url: str
) -> None:
    """The handler runs in the trace the API request named, and the exported spans chain
    API request -> record event -> deliver -> handle, all in that trace (the producer on
    SQLite and on PostgreSQL)."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    api_port, hook_port = free_port(), free_port()
    script = tmp_path / "receiver.py"
    script.write_text(textwrap.dedent(RECEIVER))
    seen = tmp_path / "seen.jsonl"
    if database_url.startswith("postgresql"):
        upgrade = [sys.executable, "-m", "convhook", "db", "upgrade", "--db", database_url]
        await asyncio.to_thread(subprocess.run, upgrade, check=True, capture_output=True)
    serve_args = ["serve", "--port", str(api_port), "--db", database_url]
    with cli_process(
        [*serve_args, "--allow-private-targets"], cwd=tmp_path, port=api_port, env=otel
    ) as serve:
        key = KEY.search(serve.stderr)
        assert key, serve.stderr
        base = f"http://127.0.0.1:{api_port}/api/v2"
        async with aiohttp.ClientSession(headers={"x-api-key": key[0]}) as http:
            hook = f"http://127.0.0.1:{hook_port}/webhook"
            async with http.post(f"{base}/endpoints", json={"url": hook}) as r:
                assert r.status == 201, await r.text()
                secret = (await r.json())["secret"]
            receiver = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                str(hook_port),
                secret,
                str(tmp_path / "inbox.db"),
                str(seen),
                cwd=tmp_path,
                env={**os.environ, **otel},
            )
            try:
                wait_for_port(hook_port)
                async with http.post(f"{base}/conversations", json={"agentId": "a"}) as r:
                    conv = (await r.json())["id"]
                async with http.post(
                    f"{base}/conversations/{conv}/join", headers={"traceparent": TRACE}
                ) as r:
                    assert r.status == 200, await r.text()
                (line,) = await _eventually_lines(seen, 1)
            finally:
                receiver.terminate()
                await asyncio.wait_for(receiver.wait(), 15)
    assert line["eventType"] == "conversation.userJoined"
    trace_id = tracing.parse(TRACE).trace_id
    assert tracing.parse(line["traceparent"]).trace_id == trace_id

    deadline = time.monotonic() + 10
    names = {"POST /api/v2/conversations/{id}/join", "record event", "deliver"}
    names.add("handle conversation.userJoined")
    while time.monotonic() < deadline:
        spans = {s["name"]: s for s in collector.spans if s["trace_id"] == trace_id}
        if names <= spans.keys():
            break
        await asyncio.sleep(0.1)
    assert names <= spans.keys(), sorted(s["name"] for s in collector.spans)
    request = spans["POST /api/v2/conversations/{id}/join"]
    recorded, deliver = spans["record event"], spans["deliver"]
    handled = spans["handle conversation.userJoined"]
    assert request["parent_span_id"] == tracing.parse(TRACE).span_id
    assert recorded["parent_span_id"] == request["span_id"]
    assert deliver["parent_span_id"] == recorded["span_id"]
    assert handled["parent_span_id"] in {
        deliver["span_id"],
        *(s["span_id"] for s in spans.values() if s["parent_span_id"] == deliver["span_id"]),
    }
    assert tracing.parse(line["traceparent"]).span_id == handled["span_id"]


async def test_listen_exports_its_receive_span_in_the_senders_trace(
    tmp_path: Path, collector: Collector
) -> None:
    """``convhook listen`` with OTLP configured exports a receive span whose parent is the
    delivered traceparent, and a handle span under it, so the sender's trace continues into
    the receiving process."""
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    port = free_port()
    secret = str(Secret.generate())
    args = ["listen", "--port", str(port), "--secret", secret, "--db", str(tmp_path / "i.db")]
    event = sample_event("conversation.userJoined")
    body = event.to_json()
    headers = {
        **sign(secret, event.event_id, body),
        "traceparent": TRACE,
        "content-type": "application/json",
    }
    with cli_process([*args, "--quiet"], cwd=tmp_path, port=port, env=otel):
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/webhook", data=body, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
        await asyncio.sleep(0.5)  # the handler runs after the answer
    trace = tracing.parse(TRACE)
    spans = {s["name"]: s for s in collector.spans if s["trace_id"] == trace.trace_id}
    assert "receive" in spans, collector.spans
    assert spans["receive"]["parent_span_id"] == trace.span_id
