"""The plain-ASGI hot path: read, check, verify, validate, store, answer.

No framework sits between the server and the receiver, so a request costs little more
than the work it needs. The app also speaks the ASGI ``lifespan`` protocol, so
``uvicorn.run(receiver.asgi_app())`` opens the inbox and starts the worker by itself.

With ``health`` (the default) it answers ``GET /healthz`` and ``GET /readyz`` below its
mount point (:mod:`convhook.receiver.health`), without a signature or token. They are
looked for only where a request would otherwise be refused (another path, or not a POST),
so a webhook's POST pays nothing for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from convhook.receiver import health, replies
from convhook.receiver.replies import Reply

if TYPE_CHECKING:
    from convhook.receiver.receiver import Receiver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("convhook.receiver.app")

_NOT_FOUND = replies.error(404, "not found: webhooks are accepted on the receiver's path only")
_INCOMPLETE = replies.error(400, "the client disconnected before sending the whole body")
_NOT_STARTED = replies.error(
    503, "the receiver is not started: use its ASGI lifespan or `async with receiver:`"
)


class ReceiverApp:
    """An ASGI application for one :class:`~convhook.receiver.Receiver`."""

    def __init__(
        self, receiver: Receiver, path: str | None = "/webhook", *, health: bool = True
    ) -> None:
        self.receiver = receiver
        self.path = path
        self.health = health
        self._owns_lifecycle = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            reply = await self._http(scope, receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": reply.raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": reply.body})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive) -> Reply:
        receiver = self.receiver
        if self.path is not None and _route_path(scope) != self.path:
            return await self._health(scope) or _NOT_FOUND
        method = scope["method"]
        if method != "POST":
            if self.path is None and (answer := await self._health(scope)) is not None:
                return answer
            return receiver.reject(replies.method_not_allowed(method))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if receiver.token_check is not None:
            # Before the body is read or judged: a sender without the token learns nothing
            # about what the receiver would accept.
            refused = receiver.token_check.problem(headers)
            if refused is not None:
                return receiver.reject(replies.unauthorized(refused))
        bad_type = replies.check_content_type(headers.get("content-type"))
        if bad_type is not None:
            return receiver.reject(bad_type)
        limit = receiver.max_body
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return receiver.reject(replies.error(400, "content-length is not a number"))
            if size > limit:
                return receiver.reject(receiver.too_large(size))
        try:
            body = await _read_body(receive, limit)
        except _Disconnected:
            # The client left (or was cut off by a read deadline) before sending the whole
            # body: nobody reads the answer, and half a body is not checked or logged.
            return _INCOMPLETE
        if body is None:
            return receiver.reject(receiver.too_large(None))
        if not receiver.started:
            return _NOT_STARTED
        return await receiver.ingest(headers, body)

    async def _health(self, scope: Scope) -> Reply | None:
        """The answer to a health check, or None if the request is not one."""
        if not self.health or scope["method"] not in ("GET", "HEAD"):
            return None
        path = _route_path(scope)
        if path == "/healthz":
            return health.ALIVE
        if path == "/readyz":
            return (await health.readiness(self.receiver)).reply()
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if not self.receiver.started:
                        await self.receiver.start()
                        self._owns_lifecycle = True
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._owns_lifecycle:
                    await self.receiver.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


class _Disconnected(Exception):
    """The client disconnected before the end of its request body."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows over ``limit`` bytes."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
