"""Workspace authentication: ``x-api-key`` (+ optional ``x-workspace-id``) or a Bearer key.

Keys are stored as sha256 digests and compared in constant time. A key found once is cached
in the app, so the hot path costs no database read; keys are never deleted in this version.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import State

from convhook.api.errors import ApiError
from convhook.store.producer import Workspace, hash_key

__all__ = [
    "SECURITY_SCHEMES",
    "CurrentWorkspace",
    "Workspace",
    "api_key",
    "authenticate",
    "current_workspace",
]

SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearer": {"type": "http", "scheme": "bearer"},
}
"""The OpenAPI security schemes this dependency accepts (the app factory publishes them)."""


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def api_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request carries in ``x-api-key`` or ``Authorization: Bearer``, or None;
    401 when it carries two different keys (which one was meant cannot be known)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    if x_api_key and bearer and not hmac.compare_digest(x_api_key.encode(), bearer.encode()):
        raise _unauthorized(
            "x-api-key and Authorization: Bearer carry different keys: send one of them"
        )
    return x_api_key or bearer or None


async def authenticate(state: State, key: str | None, claimed: str | None) -> Workspace:
    """The workspace of ``key`` (with ``claimed``, the ``x-workspace-id`` sent, if any, that
    must match it) in the app whose ``state`` is given; 401 when missing or wrong."""
    if not key:
        raise _unauthorized("missing API key: send x-api-key or Authorization: Bearer <key>")
    digest = hash_key(key)
    cache: dict[str, Workspace] = state.key_cache
    workspace = cache.get(digest)
    if workspace is None:
        found = await state.store.workspace_for_key(digest)
        if found is None or not hmac.compare_digest(found[1], digest):
            raise _unauthorized("the API key is not valid")
        workspace = found[0]
        cache[digest] = workspace
    if claimed is not None and not hmac.compare_digest(claimed.encode(), workspace.id.encode()):
        raise _unauthorized("the API key does not belong to the workspace in x-workspace-id")
    return workspace


async def current_workspace(request: Request) -> Workspace:
    """The workspace whose key the request carries (``x-api-key`` or ``Authorization:
    Bearer``, with an optional matching ``x-workspace-id``); 401 when missing or wrong."""
    # Headers are read directly rather than through FastAPI's security classes: this runs on
    # every request, and one dependency costs far less than three.
    headers = request.headers
    key = api_key(headers.get("x-api-key"), headers.get("authorization"))
    return await authenticate(request.app.state, key, headers.get("x-workspace-id"))


CurrentWorkspace = Annotated[Workspace, Depends(current_workspace)]
