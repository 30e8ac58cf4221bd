"""Where data lives: a SQLite file path or a PostgreSQL URL."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from convhook.errors import ConfigError

DATABASE_ENV = "CONVHOOK_DATABASE_URL"


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
            if importlib.util.find_spec("psycopg") is None:
                raise ConfigError(
                    "a postgresql:// database needs the PostgreSQL driver, which this "
                    "installation lacks: pip install 'convhook[postgres]'"
                )
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
