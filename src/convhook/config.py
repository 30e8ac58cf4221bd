"""Configuration: the one place that names and reads ``CONVHOOK_*`` environment variables.

Every CLI option is declared through :func:`option`, so it also reads ``CONVHOOK_<NAME>`` and
shows that variable in ``--help``. Library code takes its settings as constructor arguments.
"""

from __future__ import annotations

import os
from typing import Any

import typer

from convhook.errors import ConfigError
from convhook.store.engine.url import DatabaseURL

__all__ = [
    "DATABASE_ENV",
    "ENV_PREFIX",
    "ConfigError",
    "DatabaseURL",
    "db_option",
    "env_names",
    "option",
]

ENV_PREFIX = "CONVHOOK_"
DATABASE_ENV = ENV_PREFIX + "DATABASE_URL"


def option(default: Any, *flags: str, env: str, help: str, **kwargs: Any) -> Any:
    """A typer option that also reads ``CONVHOOK_<env>`` and says so in ``--help``."""
    return typer.Option(
        default, *flags, envvar=ENV_PREFIX + env, show_envvar=True, help=help, **kwargs
    )


def db_option(default: str, help: str = "SQLite file path or postgresql:// URL.") -> Any:
    """The ``--db`` option every command that opens a database shares."""
    return typer.Option(default, "--db", envvar=DATABASE_ENV, show_envvar=True, help=help)


def env_names() -> list[str]:
    """The ``CONVHOOK_*`` variables set in this process (for diagnostics; values not shown)."""
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
