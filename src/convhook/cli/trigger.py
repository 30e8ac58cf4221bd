"""``convhook trigger``: send realistic, freshly generated, signed sample events to a URL."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import typer
from rich.markup import escape

from convhook.cli._common import err, fail, out, print_json, run
from convhook.config import option
from convhook.errors import ConvhookError
from convhook.events import EventType, OperationalEventType

# Typer takes one enumeration per argument: the catalogue's two, as one list of choices.
TriggerType = StrEnum(  # type: ignore[misc]
    "TriggerType",
    {m.name: m.value for m in [*EventType, *OperationalEventType]},
)


@dataclass(frozen=True)
class Sent:
    """The outcome of one request."""

    event_id: str
    status: int | None
    latency_ms: float
    body: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def trigger(
    event_type: TriggerType = typer.Argument(
        ...,
        help="Which event to send: a conversation event, or an operational one (endpoint.*, "
        "delivery.failed) to try an alerting receiver.",
    ),
    url: str = option(..., "--url", env="TRIGGER_URL", help="Where to POST the event."),
    secret: str | None = option(
        None, "--secret", env="SECRET", help="whsec_ secret to sign with (unsigned if absent)."
    ),
    token: str | None = option(
        None,
        "--token",
        env="WEBHOOK_TOKEN",
        help="Shared token to send as 'Authorization: Bearer <token>', for a receiver that "
        "takes tokens (`convhook listen --token`).",
    ),
    assignments: list[str] | None = option(
        None,
        "--set",
        env="TRIGGER_SET",
        help="Override a payload field: field=value, dotted paths (customer.name=Jane); "
        "the value is JSON if it parses, else a string. Repeatable. Unknown fields and values "
        "outside the catalogue are refused unless --force.",
    ),
    force: bool = option(
        False,
        "--force",
        env="TRIGGER_FORCE",
        help="Send --set fields and enumeration values the catalogue does not know, on purpose "
        "(to test how a receiver takes them).",
    ),
    count: int = option(1, "--count", env="TRIGGER_COUNT", min=1, help="How many events."),
    concurrency: int = option(
        1, "--concurrency", env="TRIGGER_CONCURRENCY", min=1, help="Requests in flight."
    ),
    timeout: float = option(15.0, "--timeout", env="TRIGGER_TIMEOUT", help="Seconds per request."),
    as_json: bool = option(False, "--json", env="JSON", help="Print results as JSON."),
) -> None:
    """Send COUNT signed sample events of EVENT_TYPE to URL; exit 1 if any answer is not 2xx.

    Example: ``convhook trigger conversation.completed --url http://127.0.0.1:8000/webhook
    --secret whsec_... --set customer.name="Jane Roe" --count 100 --concurrency 10``
    """
    from convhook.samples import check_override, parse_assignment, sample_event
    from convhook.signing import as_secrets

    try:
        overrides = dict(parse_assignment(a) for a in assignments or [])
        if not force:
            for path, value in overrides.items():
                check_override(path, value, event_type.value)
        # One event built now: a value its field's type refuses is reported before sending.
        sample_event(event_type.value, overrides=overrides)
        secrets = as_secrets(secret) if secret else None
        if token is not None:
            # Imported only here: the receiver package is heavy for a command that sends.
            from convhook.receiver.tokens import check_token

            check_token(token)
    except ConvhookError as exc:
        # The message may quote the user's values: brackets in them are not markup.
        fail(escape(str(exc)))
    if not url.startswith(("http://", "https://")):
        fail(f"--url must be an http:// or https:// URL, got {url!r}")
    results, elapsed = run(
        _send_all(
            event_type,
            url,
            secrets,
            token,
            overrides,
            count,
            concurrency,
            timeout,
            progress=count > 1,
        )
    )
    if count == 1:
        _report_one(results[0], as_json)
    else:
        _report_many(results, elapsed, as_json)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


async def _send_all(
    event_type: TriggerType,
    url: str,
    secrets: Any,
    token: str | None,
    overrides: dict[str, Any],
    count: int,
    concurrency: int,
    timeout: float,
    *,
    progress: bool,
) -> tuple[list[Sent], float]:
    import aiohttp
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from convhook import __version__
    from convhook.samples import sample_event
    from convhook.signing import sign

    results: list[Sent] = []
    remaining = iter(range(count))
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not progress,
    )
    task = bar.add_task(f"sending {event_type.value}", total=count)
    headers_base = {"content-type": "application/json", "user-agent": f"convhook/{__version__}"}
    if token:
        headers_base["authorization"] = f"Bearer {token}"

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            event = sample_event(event_type.value, overrides=overrides)
            body = event.to_json()
            headers = dict(headers_base)
            if secrets:
                headers.update(sign(secrets, event.event_id, body))
            started = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as r:
                    text = await r.text(errors="replace")
                    results.append(Sent(event.event_id, r.status, _ms(started), text))
            except (aiohttp.ClientError, TimeoutError) as exc:
                message = str(exc) or type(exc).__name__
                results.append(Sent(event.event_id, None, _ms(started), "", message))
            bar.advance(task)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    with bar:
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(min(concurrency, count))))
    return results, time.perf_counter() - started


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _report_one(result: Sent, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "eventId": result.event_id,
                "status": result.status,
                "latencyMs": round(result.latency_ms, 2),
                "body": result.body,
                "error": result.error,
            }
        )
        return
    if result.error is not None:
        err.print(f"[red]request failed[/] after {result.latency_ms:.1f} ms: {result.error}")
        return
    colour = "green" if result.ok else "red"
    err.print(
        f"[{colour}]{result.status}[/] in {result.latency_ms:.1f} ms  event {result.event_id}"
    )
    out.print(result.body, markup=False)


def _report_many(results: list[Sent], elapsed: float, as_json: bool) -> None:
    from rich.table import Table

    latencies = sorted(r.latency_ms for r in results)
    summary = {
        "sent": len(results),
        "ok": sum(r.ok for r in results),
        "non2xx": sum(r.status is not None and not r.ok for r in results),
        "errors": sum(r.error is not None for r in results),
        "seconds": round(elapsed, 3),
        "perSecond": round(len(results) / elapsed, 1) if elapsed else None,
        "p50Ms": round(statistics.median(latencies), 2),
        "p99Ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }
    if as_json:
        print_json(summary)
        return
    table = Table(title="trigger summary")
    for key in summary:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in summary.values()))
    out.print(table)
    for failed in [r for r in results if not r.ok][:5]:
        err.print(
            f"[red]{failed.status or 'error'}[/] {failed.event_id}: {failed.error or failed.body[:200]}"
        )


def register(app: typer.Typer) -> None:
    app.command()(trigger)
