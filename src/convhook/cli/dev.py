"""``convhook dev``: the whole loop on one machine, working on the first try.

The producer API on loopback (delivery to loopback allowed, which ``convhook serve`` refuses by
default), a receiver beside it, and an endpoint of the workspace wired to that receiver with
the same secret; then a quick start that moves a conversation through its whole lifecycle, each
event printed as the receiver gets it. Everything lives in two SQLite files, so a second run
finds its workspace and endpoint again.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from typing import TYPE_CHECKING, Any

import typer

from convhook.cli._common import (
    err,
    fail,
    need_extra,
    out,
    refuse_busy_port,
    run_fast,
    start_logging,
)
from convhook.config import log_format_option, log_level_option, option

if TYPE_CHECKING:
    from convhook.store.delivery import DeliveryStore
    from convhook.store.producer import ProducerStore

WEBHOOK_PATH = "/webhook"
DEV_WORKSPACE = "dev"


def dev(
    port: int = option(8080, "--port", env="PORT", help="TCP port of the producer API."),
    listen_port: int = option(
        8000, "--listen-port", env="LISTEN_PORT", help="TCP port of the local receiver."
    ),
    db: str = option(
        "convhook-dev.db", "--db", env="DEV_DB", help="SQLite file of the producer (API, outbox)."
    ),
    inbox: str = option(
        "convhook-dev-inbox.db",
        "--inbox",
        env="DEV_INBOX",
        help="SQLite file of the receiver's inbox.",
    ),
    log_level: str = log_level_option("warning"),
    log_format: str = log_format_option(),
) -> None:
    """Run the producer API and a receiver on 127.0.0.1, wired together, and print a quick
    start that sends every lifecycle event through them.

    Example: ``convhook dev --port 8080 --listen-port 8000``. For production run
    ``convhook serve`` and ``convhook listen`` separately (the API refuses loopback endpoints
    there)."""
    need_extra("dev", "server")
    if port == listen_port:
        fail(f"--port and --listen-port must differ (both are {port})")
    if db == inbox:
        fail(f"--db and --inbox must be different files (both are {db!r})")
    refuse_busy_port("127.0.0.1", port)
    refuse_busy_port("127.0.0.1", listen_port)
    stop_logging = start_logging(log_format, log_level)
    try:
        run_fast(_dev(port, listen_port, db, inbox))
    finally:
        stop_logging()


async def _dev(port: int, listen_port: int, db: str, inbox: str) -> None:

    from convhook.api import create_app
    from convhook.api.deps import ApiSettings
    from convhook.receiver import Receiver
    from convhook.store.delivery import DeliveryStore
    from convhook.store.inbox.store import open_inbox
    from convhook.store.producer import ProducerStore

    store = ProducerStore.at(db)
    await store.open()
    try:
        workspace_id, key = await _workspace_key(store)
        target = f"http://127.0.0.1:{listen_port}{WEBHOOK_PATH}"
        secret = await _endpoint_secret(DeliveryStore(store.db), workspace_id, target)
    except BaseException:
        await store.close()
        raise
    from convhook.cli.listen import EventPrinter

    receiver = Receiver([secret], open_inbox(inbox, writer="thread"))
    receiver.add_handler(EventPrinter(out), name="print")
    settings = ApiSettings(dispatch=True, allow_private_targets=True)
    api = _server(create_app(store, settings), port)
    rx = _server(receiver.asgi_app(WEBHOOK_PATH), listen_port)
    tasks = [asyncio.create_task(api.serve()), asyncio.create_task(rx.serve())]
    while not (api.started and rx.started):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    if api.started and rx.started:
        _quick_start(f"http://127.0.0.1:{port}", key, target, inbox)
    # Each server stops on Ctrl-C (only one of them holds the signal handler): the other
    # follows, and each closes its database after the writes in flight.
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    api.should_exit = rx.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    if not (api.started and rx.started):
        raise typer.Exit(1)


def _server(app: Any, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        log_config=None,  # convhook.logs routes uvicorn's records
    )
    return uvicorn.Server(config)


async def _workspace_key(store: ProducerStore) -> tuple[str, str]:
    """The dev workspace and a key for this run: a new key each start, so the quick start
    always prints one that works (keys are stored hashed and shown only once)."""
    for workspace in await store.list_workspaces():
        if workspace.name == DEV_WORKSPACE:
            # The previous runs' keys go (the first run's is named "default"): only the one
            # printed now works.
            earlier = [k for k in await store.list_keys(workspace.id) if k.revoked_at is None]
            _, key = await store.create_key(workspace.id, "dev")
            for old in earlier:
                await store.revoke_key(workspace.id, old.id)
            return workspace.id, key
    created, key = await store.create_workspace(DEV_WORKSPACE)
    return created.id, key


async def _endpoint_secret(deliveries: DeliveryStore, workspace_id: str, url: str) -> str:
    """The secret of the workspace's endpoint at ``url``, created (with a new secret) if
    there is none yet or it was disabled."""
    from convhook.ids import new_id
    from convhook.signing import Secret
    from convhook.store.producer import now_ms

    after: str | None = None
    while page := await deliveries.list_endpoints(workspace_id, limit=100, after=after):
        after = page[-1].id
        endpoint = next((e for e in page if e.url == url), None)
        if endpoint is not None:
            if not endpoint.enabled:
                await deliveries.set_enabled(workspace_id, endpoint.id, True, now_ms())
            return endpoint.secret
    secret = str(Secret.generate())
    await deliveries.create_endpoint(
        endpoint_id=new_id("ep"),
        workspace_id=workspace_id,
        url=url,
        secret=secret,
        now=now_ms(),
        description="convhook dev: the local receiver",
    )
    return secret


def _quick_start(base: str, key: str, target: str, inbox: str) -> None:
    json_id = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'"
    post = f'curl -s -H "x-api-key: $KEY" -H "content-type: application/json" -X POST {base}'
    customer = shlex.quote('{"name": "Jane Doe", "phoneNumber": "+14155550123"}')
    analysis = shlex.quote('{"summary": "Booked a demo.", "postCallCategory1": "interested"}')
    lines = [
        f"convhook dev: API on {base} (docs at {base}/docs), receiver on {target}",
        f"  events go to {target}, signed with the endpoint's secret; stored in {inbox}",
        "",
        "Quick start (each event is printed below as the receiver gets it):",
        f"  KEY={key}",
        f"  CUST=$({post}/api/v2/customers -d {customer} | {json_id})",
        f"  CONV=$({post}/api/v2/conversations -d "
        f'"{{\\"agentId\\": \\"agent_1\\", \\"customerId\\": \\"$CUST\\"}}" | {json_id})',
        f"  {post}/api/v2/conversations/$CONV/join",
        f"  {post}/api/v2/conversations/$CONV/leave",
        f"  {post}/api/v2/conversations/$CONV/end",
        f"  {post}/api/v2/conversations/$CONV/analysis -d {analysis}",
        "",
        "Or send sample events straight to the receiver: convhook trigger --help",
        "",
    ]
    # Plain writes: rich would wrap the long lines and break copy-paste.
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    err.print("[dim]Ctrl-C stops both servers.[/]")


def register(app: typer.Typer) -> None:
    app.command()(dev)
