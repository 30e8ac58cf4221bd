"""Workspace authentication: ``x-api-key`` (+ optional ``x-workspace-id``) or a Bearer key.

Keys are stored as sha256 digests and compared in constant time. A key found once is cached
in the app, so the hot path costs no database read; keys are never deleted in this version.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from convhook.api.errors import ApiError
from convhook.store.producer import Workspace, hash_key

__all__ = ["SECURITY_SCHEMES", "CurrentWorkspace", "Workspace", "current_workspace"]

SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearer": {"type": "http", "scheme": "bearer"},
}
"""The OpenAPI security schemes this dependency accepts (the app factory publishes them)."""


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


def _key(request: Request) -> str | None:
    headers = request.headers
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


async def current_workspace(request: Request) -> Workspace:
    """The workspace whose key the request carries (``x-api-key`` or ``Authorization:
    Bearer``, with an optional matching ``x-workspace-id``); 401 when missing or wrong."""
    # Headers are read directly rather than through FastAPI's security classes: this runs on
    # every request, and one dependency costs far less than three.
    key = _key(request)
    if not key:
        raise _unauthorized("missing API key: send x-api-key or Authorization: Bearer <key>")
    digest = hash_key(key)
    cache: dict[str, Workspace] = request.app.state.key_cache
    workspace = cache.get(digest)
    if workspace is None:
        found = await request.app.state.store.workspace_for_key(digest)
        if found is None or not hmac.compare_digest(found[1], digest):
            raise _unauthorized("the API key is not valid")
        workspace = found[0]
        cache[digest] = workspace
    claimed = request.headers.get("x-workspace-id")
    if claimed is not None and not hmac.compare_digest(claimed.encode(), workspace.id.encode()):
        raise _unauthorized("the API key does not belong to the workspace in x-workspace-id")
    return workspace


CurrentWorkspace = Annotated[Workspace, Depends(current_workspace)]
