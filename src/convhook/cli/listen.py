"""``convhook listen``: a ready-to-run receiver that prints, stores and forwards events."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from convhook import tracing
from convhook.cli._common import (
    Signalled,
    die_of,
    err,
    fail,
    out,
    refuse_busy_port,
    run,
    signals_as_exceptions,
    tune_gc,
)
from convhook.config import INBOX_ENV, db_option, log_format_option, log_level_option, option
from convhook.events import DEFAULT_MAX_BODY

if TYPE_CHECKING:
    from types import FrameType

    from convhook.receiver import Delivery, Receiver
    from convhook.store.inbox import Inbox

DEFAULT_DB = "convhook-inbox.db"

log = logging.getLogger("convhook.listen")


def listen(
    port: int = option(8000, "--port", env="LISTEN_PORT", help="TCP port to listen on."),
    host: str = option("127.0.0.1", "--host", env="LISTEN_HOST", help="Address to bind."),
    path: str = option("/webhook", "--path", env="LISTEN_PATH", help="Path that takes POSTs."),
    secrets: list[str] | None = option(
        None,
        "--secret",
        env="SECRET",
        help="whsec_ secret to verify with; repeat during a rotation. Without it (and without "
        "--token), unsigned events are accepted.",
    ),
    tokens: list[str] | None = option(
        None,
        "--token",
        env="WEBHOOK_TOKEN",
        help="Shared token for a sender that does not sign: requests must carry it as "
        "'Authorization: Bearer <token>' or 'x-api-key: <token>' (else 401). Repeat during a "
        "rotation (in the variable: separated by spaces). With --secret, both are required.",
    ),
    forward_to: str | None = option(
        None,
        "--forward-to",
        env="FORWARD_TO",
        help="Re-send each event's raw signed request to this URL (retried on failure).",
    ),
    db: str = db_option(
        DEFAULT_DB,
        help="Inbox database: a SQLite file path (one listener per file) or a postgresql:// URL "
        "(any number of listeners; run `convhook db upgrade --component inbox` first).",
        env=INBOX_ENV,
    ),
    tolerance: int = option(
        300, "--tolerance", env="TOLERANCE", min=1, help="Accepted webhook-timestamp skew, s."
    ),
    max_body: int = option(
        DEFAULT_MAX_BODY, "--max-body", env="MAX_BODY", min=1, help="Largest body accepted, bytes."
    ),
    max_attempts: int = option(
        5,
        "--max-attempts",
        env="LISTEN_MAX_ATTEMPTS",
        min=1,
        help="Attempts per event before it is marked failed (backoff 1 s, 2 s, 4 s...).",
    ),
    lease: float = option(
        60.0,
        "--lease",
        env="LISTEN_LEASE",
        min=0.5,
        help="Seconds an event stays claimed by this listener (renewed while its handlers run); "
        "if the listener dies, another one takes the event when the lease ends.",
    ),
    reconcile_url: str | None = option(
        None,
        "--reconcile-api-url",
        env="RECONCILE_API_URL",
        help="The producer's base URL (e.g. https://hooks.example.com): events missing from a "
        "conversation's sequence are fetched from its API and handled before later ones. "
        "Needs --reconcile-api-key.",
    ),
    reconcile_key: str | None = option(
        None,
        "--reconcile-api-key",
        env="RECONCILE_API_KEY",
        help="A workspace key of the producer's API, for --reconcile-api-url.",
    ),
    reconcile_wait: float = option(
        60.0,
        "--reconcile-wait",
        env="RECONCILE_WAIT",
        min=0.0,
        help="Seconds an event waits, at most, for earlier events of its conversation (being "
        "fetched, or still being handled) before its handlers run without them.",
    ),
    quiet: bool = option(False, "--quiet", env="LISTEN_QUIET", help="Do not print events."),
    writer_process: bool = option(
        True,
        "--writer-process/--no-writer-process",
        env="LISTEN_WRITER_PROCESS",
        help="Store in a child process with its own GIL (faster on multi-core machines).",
    ),
    keep_alive: int = option(
        5,
        "--timeout-keep-alive",
        env="LISTEN_TIMEOUT_KEEP_ALIVE",
        min=1,
        help="Seconds a connection may stay idle (before its first request or between "
        "requests) before it is closed.",
    ),
    read_timeout: float = option(
        10.0,
        "--read-timeout",
        env="LISTEN_READ_TIMEOUT",
        min=0.1,
        help="Seconds a client has to send a whole request (headers and body) once it has "
        "started one; slower connections are closed.",
    ),
    max_header_bytes: int = option(
        64 * 1024,
        "--max-header-bytes",
        env="LISTEN_MAX_HEADER_BYTES",
        min=1024,
        help="Largest total size of a request's headers; larger ones get 400.",
    ),
    log_format: str = log_format_option(),
    log_level: str = log_level_option("info"),
) -> None:
    """Receive webhooks on http://HOST:PORT/PATH: verify, store, print and forward them.

    GET /healthz and GET /readyz answer health checks (no signature or token needed).

    Example: ``convhook listen --secret whsec_... --port 8000 --forward-to http://127.0.0.1:3000/hooks``
    """
    from convhook import logs

    try:
        fmt, level = logs.check(log_format, log_level)
    except ValueError as exc:
        fail(str(exc))
    # Before the inbox is created or a banner printed: a busy port is one clear error.
    refuse_busy_port(host, port)
    if bool(reconcile_url) != bool(reconcile_key):
        fail("--reconcile-api-url and --reconcile-api-key go together: give both or neither")
    receiver = _build(
        secrets or [],
        tokens or [],
        _inbox(db, writer_process=writer_process),
        forward_to,
        tolerance,
        max_body,
        max_attempts,
        lease,
        quiet,
        reconcile=(reconcile_url, reconcile_key) if reconcile_url and reconcile_key else None,
        reconcile_wait=reconcile_wait,
    )
    # Open the inbox once before serving, so a missing or outdated schema (or an unreachable
    # database) is one clear error instead of a failed server start-up.
    run(_check(receiver))
    stop_logging = logs.configure(fmt, level)
    said = _announce(
        fmt,
        host,
        port,
        path,
        db,
        forward_to,
        signed=bool(secrets),
        token=bool(tokens),
        reconcile=reconcile_url,
    )
    # Spans (receive, each handler) are exported only with an OTLP endpoint set and the otel
    # extra installed (docs/tracing.md).
    tracing.configure("convhook-listen")
    try:
        _serve(receiver, host, port, path, read_timeout, max_header_bytes, keep_alive, level)
    except Signalled as stopped:
        log.info("stopped", extra={"action": "listen_stopped"})
        caught: int | None = stopped.signum
    else:
        caught = None
    finally:
        tracing.shutdown()
        said()
        stop_logging()
    if caught is not None:
        die_of(caught)


def _serve(
    receiver: Receiver,
    host: str,
    port: int,
    path: str,
    read_timeout: float,
    max_header_bytes: int,
    keep_alive: int,
    level: str,
) -> None:
    import uvicorn

    from convhook.receiver.deadlines import protocol

    config = uvicorn.Config(
        receiver.asgi_app(path),
        host=host,
        port=port,
        lifespan="on",
        # convhook.logs routes uvicorn's records already; uvicorn's own dictConfig would put
        # its handlers back. Its start-up lines say what the banner says: shown at debug.
        log_config=None,
        log_level="debug" if level == "debug" else "warning",
        access_log=False,
        server_header=False,
        # The receiver never reads the client address, so X-Forwarded-* parsing per request
        # (uvicorn's proxy-headers middleware) is pure overhead.
        proxy_headers=False,
        # uvicorn alone never closes a connection that has not finished its first request
        # (idle, or a slowloris); the protocol adds those deadlines and a header size bound.
        http=protocol(read_timeout, max_header_bytes),
        timeout_keep_alive=keep_alive,
    )
    server = uvicorn.Server(config)
    uvicorn_exit = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        if not server.should_exit:
            _stopping(sig, len(server.server_state.tasks))
        uvicorn_exit(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    tune_gc()
    with signals_as_exceptions():
        server.run()
    if not server.started:
        raise typer.Exit(1)


def _stopping(sig: int, requests: int) -> None:
    """Say what a shutdown waits for: an operator sending SIGTERM sees why it takes time."""
    from convhook.receiver.worker import SHUTDOWN_GRACE

    name = signal.Signals(sig).name
    log.info(
        "stopping on %s: taking no new connections; %d requests in progress are answered "
        "once their events are stored, then handlers get up to %g s to finish",
        name,
        requests,
        SHUTDOWN_GRACE,
        extra={
            "action": "listen_stopping",
            "signal": name,
            "requests": requests,
            "grace_s": SHUTDOWN_GRACE,
        },
    )


def _inbox(db: str, *, writer_process: bool) -> Inbox:
    from convhook.errors import ConfigError
    from convhook.store.inbox.store import open_inbox

    try:
        return open_inbox(db, writer="process" if writer_process else "thread")
    except ConfigError as exc:
        fail(str(exc))


def _build(
    secrets: list[str],
    tokens: list[str],
    db: Inbox,
    forward_to: str | None,
    tolerance: int,
    max_body: int,
    max_attempts: int,
    lease: float,
    quiet: bool,
    *,
    reconcile: tuple[str, str] | None = None,
    reconcile_wait: float | None = None,
) -> Receiver:
    from convhook.errors import ConvhookError
    from convhook.receiver import Receiver, Reconcile, RetryPolicy
    from convhook.receiver.forwarder import Forwarder

    try:
        receiver = Receiver(
            secrets,
            db,
            lease=lease,
            tolerance=tolerance,
            max_body=max_body,
            allow_unsigned=not secrets and not tokens,
            tokens=tokens,
            retry=RetryPolicy.exponential(max_attempts=max_attempts),
            reconcile=None if reconcile is None else Reconcile(*reconcile),
            reconcile_wait=reconcile_wait,
        )
        if not quiet:
            receiver.add_handler(EventPrinter(out), name="print")
        if forward_to:
            forwarder = Forwarder(forward_to)
            receiver.add_handler(forwarder, name="forward")
            receiver.on_shutdown(forwarder.close)
    except ConvhookError as exc:
        fail(str(exc))
    return receiver


async def _check(receiver: Receiver) -> None:
    async with receiver.inbox:
        pass


class EventPrinter:
    """Prints one line per event: time, type, ids and the fields that matter.

    Styles are rendered to escape codes once (none when stdout is not a terminal), so a line
    costs a string format, not a pass through rich's renderer: at thousands of events a
    second the printer must not become the receiver's bottleneck. Lines are written from the
    event loop (a stdout that stops reading, e.g. a paused pager, stalls the listener; use
    ``--quiet`` when piping into something that may stop).
    """

    def __init__(self, console: Any) -> None:
        from rich.color import ColorSystem
        from rich.style import Style

        from convhook.events import ConversationEvent

        # Looked up once here: an import statement per event is a measurable cost.
        self._conversation_event = ConversationEvent

        self._file = console.file
        colour = console.is_terminal and console.color_system is not None and not console.no_color

        def codes(name: str) -> tuple[str, str]:
            if not colour:
                return "", ""
            rendered = Style.parse(name).render("\0", color_system=ColorSystem.STANDARD)
            before, _, after = rendered.partition("\0")
            return before, after

        self._dim, self._type, self._key, self._warn, self._odd = (
            codes(n) for n in ("dim", "bold cyan", "green", "yellow", "magenta")
        )

    async def __call__(self, event: Any, delivery: Delivery) -> None:
        # Async, so the line is written on the event loop: a sync handler would cost a thread
        # hand-off per event, several times the cost of the write itself.
        d, t, k = self._dim, self._type, self._key
        when = _when(delivery.received_at)
        # Sender values are clipped: one line per event, whatever the event holds.
        event_type, event_id = _clip(event.event_type, _WIDTH), _clip(event.event_id, _WIDTH)
        parts = [f"{d[0]}{when}{d[1]}", f"{t[0]}{_text(event_type)}{t[1]}", _text(event_id)]
        if isinstance(event, self._conversation_event):
            conv = event.payload
            fields = (
                ("conversation", conv.id),
                ("status", conv.conversation_status),
                ("customer", conv.customer.name if conv.customer else None),
                ("to", conv.to_phone_number),
                ("endReason", conv.end_reason),
                ("summary", _clip(conv.summary or "", 60) or None),
            )
            parts += (
                f"{k[0]}{key}{k[1]}={_text(_clip(str(getattr(v, 'value', v)), _WIDTH))}"
                for key, v in fields
                if v is not None
            )
        else:
            parts.append(f"{self._odd[0]}(unknown event type){self._odd[1]}")
        if delivery.attempt > 1:
            parts.append(f"{self._warn[0]}(attempt {delivery.attempt}){self._warn[1]}")
        if delivery.origin == "reconciled":
            parts.append(
                f"{self._warn[0]}(fetched from the API: its delivery was missed){self._warn[1]}"
            )
        self._file.write(" ".join(parts) + "\n")
        self._file.flush()


_WIDTH = 120


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _text(value: object) -> str:
    # Enum members print as their value; control characters from the sender are not echoed.
    text = str(getattr(value, "value", value))
    if text.isprintable():  # almost always: one C call instead of a generator per character
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    from convhook.timefmt import format_ts

    return format_ts(datetime.fromtimestamp(ts, UTC))


def _announce(
    fmt: str,
    host: str,
    port: int,
    path: str,
    db: str,
    forward_to: str | None,
    *,
    signed: bool,
    token: bool,
    reconcile: str | None = None,
) -> Callable[[], None]:
    """Say where events are taken and how they are checked: a banner on stderr in text mode,
    one ``listening`` record in json mode (stderr then holds JSON lines only).

    The receiver logs its unsigned (or token) mode when it starts, which in text mode would
    repeat the banner's warning: those records are dropped then, so the warning shows once.
    Returns the function that stops dropping them.
    """
    if db.startswith(("postgresql://", "postgres://")):
        from convhook.store.engine.postgres import redact

        db = redact(db)
    url = f"http://{host}:{port}{path}"
    if fmt == "json":
        checks = [name for name, on in (("signature", signed), ("token", token)) if on]
        log.info(
            "listening for webhooks on %s",
            url,
            extra={
                "action": "listening",
                "url": url,
                "inbox": db,
                "forward_to": forward_to,
                "reconcile_api": reconcile,
                "checks": checks,
                "health": [f"http://{host}:{port}/healthz", f"http://{host}:{port}/readyz"],
            },
        )
        return lambda: None
    _banner(url, db, forward_to, signed=signed, token=token, reconcile=reconcile)
    said = _Said()
    receiver_log = logging.getLogger("convhook.receiver")
    receiver_log.addFilter(said)
    return lambda: receiver_log.removeFilter(said)


class _Said(logging.Filter):
    """Drops the receiver's start-up records about its mode, which the banner said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) not in ("unsigned_mode", "token_mode")


