"""What a traced block costs: :func:`convhook.tracing.span` without and with OpenTelemetry.

The baseline is the same ``with`` block around ``contextlib.nullcontext()``: the cost of a
block that traces nothing. ``off`` is every process that did not configure tracing (no
endpoint, or no ``convhook[otel]`` extra); ``on`` has exported to a loopback OTLP/HTTP sink
that answers 200 to every export, so the batch exporter's thread runs as in production.
Each figure is the best of ``--runs`` timings of ``--spans`` blocks, in nanoseconds per span.

    .venv/bin/python bench/tracing.py [--spans 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convhook import tracing

PARENT = tracing.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
UNSAMPLED = tracing.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")


def baseline(n: int) -> None:
    for _ in range(n):
        with contextlib.nullcontext(PARENT):
            pass


def child_of_parent(n: int) -> None:
    for _ in range(n):
        with tracing.span("attempt", PARENT, kind="client"):
            pass


def with_attributes(n: int) -> None:
    attributes = {"event.id": "evt_1", "attempt": 1}
    for _ in range(n):
        with tracing.span("attempt", PARENT, kind="client", attributes=attributes):
            pass


def nested(n: int) -> None:
    # Two spans per iteration; the figure is per span.
    for _ in range(n // 2):
        with tracing.span("handler", PARENT), tracing.span("step"):
            pass


def new_trace(n: int) -> None:
    for _ in range(n):
        with tracing.span("api request", kind="server"):
            pass


def unsampled(n: int) -> None:
    for _ in range(n):
        with tracing.span("attempt", UNSAMPLED, kind="client"):
            pass


CASES: list[tuple[str, Callable[[int], None]]] = [
    ("child of a traceparent", child_of_parent),
    ("  with 2 attributes", with_attributes),
    ("  nested in a span", nested),
    ("root of a new trace", new_trace),
    ("child of an unsampled one", unsampled),
]


def best_ns(case: Callable[[int], None], n: int, runs: int) -> float:
    """The fastest of ``runs`` timings, in ns per span (the others include interference)."""
    case(min(n, 1000))  # warm up
    timings = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        case(n)
        timings.append((time.perf_counter_ns() - start) / n)
    return min(timings)


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    base = best_ns(baseline, args.spans, args.runs)
    off = {name: best_ns(case, args.spans, args.runs) for name, case in CASES}

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_address[1]}"
    # A full batch queue drops spans with a warning; the figure is the caller's cost.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    if not tracing.configure("bench"):
        sys.exit("tracing.configure() declined: install the convhook[otel] extra")
    on = {name: best_ns(case, args.spans // 10, args.runs) for name, case in CASES}
    tracing.shutdown()
    sink.shutdown()

    print(
        f"span() cost, best of {args.runs} runs ({args.spans:,} spans off, {args.spans // 10:,} on)"
    )
    print(f"{'case':<28} {'off ns':>8} {'x base':>7} {'on ns':>8} {'x base':>7} {'on/off':>7}")
    print(f"{'baseline: nullcontext()':<28} {base:>8.0f} {1:>7.1f}")
    for name, _ in CASES:
        print(
            f"{name:<28} {off[name]:>8.0f} {off[name] / base:>7.1f} "
            f"{on[name]:>8.0f} {on[name] / base:>7.1f} {on[name] / off[name]:>7.1f}"
        )


if __name__ == "__main__":
    main()
