"""Workspace authentication: ``x-api-key`` (+ optional ``x-workspace-id``) or a Bearer key.

Keys are stored as sha256 digests and compared in constant time. A key found once is cached
in the app, so the hot path costs no database read; keys are never deleted in this version.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from convhook.api.errors import ApiError
from convhook.store.producer import Workspace, hash_key

__all__ = ["Workspace", "current_workspace"]

_api_key = APIKeyHeader(name="x-api-key", auto_error=False, description="The workspace API key.")
_bearer = HTTPBearer(auto_error=False, description="The workspace API key as a Bearer token.")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


async def current_workspace(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    workspace_id: Annotated[
        str | None,
        Header(alias="x-workspace-id", description="The workspace the key belongs to."),
    ] = None,
) -> Workspace:
    """The workspace whose key the request carries; 401 when it is missing or wrong."""
    key = api_key or (bearer.credentials if bearer else None)
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
    if workspace_id is not None and not hmac.compare_digest(
        workspace_id.encode(), workspace.id.encode()
    ):
        raise _unauthorized("the API key does not belong to the workspace in x-workspace-id")
    return workspace


CurrentWorkspace = Annotated[Workspace, Depends(current_workspace)]
