"""The producer HTTP API: ``create_app(store, settings)`` and one module per resource.

Every module here that defines a module-level ``router`` (an ``APIRouter``) is included by
:func:`create_app`; routes authenticate with :func:`convhook.api.auth.current_workspace` and
reach the store through :func:`convhook.api.deps.get_store`. The lifecycle transitions, most
of the traffic, are answered ahead of FastAPI by :mod:`convhook.api.fast_path` with the same
behaviour as their routes in :mod:`convhook.api.transitions`.
"""

from __future__ import annotations

from convhook.api.app import create_app
from convhook.api.deps import ApiSettings

__all__ = ["ApiSettings", "create_app"]
