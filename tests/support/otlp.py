"""A loopback OTLP/HTTP trace collector: spans exported by convhook processes, decoded with
OpenTelemetry's own protobuf classes (the ``convhook[otel]`` extra, installed by ``make test``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Collector:
    """What the loopback OTLP/HTTP endpoint received."""

    url: str
    paths: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.spans}


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


@pytest.fixture(name="collector")
def collector_fixture() -> Iterator[Collector]:
    """A loopback HTTP server answering OTLP/HTTP trace exports as a collector does."""
    received = Collector(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/x-protobuf"
            request = ExportTraceServiceRequest.FromString(body)
            received.paths.append(self.path)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                received.resources.append(resource)
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        received.spans.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex(),
                                "kind": s.kind,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "status": s.status.code,
                                "events": [e.name for e in s.events],
                                "scope": scope_spans.scope.name,
                            }
                        )
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
