"""Every API error as JSON ``{"error", "problems": [{"field", "problem"}]}``, and the intake
limits every request passes before a route sees it (docs/api-limits.md).

:data:`STATUS` is the one table from a :mod:`convhook.errors` class to its HTTP answer; the
handlers here turn domain errors (through that table), FastAPI's validation errors and
Starlette's HTTP errors into that one shape, so a client parses a single format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from convhook.errors import (
    ActiveLimitError,
    ConflictError,
    ConstraintError,
    ConvhookError,
    EventTooLarge,
    FieldProblem,
    GoneError,
    NotFoundError,
    PayloadError,
    PayloadTooLarge,
    SignatureError,
    StoreError,
    TargetError,
    TransitionError,
    UnsendableChange,
)

log = logging.getLogger("convhook.api")

UNPARSABLE = "There was an error parsing the body"
"""FastAPI's message for a body json.loads gives up on (e.g. an integer over 4,300 digits)."""


class ApiError(ConvhookError):
    """An error a route answers as-is: status, message, field problems and headers.

    Internal to the API (raised by a route, answered by the handler below), so not part of
    the :mod:`convhook.errors` tree a library user catches.
    """

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


def _transition(exc: Any) -> dict[str, Any]:
    return {"state": exc.phase.value, "allowed": [a.value for a in exc.allowed]}


def _limit(exc: Any) -> dict[str, Any]:
    return {"limit": exc.limit}


_STORE_DOWN = (
    "the database is unavailable; retry later. A change may have been applied before the "
    "failure: read the object before sending it again"
)


@dataclass(frozen=True)
class Answer:
    """How the API answers one exception class."""

    status: int
    retry_after: bool = False
    """Add ``Retry-After``: the client may send the same request again after that long."""
    message: str | None = None
    """Said instead of the exception's text, which then stays in the server's log."""
    extra: Callable[[Any], dict[str, Any]] | None = None
    """Context fields the answer adds next to ``error`` and ``problems``."""


STATUS: dict[type[ConvhookError], Answer] = {
    PayloadError: Answer(400),
    PayloadTooLarge: Answer(413),
    UnsendableChange: Answer(422),
    EventTooLarge: Answer(422),
    TargetError: Answer(422),
    SignatureError: Answer(401),
    NotFoundError: Answer(404),
    GoneError: Answer(410),
    ConflictError: Answer(409),
    TransitionError: Answer(409, extra=_transition),
    ActiveLimitError: Answer(429, retry_after=True, extra=_limit),
    # The database is down or restarting: the client may retry, but a commit can have gone
    # through before the connection broke, so it reads before it writes again. The driver's
    # text names the server and database and stays in the server's log.
    StoreError: Answer(503, retry_after=True, message=_STORE_DOWN),
    # Stored data the change collides with: the same request would fail the same way, so
    # no Retry-After; the driver's text stays in the server's log.
    ConstraintError: Answer(
        409, message="the change collides with data stored for this object; it was not made"
    ),
}
"""Each domain error's answer, looked up along the exception's class hierarchy (a subclass
not listed gets its nearest listed parent's); anything else, e.g. a
:class:`~convhook.errors.UsageError`, is a bug in the server: 500."""

_SERVER_BUG = Answer(500)


def answer_for(exc: BaseException) -> Answer:
    """The :data:`STATUS` row for ``exc``'s class or its nearest listed parent, else a 500."""
    for cls in type(exc).__mro__:
        found = STATUS.get(cls)
        if found is not None:
            return found
    return _SERVER_BUG


def error_response(exc: ConvhookError, retry_after: int = 1) -> Response:
    """The JSON answer to a domain error (``retry_after``: the seconds advised with a 429 or
    a 503)."""
    if isinstance(exc, ApiError):
        return _answer(exc.status_code, exc.message, exc.problems, exc.headers, **exc.extra)
    answer = answer_for(exc)
    headers = {"Retry-After": str(retry_after)} if answer.retry_after else None
    extra = answer.extra(exc) if answer.extra is not None else {}
    if answer.message is not None:
        log.warning("database unavailable: %s", exc, extra={"action": "store_unavailable"})
        return _answer(answer.status, answer.message, headers=headers, **extra)
    if answer.status >= 500:
        # A misuse inside the server (e.g. a store used after it was closed): the client
        # cannot fix it, so the traceback goes to the log.
        log.error("internal error: %s", exc, exc_info=exc, extra={"action": "internal_error"})
    message = str(getattr(exc, "message", exc))
    problems: Sequence[FieldProblem] = getattr(exc, "problems", ())
    return _answer(answer.status, message, problems, headers, **extra)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ConvhookError, _convhook)


def invalid(problems: Sequence[FieldProblem]) -> ApiError:
    """The 422 answered for field problems found before or by a route's model."""
    text = "; ".join(f"{p.field}: {p.problem}" for p in problems)
    return ApiError(422, f"request failed validation: {text}", problems)
