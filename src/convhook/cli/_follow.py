"""``convhook events tail`` against a server: follow ``/api/v2/stream``, reconnecting with
``Last-Event-ID`` so nothing is missed or printed twice, and print each message."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

from convhook.cli._common import err, out
from convhook.cli.remote import STREAM_IDLE_S, Client, Connection, run_remote

if TYPE_CHECKING:
    from convhook.cli.remote import Message

COLOURS = {
    "conversation.userJoined": "green",
    "conversation.userLeft": "yellow",
    "conversation.completed": "cyan",
    "conversation.analysisCompleted": "magenta",
    "endpoint.disabled": "red",
    "endpoint.enabled": "blue",
    "endpoint.recovered": "bright_green",
    "delivery.failed": "bright_red",
}
"""The colour of each event type, in every form of ``events tail`` and ``events list``."""
_RECONNECT_S = (0.5, 10.0)
"""The first and the longest wait before reconnecting to a dropped stream."""


def stream(conn: Connection, params: dict[str, str | None], as_json: bool) -> None:
    """Follow the server's stream until interrupted (see :func:`_follow`)."""
    run_remote(conn, lambda api: _follow(api, params, as_json))


async def _follow(api: Client, params: dict[str, str | None], as_json: bool) -> None:
    """Print each message of ``/api/v2/stream``; when the connection drops or goes silent,
    reconnect with ``Last-Event-ID`` so nothing is missed or printed twice. The first
    connection failing is an error: a later one is retried, with growing waits."""
    import aiohttp

    from convhook.cli.remote import Client, RemoteError, SseParser, describe, refuse_redirect, sse

    path = "/api/v2/stream"
    query = {k: v for k, v in params.items() if v is not None}
    parser = SseParser()
    wait = _RECONNECT_S[0]
    connected_once = False
    async with Client(api.conn, streaming=True) as stream:
        while True:
            headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
            if parser.last_id is not None:
                headers["last-event-id"] = parser.last_id
            try:
                async with stream.session.get(
                    api.conn.url + path, params=query, headers=headers, allow_redirects=False
                ) as r:
                    refuse_redirect(r, api.conn.url)
                    if r.status == 400 and parser.last_id is not None:
                        # The server's logs end before the last message shown (its database
                        # was replaced): nothing to resume, so follow from now.
                        err.print(
                            f"[yellow]the server has no message {parser.last_id} any more[/]: "
                            "following from now"
                        )
                        parser.last_id = None
                        query.pop("since", None)  # from now: what was printed stays printed
                        continue
                    if r.status >= 400:
                        problem = describe(r.status, "GET", path, await r.text())
                        if r.status == 404 and not connected_once:
                            problem += " (a server older than this command has no stream)"
                        if r.status < 500 or not connected_once:
                            raise RemoteError(problem)
                        reason = f"HTTP {r.status}"
                    else:
                        _waiting(api.conn.url, query, connected_once)
                        connected_once = True
                        wait = _RECONNECT_S[0]
                        async for message in sse(r, parser):
                            _print_message(message, as_json)
                        reason = "the server closed the stream"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if not connected_once:
                    raise api.unreachable(exc) from None
                reason = str(exc) or type(exc).__name__
            except TimeoutError:
                if not connected_once:
                    raise RemoteError(f"no answer from {api.conn.url}{path}") from None
                reason = f"nothing for {STREAM_IDLE_S:.0f} s"
            # A server's `retry:` is a hint, kept within bounds: 0 would spin on repeated
            # 5xx, a huge value would never come back.
            hinted = parser.retry_ms / 1000 if parser.retry_ms is not None else wait
            delay = min(max(hinted, _RECONNECT_S[0]), 60.0)
            err.print(f"[yellow]stream lost[/] ({reason}): reconnecting in {delay:g} s")
            await asyncio.sleep(delay)
            wait = min(wait * 2, _RECONNECT_S[1])


def _waiting(url: str, query: dict[str, str], again: bool) -> None:
    """The line on stderr that says what is being followed while nothing has come yet."""
    if again:
        err.print("[green]reconnected[/], resuming after the last message shown")
        return
    only = ", ".join(f"{k}={v}" for k, v in query.items())
    err.print(
        f"following events and delivery attempts at {url}"
        + (f" ({only})" if only else "")
        + ": waiting for the next one; Ctrl-C stops",
        markup=False,
    )


def _print_message(message: Message, as_json: bool) -> None:
    """One event or attempt of the stream, as the database form prints it."""
    if message.event not in ("event", "attempt"):
        return  # a kind of message this version does not know: newer servers may add some
    try:
        data = json.loads(message.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        err.print(f"skipped a message that is not a JSON object (id {message.id})", markup=False)
        return
    if as_json:
        sys.stdout.write(json.dumps({"kind": message.event, **data}) + "\n")
        sys.stdout.flush()
        return
    from rich.markup import escape

    if message.event == "event":
        colour = COLOURS.get(str(data.get("eventType")), "white")
        out.print(
            f"[dim]{escape(str(data.get('createdAt')))}[/]  "
            f"[{colour}]{escape(str(data.get('eventType', ''))):<32}[/] "
            f"{escape(str(data.get('conversationId')))} "
            f"[dim]#{escape(str(data.get('sequence')))}  "
            f"{escape(str(data.get('eventId')))}[/]",
            markup=True,
        )
        return
    status = data.get("statusCode")
    ok = isinstance(status, int) and 200 <= status < 300
    outcome = str(status) if status is not None else str(data.get("error") or "error")
    # The whole error is in --json and `convhook deliveries show`: a line stays a line.
    outcome = outcome if len(outcome) <= 28 else outcome[:27] + "…"
    latency = data.get("latencyMs")
    out.print(
        f"[dim]{escape(str(data.get('attemptedAt')))}[/]    [{'green' if ok else 'red'}]-> "
        f"{escape(outcome):<28}[/] {escape(str(data.get('endpointId')))} [dim]"
        f"{latency if not isinstance(latency, int | float) else round(latency)} ms  "
        f"{escape(str(data.get('eventId')))}  attempt {escape(str(data.get('attempt')))} "
        f"{escape(str(data.get('outcome') or ''))}[/]",
        markup=True,
    )
