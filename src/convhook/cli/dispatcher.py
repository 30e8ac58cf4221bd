"""``convhook dispatcher``: deliver the outbox of a database on its own (beside ``serve``).

Any number may run against one PostgreSQL database, on any number of machines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import typer

from convhook import tracing
from convhook.cli._common import err, fail, need_extra, run_fast, start_logging
from convhook.config import (
    DatabaseURL,
    db_option,
    log_format_option,
    log_level_option,
    option,
)
from convhook.errors import ConfigError

log = logging.getLogger("convhook.dispatcher")

if TYPE_CHECKING:
    from convhook.metrics import Probe
    from convhook.retry import RetryPolicy
    from convhook.store import Database
    from convhook.watchdog import Limits


def allow_private_option() -> bool:
    """The ``--allow-private-targets`` option ``dispatcher`` and ``serve`` share."""
    flag: bool = option(
        False,
        "--allow-private-targets",
        env="ALLOW_PRIVATE_TARGETS",
        help="Deliver to loopback, private and link-local addresses (local development only).",
    )
    return flag


def metrics_token_option(exposes: str) -> str | None:
    """The ``--metrics-token`` option ``dispatcher`` and ``serve`` share; ``exposes`` says
    what an open metrics page shows."""
    token: str | None = option(
        None,
        "--metrics-token",
        env="METRICS_TOKEN",
        help="Require `Authorization: Bearer <token>` to read /metrics (401 otherwise). "
        f"Without it /metrics is open to anyone who can reach the port: {exposes}",
    )
    return token


_WATCHDOG = {
    "created": ("0", "created and neither dialed nor joined"),
    "dialing": ("2m", "dialing (the call is being placed)"),
    "active": ("4h", "active (the user is in it)"),
    "left": ("10m", "left by its user and not ended"),
}


def watchdog_option(phase: str) -> str:
    """The ``--watchdog-<phase>`` option ``dispatcher`` and ``serve`` share: how long a
    conversation may stay in ``phase`` without a transition."""
    default, what = _WATCHDOG[phase]
    limit: str = option(
        default,
        f"--watchdog-{phase}",
        env=f"WATCHDOG_{phase.upper()}",
        help=f"End a conversation {what} this long without a transition, with "
        "conversation.completed and endReason timeout: 90s, 2m, 4h, or 0 (off).",
    )
    return limit


def retry_window_option() -> str:
    """The ``--retry-window`` option ``dispatcher`` and ``serve`` share."""
    window: str = option(
        "default",
        "--retry-window",
        env="RETRY_WINDOW",
        help="How long a failing delivery is retried: `default` (10 attempts over about 3.15 "
        "days: 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h) or a window from 1m to 3d (e.g. 6h, "
        "3d) that the same schedule is scaled into.",
    )
    return window


_WINDOW = re.compile(r"^([0-9]+)([smhd])$")
_WINDOW_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def retry_policy(window: str) -> RetryPolicy | None:
    """The ``--retry-window`` option as a policy (None: the default schedule); exit 2
    naming the option when it is not a duration from 1m to 3d."""
    from convhook.retry import RetryPolicy

    text = window.strip().lower()
    if text == "default":
        return None
    match = _WINDOW.match(text)
    if match is None:
        fail(
            f"--retry-window must be `default` or a duration such as 90m, 6h or 3d, got {window!r}"
        )
    try:
        return RetryPolicy.for_window(int(match[1]) * _WINDOW_UNIT[match[2]])
    except ConfigError as exc:
        fail(f"--retry-window: {exc}")


def watchdog_limits(created: str, dialing: str, active: str, left: str) -> Limits:
    """The ``--watchdog-*`` options as limits; exit 2 naming the option that is not a
    duration."""
    from convhook.watchdog import Limits, parse_duration

    given = {"created": created, "dialing": dialing, "active": active, "left": left}
    try:
        return Limits(
            **{
                phase: parse_duration(text, name=f"--watchdog-{phase}")
                for phase, text in given.items()
            }
        )
    except ConfigError as exc:
        fail(str(exc))


def dispatcher(
    db: str = db_option("convhook.db"),
    allow_private_targets: bool = allow_private_option(),
    batch_size: int = option(
        100, "--batch-size", env="DISPATCH_BATCH", min=1, help="Deliveries claimed at once."
    ),
    max_in_flight: int = option(
        256,
        "--max-in-flight",
        env="DISPATCH_MAX_IN_FLIGHT",
        min=1,
        help="Requests in flight across all endpoints.",
    ),
    lease: float = option(
        60.0,
        "--lease",
        env="DISPATCH_LEASE",
        min=1.0,
        help="Seconds a claim is held; a crashed worker's claims return after it. Never less "
        "than a claim can wait: 8 request timeouts + 1 s on SQLite, 16 + 1 s on PostgreSQL "
        "(see docs/delivery.md).",
    ),
    poll_interval: float = option(
        0.5,
        "--poll-interval",
        env="DISPATCH_POLL",
        min=0.01,
        help="Seconds between looks for due retries when nothing wakes the dispatcher.",
    ),
    timeout: float = option(15.0, "--timeout", env="DISPATCH_TIMEOUT", help="Seconds per request."),
    synchronous: str = option(
        "FULL",
        "--synchronous",
        env="SQLITE_SYNCHRONOUS",
        help="SQLite durability: FULL survives power loss, NORMAL a process crash only.",
    ),
    writer_process: bool = option(
        True,
        "--writer-process/--no-writer-process",
        env="DISPATCH_WRITER_PROCESS",
        help="Claim and record in a child process with its own GIL (faster on multi-core "
        "machines).",
    ),
    log_level: str = log_level_option("info"),
    log_format: str = log_format_option(),
    metrics_port: int = option(
        0,
        "--metrics-port",
        env="DISPATCH_METRICS_PORT",
        min=0,
        help="Serve this process's attempt counters at http://HOST:PORT/metrics, and health "
        "checks at /healthz and /readyz (0: off).",
    ),
    metrics_host: str = option(
        "127.0.0.1",
        "--metrics-host",
        env="DISPATCH_METRICS_HOST",
        help="Interface of the metrics port: loopback unless given (0.0.0.0 opens it to the "
        "network, e.g. for a scraper on another machine; then set --metrics-token).",
    ),
    metrics_token: str | None = metrics_token_option(
        "delivery attempt counts by outcome and their latency, for all workspaces."
    ),
    watchdog_created: str = watchdog_option("created"),
    watchdog_dialing: str = watchdog_option("dialing"),
    watchdog_active: str = watchdog_option("active"),
    watchdog_left: str = watchdog_option("left"),
    retry_window: str = retry_window_option(),
) -> None:
    """Claim due deliveries and POST them signed until stopped (SIGINT/SIGTERM).

    Example: ``convhook dispatcher --db postgresql://convhook@db/convhook --metrics-port 9464``

    It also runs the watchdog (--watchdog-*): of all the dispatchers and servers sharing a
    database, one at a time ends the conversations left too long in a phase."""
    need_extra("dispatcher", "server")
    try:
        url = DatabaseURL.parse(db)
    except ConfigError as exc:
        fail(str(exc))
    limits = watchdog_limits(watchdog_created, watchdog_dialing, watchdog_active, watchdog_left)
    policy = retry_policy(retry_window)
    stop_logging = start_logging(log_format, log_level)
    probe = None
    if metrics_port:
        from convhook import metrics

        # A thread serves the counters the dispatcher feeds (the backlog gauges are on the
        # API's /metrics, read from the database) and the health checks.
        probe = metrics.Probe()
        try:
            metrics.serve(metrics_host, metrics_port, metrics_token or None, probe)
        except OSError as exc:
            fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}")
    # Spans are exported only when OTEL_EXPORTER_OTLP_*ENDPOINT is set and the otel extra is
    # installed (docs/tracing.md); otherwise tracing stays the cheap path.
    tracing.configure("convhook-dispatcher")
    try:
        run_fast(
            _dispatch(
                url,
                allow_private=allow_private_targets,
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                lease=lease,
                poll_interval=poll_interval,
                timeout=timeout,
                synchronous=synchronous.upper(),
                writer_process=writer_process,
                probe=probe,
                limits=limits,
                policy=policy,
            )
        )
    finally:
        tracing.shutdown()
        stop_logging()


def _database(url: DatabaseURL, *, synchronous: str, writer_process: bool) -> Database:
    """The dispatcher's database: the one place that puts its writer in a child process."""
    from convhook.store import open_database

    # Claims and records run in a child with a GIL of its own: the dispatcher's event loop is
    # busy sending, and a writer thread beside it would wait for the GIL at every statement
    # (PostgreSQL, one dispatcher, 5,000 events: 46% of a bare client's rate against 41%).
    # A PostgreSQL schema is checked, never changed here (`convhook db upgrade` does it).
    return open_database(
        url, "producer", synchronous=synchronous, writer="process" if writer_process else "thread"
    )


