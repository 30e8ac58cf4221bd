"""The lifecycle transitions answered in front of FastAPI, for the requests that carry the load.

``POST /api/v2/conversations/{id}/{action}`` is most of the API's traffic, and FastAPI's
middleware, routing and dependency machinery cost several times what a transition itself costs
on the event loop. :class:`TransitionFastPath` answers those requests straight from ASGI with
the same authentication, body parsing and error documents as the FastAPI routes in
:mod:`convhook.api.transitions`; any request shape it does not take on (another method, a
chunked body, a mounted app) goes to FastAPI, whose routes also publish the OpenAPI document.
"""

from __future__ import annotations

import re

from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from convhook import tracing
from convhook.api.auth import api_key, authenticate
from convhook.api.errors import error_response
from convhook.api.intake import send_too_large
from convhook.api.transitions import MODELS, SPANS, given_fields, received_trace
from convhook.errors import ConvhookError

# Starlette's ``{conversation_id}`` matches one non-empty path segment.
_PATH = re.compile(r"/api/v2/conversations/([^/]+)/(dial|join|leave|end|fail|analysis)")
_JSON_HEADERS = (b"content-type", b"application/json")


class TransitionFastPath:
    """Answers transition requests of an app whose ``state`` holds the outbox and key cache."""

    def __init__(self, state: State, max_body: int) -> None:
        self.state = state
        self.max_body = max_body
        self.actions = {a.value: a for a in MODELS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is a transition this path takes on; False (nothing read
        or sent) when FastAPI must answer it."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return False
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return False
        raw = scope.get("raw_path")
        query = scope["query_string"]
        if (
            (b"%" in raw if raw is not None else not match[1].isascii() or "\x00" in match[1])
            or b"%" in query
            or not query.isascii()
        ):
            # The path or query may hold text the intake refuses: FastAPI's middleware
            # checks it (see convhook.api.intake.refused_target).
            return False
        x_api_key: str | None = None
        authorization: str | None = None
        claimed: str | None = None
        content_type: str | None = None
        traceparent: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            # The first of repeated headers counts, as with Starlette's ``Headers.get``.
            if name == b"x-api-key":
                if x_api_key is None:
                    x_api_key = value.decode("latin-1")
            elif name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-workspace-id":
                if claimed is None:
                    claimed = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"traceparent":
                if traceparent is None:
                    traceparent = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                return False
        if declared is not None:
            if not declared.isdigit():
                return False
            if int(declared) > self.max_body:
                await send_too_large(send, self.max_body)
                return True
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return True  # the client went away: nobody to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
        action = self.actions[match[2]]
        try:
            workspace = await authenticate(self.state, api_key(x_api_key, authorization), claimed)
            given = given_fields(MODELS[action], body, content_type)
            trace = received_trace(traceparent)
            with tracing.span(SPANS[action], trace, kind="server"):
                change = await self.state.outbox.transition(workspace.id, match[1], action, given)
        except ConvhookError as exc:
            await error_response(exc, self.state.retry_after)(scope, receive, send)
            return True
        answer = change.json.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), _JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return True