def _banner(
    url: str,
    db: str,
    forward_to: str | None,
    *,
    signed: bool,
    token: bool,
    reconcile: str | None = None,
) -> None:
    from rich.markup import escape

    def say(line: str) -> None:
        # Not wrapped: a narrow or absent terminal must not split the warning into fragments.
        err.print(line, soft_wrap=True)

    say(f"[bold]convhook listen[/]: POST {escape(url)}")
    say(f"  inbox: {escape(db)}")
    if forward_to:
        say(f"  forwarding to: {escape(forward_to)}")
    if reconcile:
        say(f"  filling sequence gaps from: {escape(reconcile)}")
    if token:
        both = "a valid signature and " if signed else ""
        say(f"  requires: {both}the shared token (Authorization: Bearer or x-api-key)")
    say("  health checks: GET /healthz, GET /readyz")
    if token and not signed:
        say(
            "  [yellow]note:[/] a token does not cover the body and never expires: a captured "
            "request can be sent again. Use --secret whenever the sender signs."
        )
    elif not signed:
        say(
            "[bold white on red] WARNING [/] [bold red]no --secret given: accepting UNSIGNED "
            "events. Anyone who can reach this port can post events. Pass --secret whsec_... "
            "to verify signatures.[/]"
        )


def register(app: typer.Typer) -> None:
    app.command()(listen)
