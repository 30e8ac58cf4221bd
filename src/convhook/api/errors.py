"""Every API error as JSON ``{"error", "problems": [{"field", "problem"}]}``, and the body limit.

Domain errors carry a ``status_code``; the handlers here turn them, FastAPI's validation
errors and Starlette's HTTP errors into that one shape, so a client parses a single format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convhook.errors import ConvhookError, FieldProblem, PayloadError
from convhook.lifecycle import TransitionError
from convhook.store.producer import ActiveLimitError

DEFAULT_MAX_BODY = 1024 * 1024


class ApiError(ConvhookError):
    """An error answered as-is: status, message, field problems and headers."""

    def __init__(
        self,
        status_code: int,
        message: str,
        problems: Sequence[FieldProblem] = (),
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.problems = tuple(problems)
        self.headers = headers
        self.extra = extra or {}


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; FastAPI re-raises HTTP errors."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the {limit}-byte limit")
        self.limit = limit


def error_body(message: str, problems: Sequence[FieldProblem] = (), **extra: Any) -> bytes:
    """The JSON error document."""
    doc = {"error": message, "problems": [p.as_dict() for p in problems], **extra}
    return json.dumps(doc).encode()


def _answer(
    status: int,
    message: str,
    problems: Sequence[FieldProblem] = (),
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        error_body(message, problems, **extra),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def validation_problems(errors: Sequence[Any], *, strip: int = 1) -> list[FieldProblem]:
    """FastAPI/pydantic errors as field problems; the first ``strip`` location parts
    (``body``, ``query``) are dropped so fields read as the client wrote them."""
    problems = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "body"
        path = loc[strip:] if where in ("body", "query", "path", "header") else loc
        field = ".".join(path) or "body"
        if where == "query" and path:
            field = path[0]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        problems.append(FieldProblem(field, message))
    return problems


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _answer(400, "body is not valid JSON", [FieldProblem("body", "invalid JSON")])
    problems = validation_problems(errors)
    text = "; ".join(f"{p.field}: {p.problem}" for p in problems)
    return _answer(422, f"request failed validation: {text}", problems)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, BodyTooLarge):
        problem = FieldProblem("body", f"larger than {exc.limit} bytes")
        return _answer(413, str(exc.detail), [problem])
    return _answer(exc.status_code, str(exc.detail), headers=exc.headers)


async def _convhook(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConvhookError)
    return error_response(exc, int(getattr(request.app.state, "retry_after", 1)))


def error_response(exc: ConvhookError, retry_after: int = 1) -> Response:
    """The JSON answer to a domain error (``retry_after``: seconds advised after a 429)."""
    status = int(getattr(exc, "status_code", 500))
    if isinstance(exc, ApiError):
        return _answer(status, exc.message, exc.problems, exc.headers, **exc.extra)
    if isinstance(exc, TransitionError):
        return _answer(
            409,
            str(exc),
            state=exc.phase.value,
            allowed=[a.value for a in exc.allowed],
        )
    if isinstance(exc, ActiveLimitError):
        return _answer(429, str(exc), headers={"Retry-After": str(retry_after)}, limit=exc.limit)
    if isinstance(exc, PayloadError):
        return _answer(status, exc.message, exc.problems)
    return _answer(status, str(exc))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ConvhookError, _convhook)


class BodyLimit:
    """ASGI middleware refusing bodies over ``max_bytes`` with 413, reading at most that much."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                declared = None
                break
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                await send_too_large(send, limit)
                return
            # The server hands over no more than the declared length: nothing to count, so
            # the request goes on unwrapped (the common, cheap case).
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await send_too_large(send, limit)


async def send_too_large(send: Send, limit: int) -> None:
    """Answer 413 for a body over ``limit`` bytes."""
    # No "connection: close": uvicorn then discards the rest of the body instead of
    # resetting the connection, so the client can read this answer.
    body = error_body(
        f"request body is over the {limit}-byte limit",
        [FieldProblem("body", f"larger than {limit} bytes")],
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
