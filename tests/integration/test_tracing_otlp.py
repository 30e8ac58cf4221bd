"""convhook.tracing with OpenTelemetry: spans exported over OTLP/HTTP to a real loopback
collector, decoded with OpenTelemetry's own protobuf classes.

Each case configures tracing in a child process: OpenTelemetry's global provider can be set
once per process, and the test process must stay unconfigured for the other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.support.otlp import Collector, collector_fixture  # noqa: F401 - the fixture

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
HEADER = f"00-{TRACE}-{SPAN}-01"


def _run(script: str, **env: str) -> Any:
    """Run ``script`` in a child Python with only the given OTEL_* variables; its JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONVHOOK_"))}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


FLOW = f"""
import asyncio, json
from convhook import tracing

out = {{"configured": tracing.configure("convhook-test")}}
out["again"] = tracing.configure("other-name")
cause = tracing.parse("{HEADER}")
with tracing.span("api request", cause, kind="server", attributes={{"http.route": "/x"}}) as api:
    out["current_in_api"] = tracing.current() == api
    with tracing.span("event recorded", attributes={{"event.id": "evt_1", "n": 3}}) as rec:
        pass
out["current_after"] = tracing.current()
stored = rec.header()

async def deliver():
    async with tracing.span("attempt", tracing.parse(stored), kind="client") as attempt:
        await asyncio.sleep(0)
    return attempt

attempt = asyncio.run(deliver())
try:
    with tracing.span("handler", tracing.parse(attempt.header()), kind="consumer") as handler:
        raise ValueError("boom")
except ValueError:
    pass
with tracing.span("unsampled", tracing.parse("00-{TRACE}-{SPAN}-00")) as unsampled:
    pass
out["contexts"] = {{
    name: ctx.header()
    for name, ctx in [("api request", api), ("event recorded", rec), ("attempt", attempt),
                      ("handler", handler), ("unsampled", unsampled)]
}}
tracing.shutdown()
out["configured_after"] = tracing.configured()
with tracing.span("after shutdown") as cheap:
    out["cheap"] = cheap.header()
print(json.dumps(out))
"""


def test_one_trace_from_a_given_traceparent(collector: Collector) -> None:
    """Spans continue the given traceparent, nest parent to child, carry kind, attributes and
    errors, and each block's context is its exported span."""
    # A long batch delay: only shutdown() can have sent the spans.
    out = _run(FLOW, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="600000")
    assert out["configured"] is True
    assert out["again"] is True
    assert out["current_in_api"] is True
    assert out["current_after"] is None
    assert out["configured_after"] is False
    assert collector.paths
    assert set(collector.paths) == {"/v1/traces"}
    assert {r["service.name"] for r in collector.resources} == {"convhook-test"}

    spans = collector.by_name()
    assert set(spans) == {"api request", "event recorded", "attempt", "handler"}
    assert {s["trace_id"] for s in spans.values()} == {TRACE}
    assert {s["scope"] for s in spans.values()} == {"convhook"}
    for name, header in out["contexts"].items():
        _, trace_id, span_id, _ = header.split("-")
        assert trace_id == TRACE
        if name != "unsampled":
            assert spans[name]["span_id"] == span_id
    assert spans["api request"]["parent_span_id"] == SPAN
    assert spans["event recorded"]["parent_span_id"] == spans["api request"]["span_id"]
    assert spans["attempt"]["parent_span_id"] == spans["event recorded"]["span_id"]
    assert spans["handler"]["parent_span_id"] == spans["attempt"]["span_id"]

    kinds = {name: s["kind"] for name, s in spans.items()}
    # OTLP's SpanKind numbers: 1 internal, 2 server, 3 client, 5 consumer.
    assert kinds == {"api request": 2, "event recorded": 1, "attempt": 3, "handler": 5}
    assert spans["api request"]["attributes"] == {"http.route": "/x"}
    assert spans["event recorded"]["attributes"] == {"event.id": "evt_1", "n": 3}
    # OTLP's status codes: 0 unset, 2 error.
    assert spans["handler"]["status"] == 2
    assert spans["handler"]["events"] == ["exception"]
    assert spans["api request"]["status"] == 0

    unsampled = out["contexts"]["unsampled"]
    assert unsampled.endswith("-00")
    assert unsampled.split("-")[2] != SPAN
    assert out["cheap"].split("-")[1] != TRACE


ROOT = """
import json
from convhook import tracing

out = {"configured": tracing.configure("convhook-default")}
with tracing.span("outer") as outer:
    with tracing.span("inner") as inner:
        pass
out["outer"], out["inner"] = outer.header(), inner.header()
tracing.shutdown()
print(json.dumps(out))
"""


def test_root_span_and_standard_variables(collector: Collector) -> None:
    """Without a parent a span starts a trace; the traces endpoint and OTEL_SERVICE_NAME apply."""
    out = _run(
        ROOT,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.url + "/custom/traces",
        OTEL_SERVICE_NAME="my-receiver",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    assert out["configured"] is True
    assert set(collector.paths) == {"/custom/traces"}
    assert collector.resources[0]["service.name"] == "my-receiver"
    assert collector.resources[0]["deployment.environment"] == "test"
    spans = collector.by_name()
    assert spans["outer"]["parent_span_id"] == ""
    assert spans["inner"]["parent_span_id"] == spans["outer"]["span_id"]
    assert out["outer"].split("-")[1] == spans["outer"]["trace_id"]


APP_SPANS = """
import json
from opentelemetry import trace
from convhook import tracing

out = {"configured": tracing.configure("convhook-test")}
app = trace.get_tracer("my.app")
with tracing.span("handler", kind="consumer") as handler:
    with app.start_as_current_span("app work"):
        with tracing.span("convhook inside app") as inside:
            pass
out["handler"], out["inside"] = handler.header(), inside.header()
tracing.shutdown()
print(json.dumps(out))
"""


def test_application_spans_nest(collector: Collector) -> None:
    """The application's own OpenTelemetry spans nest under convhook's, and convhook's under
    theirs."""
    out = _run(APP_SPANS, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    assert out["configured"] is True
    spans = collector.by_name()
    assert spans["app work"]["scope"] == "my.app"
    assert spans["app work"]["parent_span_id"] == spans["handler"]["span_id"]
    assert spans["convhook inside app"]["parent_span_id"] == spans["app work"]["span_id"]


UNCONFIGURED = """
import json, sys
from convhook import tracing

out = {"configured": tracing.configure("convhook-test")}
with tracing.span("x") as x:
    pass
out["otel_imported"] = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}],
    ids=["no endpoint", "sdk disabled", "exporter none"],
)
def test_not_configured_stays_out(collector: Collector, env: dict[str, str]) -> None:
    """Without an endpoint, or disabled, configure() declines, OpenTelemetry is not imported
    and nothing is exported."""
    if env:
        env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    out = _run(UNCONFIGURED, **env)
    assert out == {"configured": False, "otel_imported": []}
    assert collector.paths == []


WITHOUT_EXTRA = """
import json, logging, sys
sys.modules["opentelemetry.sdk"] = None  # as if the otel extra were not installed
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from convhook import tracing

out = {"configured": tracing.configure("convhook-test")}
with tracing.span("x") as x:
    out["span"] = x.header()
print(json.dumps(out))
"""


def test_without_the_extra(collector: Collector) -> None:
    """With an endpoint but without the extra, configure() says what to install and
    declines."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["configured"] is False
    assert "convhook[otel]" in done.stderr
    assert collector.paths == []
