"""The producer API's app factory: routers found by module, errors as JSON, the catalogue
of events in the OpenAPI ``webhooks`` section."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from convhook import __version__
from convhook.api import errors
from convhook.api.auth import SECURITY_SCHEMES
from convhook.api.deps import ApiSettings
from convhook.api.fast_path import TransitionFastPath
from convhook.outbox import Outbox
from convhook.schema import webhooks_section
from convhook.store.producer import ProducerStore

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


def create_app(store: ProducerStore, settings: ApiSettings | None = None) -> FastAPI:
    """The API over ``store``; the app opens the store on start-up and closes it on shutdown."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        dispatcher = None
        try:
            if settings.dispatch:
                from convhook.dispatcher import Dispatcher

                dispatcher = Dispatcher(store.db, allow_private=settings.allow_private_targets)
                await dispatcher.start()
            app.state.dispatcher = dispatcher
            yield
        finally:
            # Attempts in flight finish and are recorded before the store closes.
            if dispatcher is not None:
                await dispatcher.close()
            await store.close()

    app = ProducerApp(
        title="convhook producer API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.outbox = Outbox(store, max_active=settings.max_active)
    app.state.key_cache = {}
    app.state.retry_after = settings.retry_after
    app.state.allow_private_targets = settings.allow_private_targets
    app.state.dispatcher = None
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body)
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
                for operation in operations.values():
                    operation["security"] = [{"apiKey": []}, {"bearer": []}]
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
