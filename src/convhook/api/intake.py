"""The checks every API request passes before a route runs: the body limit, nesting,
valid text (no lone surrogate, no NUL) and finite numbers in bodies, paths and query strings.

They live in one ASGI middleware, so every route, FastAPI's and the transition fast path
alike, refuses the same inputs with the same JSON error naming the field; the limits are
documented in ``docs/api-limits.md``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convhook.api.errors import (
    ApiError,
    BodyRefused,
    BodyTooLarge,
    error_body,
    error_response,
    invalid,
)
from convhook.errors import FieldProblem
from convhook.events import DEFAULT_MAX_BODY
from convhook.jsonnumbers import may_hold_non_finite

MAX_DEPTH = 32
"""Most arrays and objects a JSON body may nest inside one another."""


class Intake:
    """ASGI middleware applying the intake limits before any route runs: 413 for a body over
    ``max_bytes`` (reading no more), 4xx for what refused_target and refused_body refuse."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = refused_target(scope)
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        limit = self.max_bytes
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                declared = None
                break
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_too_large(send, limit)
            return
        seen = 0
        chunks: list[bytes] = []

        async def checked() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    raise BodyTooLarge(limit)
                if chunk:
                    chunks.append(chunk)
                if chunks and not message.get("more_body", False):
                    error = refused_body(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    if error is not None:
                        raise BodyRefused(error)
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, checked, tracked)
        except BodyTooLarge:
            if started:
                raise
            await send_too_large(send, limit)
        except BodyRefused as exc:
            if started:
                raise
            await error_response(exc.error)(scope, receive, send)


# The intake checks run on every request: cheap byte tests decide whether a body needs a
# closer look, and every scan is linear in the body (escapes are removed before strings, so
# each string is one regex attempt; a digit run is tried from its first digit only).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def refused_body(body: bytes, *, numbers: bool = True) -> ApiError | None:
    """Why no route may take a body: nested over :data:`MAX_DEPTH`, a string (or name) not
    valid Unicode or holding NUL, a number that is not finite (unless ``numbers`` is false:
    the caller checks them as it parses); None when it may (bad JSON is the route's call)."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(body):
        return invalid([FieldProblem("body", f"nested deeper than {MAX_DEPTH} levels")])
    if not _suspect(body) and not (numbers and may_hold_non_finite(body)):
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    problem = _walk(doc, "")
    return None if problem is None else invalid([problem])


def _too_deep(body: bytes) -> bool:
    # Brackets inside strings do not nest; what is left is signed +1/-1 and summed as it goes.
    text = _STRING.sub(b"", _ESCAPE.sub(b"", body))
    signs = memoryview(text.translate(_SIGNS, _NOT_BRACKETS)).cast("b")
    return max(itertools.accumulate(signs), default=0) > MAX_DEPTH


def _suspect(body: bytes) -> bool:
    """Whether a body may hold bad text: a lone surrogate or NUL arrives as a ``\\u``
    escape or as bytes that are not UTF-8."""
    if b"\\u" in body or body.isascii():
        return b"\\u" in body
    try:
        body.decode()
    except UnicodeDecodeError:
        return True
    return False


def _shown(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def text_problem(value: str) -> str | None:
    """What makes ``value`` unfit to store and send, or None."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "holds a lone surrogate: not valid Unicode"
    if "\x00" in value:
        return "holds U+0000 (NUL), which cannot be stored"
    return None


def _walk(value: Any, path: str) -> FieldProblem | None:
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else FieldProblem(path or "body", problem)
    if isinstance(value, float):
        return None if math.isfinite(value) else FieldProblem(path or "body", "not finite")
    found = None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{_shown(key)}" if path else _shown(key)
            problem = text_problem(key)
            if problem is not None:
                return FieldProblem(where, f"the name {problem}")
            if (found := _walk(item, where)) is not None:
                break
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _walk(item, f"{path}[{index}]")) is not None:
                break
    return found


def refused_target(scope: Scope) -> ApiError | None:
    """Why a request's path or query string cannot be taken (not valid UTF-8 once
    percent-decoded, or holding NUL), naming the parameter; None when it can."""
    raw = scope.get("raw_path")
    path: str = scope["path"]
    if (b"%" in raw if raw is not None else not path.isascii()) or "\x00" in path:
        data = unquote_to_bytes(raw) if raw is not None else path.encode("utf-8", "surrogatepass")
        problem = _bytes_problem(data)
        if problem is not None:
            return invalid([FieldProblem(_path_parameter(scope), problem)])
    query: bytes = scope.get("query_string", b"")
    if b"%" in query or not query.isascii():
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            name, value = unquote_to_bytes(name.replace(b"+", b" ")), value.replace(b"+", b" ")
            problem = _bytes_problem(name) or _bytes_problem(unquote_to_bytes(value))
            if problem is not None:
                field = _shown(name.decode("utf-8", "replace")) or "query"
                return invalid([FieldProblem(field, problem)])
    return None


def _bytes_problem(data: bytes) -> str | None:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "not valid UTF-8 once percent-decoded"
    return text_problem(text)


def _path_parameter(scope: Scope) -> str:
    """The path parameter holding bad text (U+FFFD: bytes not UTF-8), else ``path``."""
    for route in _flat(getattr(getattr(scope.get("app"), "router", None), "routes", ())):
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        for name, value in child.get("path_params", {}).items():
            if isinstance(value, str) and ("\ufffd" in value or text_problem(value)):
                return str(name)
    return "path"


def _flat(routes: Sequence[Any]) -> Iterator[Any]:
    # An included router's wrapper matches without naming parameters; its routes name them.
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


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
