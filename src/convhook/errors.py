"""The convhook exception tree.

Every error convhook raises on purpose derives from :class:`ConvhookError`; the branches say
what the caller does next::

    ConvhookError
    ├── ConfigError        a setting or secret is wrong: fix the configuration
    │   └── SecretError    a ``whsec_`` secret cannot be parsed
    ├── PayloadError       a request body is not a valid event: reject it (4xx)
    │   └── PayloadTooLarge   the body is over the size limit (413)
    ├── SignatureError     a signature is missing, invalid or too old: reject it (401)
    └── StoreError         the database failed; the driver error is the ``__cause__``
        ├── SchemaVersionError   the database schema is older or newer than this code
        └── ClosedError      an object was used outside its ``async with`` block
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ConvhookError(Exception):
    """Root of every error convhook raises on purpose."""


class ConfigError(ConvhookError):
    """A setting is wrong; the message says how to fix it."""


class SecretError(ConfigError):
    """A signing secret cannot be used."""


@dataclass(frozen=True)
class FieldProblem:
    """One reason a payload was refused: where (``field``, dotted path) and why."""

    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


class PayloadError(ConvhookError):
    """A body is not a valid event; ``problems`` names each field and what is wrong."""

    status_code = 400

    def __init__(
        self,
        message: str,
        problems: Sequence[FieldProblem] = (),
        *,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)
        self.event_id = event_id

    @property
    def field(self) -> str | None:
        """The first field named, for callers that report one."""
        return self.problems[0].field if self.problems else None

    def as_dict(self) -> dict[str, object]:
        return {"error": self.message, "problems": [p.as_dict() for p in self.problems]}


class PayloadTooLarge(PayloadError):
    """The body is over the size limit."""

    status_code = 413


class SignatureError(ConvhookError):
    """The webhook signature headers are missing, malformed, wrong or outside tolerance."""

    status_code = 401


class StoreError(ConvhookError):
    """The database failed; the driver's exception is chained as ``__cause__``."""


class SchemaVersionError(StoreError):
    """The database schema is not the version this code knows."""


class ClosedError(StoreError):
    """An object was used before it was opened or after it was closed."""
