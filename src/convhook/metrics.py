"""Prometheus metrics: attempt counters kept in process, backlog gauges read at scrape time.

Counters and the latency histogram live in :data:`REGISTRY` and are fed by the dispatcher
running in this process. The backlog (due and in-flight deliveries per endpoint, the oldest
pending delivery, events recorded, deliveries by status) is read from the database on each
scrape by :class:`BacklogCollector`, so it is right whichever process dispatches.

The backlog is labelled with endpoint ids of every workspace, so a scrape can be required to
carry ``Authorization: Bearer <token>`` (:func:`authorized`, :func:`serve`).

Beside the metrics, the same ports answer health checks for orchestrators, without a token
and without data: ``/healthz`` (the process runs) and ``/readyz`` (:func:`readiness`: the
database answers a read, its schema is the version this code ships, and the dispatcher loop
of this process, if it dispatches, is alive).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import threading
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from convhook.errors import ConvhookError

# One readiness model for every port (the receiver's module imports no server code).
from convhook.receiver.health import OK, READY_TIMEOUT, Readiness
from convhook.store.delivery.log import Backlog
from convhook.store.engine.migrations import installed, latest, load

if TYPE_CHECKING:
    from convhook.dispatcher import Dispatcher
    from convhook.store.engine.database import Database

CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter(
    "convhook_delivery_attempts",
    "Webhook delivery attempts by outcome (delivered, retry, failed, gone).",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "convhook_delivery_attempt_seconds",
    "Time from sending a webhook to its response (or error).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
    registry=REGISTRY,
)
DISABLED = Counter(
    "convhook_endpoints_disabled",
    "Endpoints the dispatcher disabled (410 Gone, or failing for days).",
    registry=REGISTRY,
)


_BY_OUTCOME = {o: ATTEMPTS.labels(o) for o in ("delivered", "retry", "failed", "gone")}


def observe_attempt(outcome: str, latency_ms: float) -> None:
    """Count one attempt and its latency."""
    counter = _BY_OUTCOME.get(outcome) or ATTEMPTS.labels(outcome)
    counter.inc()
    ATTEMPT_SECONDS.observe(latency_ms / 1000)


class BacklogCollector(Collector):
    """Exposes one :class:`Backlog` snapshot as gauges."""

    def __init__(self, snapshot: Backlog) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Yield the backlog metric families."""
        s = self.snapshot
        recorded = CounterMetricFamily("convhook_events_recorded", "Events recorded in the outbox.")
        recorded.add_metric([], s.events_recorded)
        yield recorded
        statuses = GaugeMetricFamily(
            "convhook_deliveries", "Deliveries by status.", labels=["status"]
        )
        for status in ("pending", "delivering", "delivered", "failed"):
            statuses.add_metric([status], s.by_status.get(status, 0))
        yield statuses
        backlog = GaugeMetricFamily(
            "convhook_delivery_backlog",
            "Deliveries waiting per endpoint: due now, or in flight.",
            labels=["endpoint", "state"],
        )
        for endpoint in sorted(set(s.due) | set(s.in_flight)):
            backlog.add_metric([endpoint, "due"], s.due.get(endpoint, 0))
            backlog.add_metric([endpoint, "in_flight"], s.in_flight.get(endpoint, 0))
        yield backlog
        oldest = GaugeMetricFamily(
            "convhook_delivery_oldest_pending_seconds",
            "Age of the oldest delivery not yet delivered or failed.",
        )
        oldest.add_metric([], s.oldest_pending_age_s)
        yield oldest


def exposition(snapshot: Backlog | None) -> bytes:
    """The Prometheus text format of the process counters and, if given, the backlog."""
    text = generate_latest(REGISTRY)
    if snapshot is not None:
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(BacklogCollector(snapshot))
        text += generate_latest(scrape)
    return text


def authorized(authorization: str | None, token: str | None) -> bool:
    """Whether a scrape may read the metrics: always without a ``token``, else only with
    ``Authorization: Bearer <token>`` (compared in constant time)."""
    if token is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    # Digests of equal length: the comparison reveals neither the token nor its length.
    expected = hashlib.sha256(token.encode()).digest()
    offered = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(expected, offered) and scheme.lower() == "bearer"


UNAUTHORIZED = b'{"error": "metrics need Authorization: Bearer <token>", "problems": []}'


ALIVE = b'{"status": "alive"}'
"""The body of ``/healthz``."""


