"""Every API error as JSON ``{"error", "problems": [{"field", "problem"}]}``, and the intake
limits every request passes before a route sees it (docs/api-limits.md).

Domain errors carry a ``status_code``; the handlers here turn them, FastAPI's validation
errors and Starlette's HTTP errors into that one shape, so a client parses a single format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from convhook.errors import (
    ClosedError,
    ConflictError,
    ConvhookError,
    FieldProblem,
    PayloadError,
    StoreError,
)
from convhook.lifecycle import TransitionError
from convhook.store.producer import ActiveLimitError

log = logging.getLogger("convhook.api")

UNPARSABLE = "There was an error parsing the body"
"""FastAPI's message for a body json.loads gives up on (e.g. an integer over 4,300 digits)."""


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


class BodyRefused(HTTPException):
    """Raised from ``receive`` for a refused body (FastAPI re-raises it from body parsing)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status_code, error.message)
        self.error = error


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
    if isinstance(exc, BodyRefused):
        return error_response(exc.error)
    problems = []
    if exc.status_code == 400 and exc.detail == UNPARSABLE:
        problems.append(FieldProblem("body", "cannot be parsed"))
    return _answer(exc.status_code, str(exc.detail), problems, headers=exc.headers)


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
    if isinstance(exc, (PayloadError, ConflictError)):
        return _answer(status, exc.message, exc.problems)
    if isinstance(exc, StoreError) and not isinstance(exc, ClosedError):
        # The database is down or restarting: the client may retry, but a commit can have
        # gone through before the connection broke, so it reads before it writes again.
        # The driver's text names the server and database and stays in the server's log.
        log.warning("database unavailable: %s", exc, extra={"action": "store_unavailable"})
        return _answer(
            503,
            "the database is unavailable; retry later. A change may have been applied before "
            "the failure: read the object before sending it again",
            headers={"Retry-After": str(retry_after)},
        )
    return _answer(status, str(exc))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ConvhookError, _convhook)


def invalid(problems: Sequence[FieldProblem]) -> ApiError:
    """The 422 answered for field problems found before or by a route's model."""
    text = "; ".join(f"{p.field}: {p.problem}" for p in problems)
    return ApiError(422, f"request failed validation: {text}", problems)