async def _dispatch(
    url: DatabaseURL,
    *,
    synchronous: str,
    writer_process: bool,
    probe: Probe | None = None,
    limits: Limits | None = None,
    **options: object,
) -> None:
    import signal

    from convhook.dispatcher import Dispatcher
    from convhook.store.delivery import DeliveryStore

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    db = _database(url, synchronous=synchronous, writer_process=writer_process)
    async with DeliveryStore(db) as store, _watchdog(url, db, synchronous, limits):
        async with Dispatcher(store, **options) as running:  # type: ignore[arg-type]
            err.print(
                f"convhook dispatcher on {db.name} (worker {running.worker_id}, lease "
                f"{running.lease:g} s{', private targets allowed' if options['allow_private'] else ''})"
            )
            if probe is not None:
                probe.attach(db, running)
            await stop.wait()
            if probe is not None:
                probe.detach()
            log.warning(
                "stopping: no new claims; attempts in flight finish and are recorded (up to "
                "%.0f s each), then the database closes",
                options["timeout"],
                extra={"action": "shutdown"},
            )
        err.print(f"dispatcher stopped after {running.delivered} deliveries")


@contextlib.asynccontextmanager
async def _watchdog(
    url: DatabaseURL, db: Database, synchronous: str, limits: Limits | None
) -> AsyncIterator[None]:
    """The watchdog beside the dispatcher, stopped before the database closes."""
    if limits is None or not limits.enabled:
        yield
        return
    from convhook.outbox import Outbox
    from convhook.store import open_database
    from convhook.store.producer import ProducerStore
    from convhook.watchdog import Watchdog

    # The outbox writes from this process's writer thread; a writer in a child process (the
    # claims') cannot run its decisions, so the watchdog gets a database of its own, with
    # one reading connection (a sweep reads once a second or so).
    own = getattr(db, "writer", "thread") != "thread"
    producer = ProducerStore(
        open_database(url, "producer", synchronous=synchronous, readers=1) if own else db
    )
    await producer.open()
    try:
        async with Watchdog(Outbox(producer), limits):
            yield
    finally:
        if own:
            await producer.close()


def register(app: typer.Typer) -> None:
    app.command()(dispatcher)
