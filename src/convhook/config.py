"""Configuration: the one place that names and reads ``CONVHOOK_*`` environment variables.

Every CLI option is declared through :func:`option`, so it also reads ``CONVHOOK_<NAME>`` and
shows that variable in ``--help``. Library code takes its settings as constructor arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from convhook.errors import ConfigError

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


@dataclass(frozen=True)
class DatabaseURL:
    """Where data lives: a SQLite file or a PostgreSQL URL."""

    engine: str
    target: str

    @classmethod
    def parse(cls, value: str) -> DatabaseURL:
        """Accept ``path``, ``sqlite:///path`` or ``postgresql://...`` (also ``postgres://``)."""
        if not value:
            raise ConfigError(f"no database given: pass --db or set {DATABASE_ENV}")
        if value.startswith(("postgresql://", "postgres://")):
            return cls("postgres", value)
        if value.startswith("sqlite:///"):
            value = value[len("sqlite:///") :]
        elif "://" in value:
            scheme = value.split("://", 1)[0]
            raise ConfigError(
                f"unsupported database scheme {scheme!r}: use a file path for SQLite "
                "or a postgresql:// URL"
            )
        return cls("sqlite", str(Path(value).expanduser()))


def env_names() -> list[str]:
    """The ``CONVHOOK_*`` variables set in this process (for diagnostics; values not shown)."""
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
