"""``convhook serve``: the producer API (customers, conversations, lifecycle, events)."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import typer

from convhook import tracing
from convhook.cli._common import (
    Signalled,
    die_of,
    err,
    fail,
    need_extra,
    refuse_busy_port,
    run_fast,
    signals_as_exceptions,
    start_logging,
)
from convhook.cli.dispatcher import (
    allow_private_option,
    metrics_token_option,
    retry_policy,
    retry_window_option,
    watchdog_limits,
    watchdog_option,
)
from convhook.config import (
    DatabaseURL,
    db_option,
    log_format_option,
    log_level_option,
    option,
)
from convhook.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from convhook.api.deps import ApiSettings
    from convhook.watchdog import Limits


def serve(
    host: str = option("127.0.0.1", "--host", env="HOST", help="Interface to listen on."),
    port: int = option(8080, "--port", env="PORT", help="TCP port to listen on."),
    db: str = db_option("convhook.db"),
    max_active: int = option(
        20,
        "--max-active",
        env="MAX_ACTIVE",
        min=1,
        help="Conversations a workspace may have dialing or active at once (429 beyond).",
    ),
    synchronous: str = option(
        "FULL",
        "--synchronous",
        env="SQLITE_SYNCHRONOUS",
        help="SQLite durability: FULL survives power loss, NORMAL a process crash only "
        "(ignored for PostgreSQL).",
    ),
    # Warning by default: each recorded event is an info record, costly at thousands a second.
    log_level: str = log_level_option("warning"),
    log_format: str = log_format_option(),
    allow_private_targets: bool = allow_private_option(),
    dispatch: bool = option(
        True,
        "--dispatch/--no-dispatch",
        env="DISPATCH",
        help="Deliver events to endpoints from this process (turn off when separate "
        "`convhook dispatcher` processes do it).",
    ),
    metrics_token: str | None = metrics_token_option(
        "delivery counts and the backlog labelled with the endpoint ids of every workspace."
    ),
    watchdog_created: str = watchdog_option("created"),
    watchdog_dialing: str = watchdog_option("dialing"),
    watchdog_active: str = watchdog_option("active"),
    watchdog_left: str = watchdog_option("left"),
    retry_window: str = retry_window_option(),
) -> None:
    """Run the producer API; on a fresh database, create workspace "default" and print its key.

    On PostgreSQL the schema must be current: run ``convhook db upgrade --db URL`` first.
    Example: ``convhook serve --db postgresql://convhook@db/convhook --no-dispatch --log-format json``

    Health checks need no key: /healthz answers 200 while the process runs; /readyz 200 when
    the database answers, its schema is current and the dispatcher (if on) runs, else 503.

    The watchdog (--watchdog-*) ends conversations left too long in a phase; of all the
    servers and dispatchers sharing a database, one at a time does."""
    need_extra("serve", "server")
    try:
        url = DatabaseURL.parse(db)
    except ConfigError as exc:
        fail(str(exc))
    limits = watchdog_limits(watchdog_created, watchdog_dialing, watchdog_active, watchdog_left)
    policy = retry_policy(retry_window)
    if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        fail(f"--synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
    refuse_busy_port(host, port)
    stop_logging = start_logging(log_format, log_level)
    from convhook.api.deps import ApiSettings

    settings = ApiSettings(
        max_active=max_active,
        dispatch=dispatch,
        allow_private_targets=allow_private_targets,
        retry_policy=policy,
    )
    # Spans are exported only when OTEL_EXPORTER_OTLP_*ENDPOINT is set and the otel extra is
    # installed (docs/tracing.md); otherwise tracing stays the cheap path.
    tracing.configure("convhook-serve")
    # uvicorn.run would pick uvloop by itself; serving from our own coroutine must ask for it.
    caught: int | None = None
    try:
        # The signal uvicorn sends again after its shutdown must not kill the process before
        # the queued log records (the "stopped" line) are written.
        with signals_as_exceptions():
            run_fast(
                _serve(
                    host,
                    port,
                    url,
                    settings,
                    synchronous.upper(),
                    log_level,
                    metrics_token or None,
                    limits,
                )
            )
    except Signalled as stopped:
        caught = stopped.signum
    finally:
        tracing.shutdown()
        stop_logging()
    if caught is not None:
        die_of(caught)


async def _serve(
    host: str,
    port: int,
    url: DatabaseURL,
    settings: ApiSettings,
    synchronous: str,
    log_level: str,
    metrics_token: str | None,
    limits: Limits,
) -> None:
    import uvicorn

    from convhook.api import create_app
    from convhook.store.producer import ProducerStore

    # The writer thread releases the GIL around every statement and must win it back from
    # the busy event loop each time; a 1 ms switch interval (default 5 ms) raised
    # transitions/s by about half in bench/api.py while FastAPI routed every transition. With
    # transitions answered ahead of FastAPI, SQLite shows no difference either way (PostgreSQL,
    # one statement round trip after another, still leans towards 1 ms).
    sys.setswitchinterval(0.001)
    store = ProducerStore.at(url, synchronous=synchronous)
    await store.open()
    base = f"http://{host}:{port}"
    try:
        if not await store.list_workspaces():
            workspace, key = await store.create_workspace("default")
            _quick_start(base, workspace.id, key)
    except BaseException:
        await store.close()
        raise
    err.print(f"convhook API on {base} (docs at {base}/docs), database {store.db.name}")
    app = create_app(store, settings, metrics_token=metrics_token)
    if limits.enabled:
        _watch(app, limits)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # The loggers are set up already (convhook.logs): uvicorn's own config would replace
        # their handlers with its coloured console ones.
        log_config=None,
        # Open /api/v2/stream responses end when the server stops (the stream watches for it);
        # should one not, the stop still completes.
        timeout_graceful_shutdown=30,
    )
    # uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes requests, then the app's
    # lifespan closes the store after the queued writes commit.
    await uvicorn.Server(config).serve()


def _watch(app: FastAPI, limits: Limits) -> None:
    """Run the watchdog inside the app's lifespan: started once the store is open, stopped
    before it closes."""
    from convhook.watchdog import Watchdog

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(given: Any) -> AsyncIterator[Any]:
        async with inner(given) as state, Watchdog(app.state.outbox, limits):
            yield state

    app.router.lifespan_context = lifespan


def _quick_start(base: str, workspace_id: str, key: str) -> None:
    json_id = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'"
    post = f'curl -s -H "x-api-key: $KEY" -H "content-type: application/json" -X POST {base}'
    customer = shlex.quote('{"name": "Jane Doe", "phoneNumber": "+14155550123"}')
    lines = [
        f'Created workspace "default" ({workspace_id}). Its API key, shown only this once:',
        "",
        f"  {key}",
        "",
        "Quick start:",
        f"  KEY={key}",
        f"  CUST=$({post}/api/v2/customers -d {customer} | {json_id})",
        f"  CONV=$({post}/api/v2/conversations -d "
        f'"{{\\"agentId\\": \\"agent_1\\", \\"customerId\\": \\"$CUST\\"}}" | {json_id})',
        f"  {post}/api/v2/conversations/$CONV/join",
        f"  {post}/api/v2/conversations/$CONV/leave",
        f"  {post}/api/v2/conversations/$CONV/end",
        f'  curl -s -H "x-api-key: $KEY" {base}/api/v2/events',
        "",
    ]
    # Plain writes: rich would wrap the long lines and break copy-paste.
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command()(serve)
