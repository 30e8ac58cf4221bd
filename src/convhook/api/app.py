"""The producer API's app factory: routers found by module, errors as JSON, the catalogue
of events in the OpenAPI ``webhooks`` section."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi.routing
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, compile_path
from starlette.types import Receive, Scope, Send

from convhook import __version__
from convhook.api import errors, intake
from convhook.api.auth import SECURITY_SCHEMES, KeyCache
from convhook.api.deps import ApiSettings
from convhook.api.fast_path import TransitionFastPath
from convhook.outbox import Outbox
from convhook.schema import webhooks_section
from convhook.store.delivery import DeliveryStore
from convhook.store.producer import ProducerStore

log = logging.getLogger("convhook.api")

DESCRIPTION = (
    "Record customers and conversations; every lifecycle change writes its event in the same "
    "transaction. Authenticate with `x-api-key` (and optionally `x-workspace-id`) or "
    "`Authorization: Bearer <key>`. The events endpoints receive are described under "
    "*webhooks*."
)


# Routes are matched in order, one router after another: the lifecycle transitions carry
# most of the traffic, so their router comes first.
_FIRST = ("transitions",)


def routers() -> list[APIRouter]:
    """The ``router`` of every module in the ``convhook.api`` package, the lifecycle
    transitions first, then by module name."""
    import convhook.api as package

    found = []
    modules = sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
    for info in sorted(modules, key=lambda i: i.name not in _FIRST):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            found.append(router)
    return found


class ProducerApp(FastAPI):
    """The FastAPI app with the lifecycle transitions answered ahead of its middleware and
    routing (see :mod:`convhook.api.fast_path`); everything else is plain FastAPI."""

    fast_path: TransitionFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and await fast(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def create_app(
    store: ProducerStore, settings: ApiSettings | None = None, *, metrics_token: str | None = None
) -> FastAPI:
    """The API over ``store``; the app opens the store on start-up and closes it on shutdown.
    With ``metrics_token``, ``/metrics`` answers only ``Authorization: Bearer <token>``."""
    settings = settings or ApiSettings()
    # Endpoints and deliveries live in the producer's database, which the store opens.
    deliveries = DeliveryStore(store.db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        dispatcher = None
        try:
            if settings.dispatch:
                from convhook.dispatcher import Dispatcher

                dispatcher = Dispatcher(
                    deliveries,
                    allow_private=settings.allow_private_targets,
                    policy=settings.retry_policy,
                )
                await dispatcher.start()
            app.state.dispatcher = dispatcher
            yield
        finally:
            # Attempts in flight finish and are recorded before the store closes. Said at
            # warning level (the default), so an operator sees what a stop is waiting for.
            log.warning(
                "stopping: %s then the queued writes commit and the database closes",
                "delivery attempts in flight finish and are recorded,"
                if dispatcher is not None
                else "no dispatcher here;",
                extra={"action": "shutdown"},
            )
            if dispatcher is not None:
                await dispatcher.close()
            await store.close()
            log.warning("stopped", extra={"action": "stopped"})

    app = ProducerApp(
        title="convhook producer API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by convhook.api.docs, without a CDN
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.store = store
    app.state.deliveries = deliveries
    app.state.settings = settings
    app.state.outbox = Outbox(store, max_active=settings.max_active)
    app.state.key_cache = KeyCache(store)
    app.state.retry_after = settings.retry_after
    app.state.allow_private_targets = settings.allow_private_targets
    app.state.dispatcher = None
    app.state.metrics_token = metrics_token
    errors.install(app)
    _allow_every_method(app)
    app.add_middleware(intake.Intake, max_bytes=settings.max_body)
    app.fast_path = TransitionFastPath(app.state, settings.max_body)
    for router in routers():
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version="3.1.0",
            description=app.description,
            routes=app.routes,
        )
        webhooks, components = webhooks_section()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in {**components, **_request_schemas()}.items():
            schemas.setdefault(name, schema)
        doc["webhooks"] = webhooks
        doc["components"]["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in doc["paths"].items():
            if path.startswith("/api/"):
                for method, operation in operations.items():
                    operation["security"] = [{"apiKey": []}, {"bearer": []}]
                    document_errors(method.upper(), path, operation)
                    describe_cursor(operation, _CURSOR_PATTERNS.get(path, CURSOR_PATTERN))
        # Every 422 answers an ErrorDocument: FastAPI's own validation schemas are unused.
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas.update(_error_schemas())
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _request_schemas() -> dict[str, Any]:
    """Schemas of bodies the routes parse themselves (so FastAPI does not list them)."""
    from convhook.api.conversations import ConversationBatch
    from convhook.api.transitions import MODELS

    models: list[type[BaseModel]] = [ConversationBatch, *MODELS.values()]
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


class Problem(BaseModel):
    """What is wrong with one field of a request."""

    field: str
    problem: str


class ErrorDocument(BaseModel):
    """Every error answer; some add context (a 409 the ``state`` and ``allowed`` moves, a 429
    the ``limit``)."""

    model_config = ConfigDict(extra="allow")

    error: str
    problems: list[Problem]


ERRORS: dict[int, str] = {
    400: "Malformed request: the body is not JSON, a cursor is not one this API returned, "
    "or a value cannot be read.",
    401: "Missing or wrong API key.",
    404: "No such object in this workspace.",
    409: "The object's state does not allow this, or a unique value is taken.",
    410: "The event's payload was removed by the retention job.",
    413: "The request body is over the size limit.",
    422: "A field is missing or has a wrong value; `problems` names each field.",
    429: "Too many conversations dialing or active in this workspace: retry after `Retry-After` "
    "seconds.",
    503: "The database is unavailable: retry after `Retry-After` seconds; a change may have been "
    "applied before the failure, so read the object before sending it again.",
}
"""Every error status the API answers, with what it means."""

# Every /api operation authenticates, reads its parameters and is under the body limit.
_COMMON = (400, 401, 413, 422, 503)
_TRANSITION = "/api/v2/conversations/{conversation_id}/"
# What the routes, or the store they call, raise beyond the common errors and the 404 of an
# operation with a path parameter; statuses below 400 are successes besides the route's own.
_OPERATION_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/api/v2/conversations"): (200,),
    ("GET", "/api/v2/conversations"): (404,),
    ("POST", "/api/v2/customers"): (409,),
    ("POST", "/api/v2/customers/batch"): (409,),
    ("PATCH", "/api/v2/customers/{customer_id}"): (409,),
    ("POST", "/api/v2/endpoints/{endpoint_id}/test"): (409,),
    ("POST", "/api/v2/endpoints/{endpoint_id}/recover"): (409,),
    ("GET", "/api/v2/events/{event_id}"): (410,),
    ("DELETE", "/api/v2/workspace/keys/{key_id}"): (409,),
}
_TRANSITION_STATUSES = (409, 429)
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "string"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "string"}, "required": True}},
}


def document_errors(method: str, path: str, operation: dict[str, Any]) -> None:
    """Add to ``operation`` every status it can answer, errors with the
    :class:`ErrorDocument` schema, so the published contract lists what clients get."""
    statuses = set(_COMMON) | set(_OPERATION_STATUSES.get((method, path), ()))
    if "{" in path:
        statuses.add(404)
    if method == "POST" and path.startswith(_TRANSITION):
        statuses.update(_TRANSITION_STATUSES)
    responses = operation.setdefault("responses", {})
    statuses.update(int(s) for s in responses if s.isdigit() and int(s) >= 400)
    for status in sorted(statuses):
        if status < 400:
            responses.setdefault(str(status), {"description": "Successful Response"})
            continue
        answer = responses.setdefault(str(status), {"description": ERRORS[status]})
        ref = {"$ref": "#/components/schemas/ErrorDocument"}
        answer["content"] = {"application/json": {"schema": ref}}
        if status in _HEADERS:
            answer["headers"] = _HEADERS[status]


# paging.encode_cursor's output: base64url, unpadded, of "s" and a row number. Base64 turns each
# 3 bytes into 4 characters on their own, so a cursor is "s" with its first digit or two, then
# groups of 3 digits, then a last group of 1 or 2; 18 digits at most keeps the row number a
# 64-bit integer. Empty means the first page.
_D3 = "(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][0-5w-z]"
_D2 = "(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]"
_D1 = "(?:[MN][AQgw]|O[AQ])"
CURSOR_PATTERN = f"^(?:cz[AEIMQUYcgk](?:[0-5w-z](?:(?:{_D3}){{0,4}}(?:{_D2}|{_D1})?|(?:{_D3}){{5}}(?:{_D1})?))?)?$"
"""The cursors the list operations return and accept (``nextCursor``)."""
ENDPOINT_CURSOR_PATTERN = f"^(?:cz[AEIMQUYcgk](?:[0-5w-z](?:(?:{_D3}){{0,10}}(?:{_D2}|{_D1})?))?)?$"
"""The endpoints list's cursors: the same form with up to 34 digits, as its number holds a
whole endpoint id (see convhook.api.endpoints)."""
_CURSOR_PATTERNS = {"/api/v2/endpoints": ENDPOINT_CURSOR_PATTERN}


def describe_cursor(operation: dict[str, Any], pattern: str = CURSOR_PATTERN) -> None:
    """Publish the exact form of the opaque ``cursor`` query parameter, so a client (or a
    fuzzer) knows a made-up one is refused with 400."""
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "query" and parameter["name"] == "cursor":
            parameter["schema"] = {"type": "string", "pattern": pattern}
            parameter.setdefault("description", "`nextCursor` of the previous page.")


def _error_schemas() -> dict[str, Any]:
    schema = ErrorDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    found: dict[str, Any] = schema.pop("$defs", {})
    found["ErrorDocument"] = schema
    return found


def _allow_every_method(app: FastAPI) -> None:
    """Make a 405's ``Allow`` list every method of the path's routes, not only those of the
    first route Starlette found (a path such as ``/api/v2/customers`` has a route per method)."""
    answer = app.exception_handlers[HTTPException]
    table: list[tuple[re.Pattern[str], int, frozenset[str]]] = []

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            # Routes are all included by the first request: read them then, once.
            table[:] = table or route_table(app.routes)
            path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed(table, path))}
        response = answer(request, exc)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(HTTPException, handle)


def route_table(routes: list[BaseRoute]) -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
    """Each route's path pattern, its number of path parameters and its methods."""
    # FastAPI keeps included routers whole; iter_route_contexts yields their routes with the
    # full path (older FastAPI copies them into the app's routes).
    contexts: Any = getattr(fastapi.routing, "iter_route_contexts", lambda found: found)(routes)
    table = []
    for route in contexts:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str) and methods:
            regex, _, convertors = compile_path(path)
            table.append((regex, len(convertors), frozenset(methods)))
    return table


def allowed(table: list[tuple[re.Pattern[str], int, frozenset[str]]], path: str) -> list[str]:
    """The methods routed at ``path``; when literal and templated paths both match
    (``/customers/batch`` and ``/customers/{customer_id}``), only those of the most literal."""
    matching = [(params, methods) for regex, params, methods in table if regex.match(path)]
    if not matching:
        return []
    fewest = min(params for params, _ in matching)
    return sorted({m for params, methods in matching if params == fewest for m in methods})
