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
    "INBOX_ENV",
    "ConfigError",
    "DatabaseURL",
    "db_option",
    "env_names",
    "log_format_option",
    "log_level_option",
    "option",
]

ENV_PREFIX = "CONVHOOK_"
DATABASE_ENV = ENV_PREFIX + "DATABASE_URL"
# The receiver's inbox has a variable of its own: one variable read by both sides would put
# inbox tables into the producer's database.
INBOX_ENV = ENV_PREFIX + "INBOX_URL"


def option(default: Any, *flags: str, env: str, help: str, **kwargs: Any) -> Any:
    """A typer option that also reads ``CONVHOOK_<env>`` and says so in ``--help``."""
    return typer.Option(
        default, *flags, envvar=ENV_PREFIX + env, show_envvar=True, help=help, **kwargs
    )


def db_option(
    default: str, help: str = "SQLite file path or postgresql:// URL.", *, env: str = DATABASE_ENV
) -> Any:
    """The ``--db`` option every command that opens a database shares (the producer's
    variable; the inbox's commands pass :data:`INBOX_ENV`)."""
    return typer.Option(default, "--db", envvar=env, show_envvar=True, help=help)


def log_format_option() -> Any:
    """``--log-format``: how a command writes its log records (see :mod:`convhook.logs`)."""
    return option(
        "text",
        "--log-format",
        env="LOG_FORMAT",
        help="Log records as `text` (one line each; coloured on a terminal) or `json` (one "
        "object per line, for collectors). Example: --log-format json",
    )


def log_level_option(default: str) -> Any:
    """``--log-level``: the least severe record a command writes."""
    return option(
        default,
        "--log-level",
        env="LOG_LEVEL",
        help="One of debug, info, warning, error, critical.",
    )


def env_names() -> list[str]:
    """The ``CONVHOOK_*`` variables set in this process (for diagnostics; values not shown)."""
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
