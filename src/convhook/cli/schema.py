"""``convhook schema`` and ``convhook secret``: publish the catalogue, make signing secrets."""

from __future__ import annotations

import json
import sys
from enum import StrEnum

import typer

from convhook.config import option


class SchemaFormat(StrEnum):
    """Output formats of ``convhook schema``."""

    JSONSCHEMA = "jsonschema"
    """One JSON Schema (2020-12) per event type."""
    OPENAPI = "openapi"
    """An OpenAPI 3.1 document whose ``webhooks`` section lists every event."""


def schema(
    fmt: SchemaFormat = option(
        SchemaFormat.JSONSCHEMA, "--format", env="SCHEMA_FORMAT", help="What to print."
    ),
) -> None:
    """Print the event catalogue as JSON Schema or as an OpenAPI 3.1 document.

    Example: ``convhook schema --format openapi > webhooks.json``
    """
    from convhook.schema import json_schemas, openapi_document

    doc = json_schemas() if fmt is SchemaFormat.JSONSCHEMA else openapi_document()
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def secret() -> None:
    """Print a new random whsec_ signing secret.

    Example: ``convhook listen --secret "$(convhook secret)"``
    """
    from convhook.signing import Secret

    sys.stdout.write(str(Secret.generate()) + "\n")


def register(app: typer.Typer) -> None:
    app.command()(schema)
    app.command()(secret)