@functools.cache
def shipped_version(dialect: str, component: str = "producer") -> int:
    """The schema version of ``component`` this code ships for ``dialect``."""
    return latest(load(dialect, component)).get(component, 0)


def dispatcher_state(dispatcher: Dispatcher | None) -> str:
    """``ok`` while the dispatcher's claim and record loops run, else why not."""
    if dispatcher is None:
        return "not started"
    # Dispatcher has no public liveness flag: its loops are the tasks start() made.
    loops: list[asyncio.Task[None]] = getattr(dispatcher, "_loops", [])
    if not loops:
        return "not running"
    if any(task.done() for task in loops):
        return "loop stopped"
    return OK


async def readiness(
    db: Database,
    dispatcher: Dispatcher | None = None,
    *,
    dispatching: bool = False,
    timeout: float = READY_TIMEOUT,
) -> Readiness:
    """Check that ``db`` answers a read within ``timeout`` seconds, that its producer schema
    is the version this code ships, and with ``dispatching`` that ``dispatcher`` runs."""
    checks: dict[str, str] = {}
    try:
        found = await asyncio.wait_for(db.read(installed, "producer"), timeout)
    except (ConvhookError, TimeoutError):
        # The error names the server: a probe's answer says only which check failed.
        checks["database"] = "unreachable"
        checks["schema"] = "unknown"
    else:
        checks["database"] = OK
        known = shipped_version(db.dialect.name)
        checks["schema"] = OK if found == known else f"version {found}, this code needs {known}"
    if dispatching:
        checks["dispatcher"] = dispatcher_state(dispatcher)
    return Readiness(checks)


class Probe:
    """What a metrics port's ``/readyz`` checks, from the port's own thread: the database and
    dispatcher of the event loop they run on, once :meth:`attach` gave them."""

    def __init__(self, *, timeout: float = READY_TIMEOUT) -> None:
        self.timeout = timeout
        self._target: tuple[asyncio.AbstractEventLoop, Database, Dispatcher] | None = None

    def attach(self, db: Database, dispatcher: Dispatcher) -> None:
        """Check ``db`` and ``dispatcher`` on the running loop from now on."""
        self._target = (asyncio.get_running_loop(), db, dispatcher)

    def detach(self) -> None:
        """Answer not ready from now on (the dispatcher is stopping)."""
        self._target = None

    def check(self) -> Readiness:
        """The readiness of the attached database and dispatcher (call from another thread
        than their loop's)."""
        target = self._target
        if target is None:
            return Readiness({"dispatcher": "not running"})
        loop, db, dispatcher = target
        try:
            future = asyncio.run_coroutine_threadsafe(
                readiness(db, dispatcher, dispatching=True, timeout=self.timeout), loop
            )
        except RuntimeError:  # the loop closed
            return Readiness({"dispatcher": "not running"})
        try:
            return future.result(self.timeout + 1)
        except FutureTimeout:
            future.cancel()
            # The checks time out by themselves: only a loop that does not run gets here.
            return Readiness({"dispatcher": "event loop not responding"})


class _Scrape(BaseHTTPRequestHandler):
    token: str | None = None
    probe: Probe | None = None

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/healthz":
            self._answer(200, ALIVE)
        elif path == "/readyz" and self.probe is not None:
            ready = self.probe.check()
            self._answer(ready.status, ready.body())
        elif path != "/metrics":
            self._answer(404, b'{"error": "not found; metrics are at /metrics", "problems": []}')
        elif not authorized(self.headers.get("Authorization"), self.token):
            self._answer(401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
        else:
            self._answer(200, exposition(None), content_type=CONTENT_TYPE)

    def _answer(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged (one every few seconds would drown the dispatcher's log)."""


def serve(
    host: str, port: int, token: str | None = None, probe: Probe | None = None
) -> ThreadingHTTPServer:
    """Serve this process's counters at ``http://host:port/metrics`` from a daemon thread,
    requiring ``Authorization: Bearer <token>`` if a token is given, ``/healthz`` and, with a
    ``probe``, ``/readyz`` (both without the token); the caller shuts it down."""
    handler = type("Scrape", (_Scrape,), {"token": token, "probe": probe})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


TIMED_OUT = Counter(
    "convhook_conversations_timed_out",
    "Conversations the watchdog ended with endReason timeout (no transition within their "
    "phase's limit), by the phase they were in.",
    ["phase"],
    registry=REGISTRY,
)
