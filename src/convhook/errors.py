"""The convhook exception tree.

Every error convhook raises on purpose derives from :class:`ConvhookError`; the branches say
what the caller does next (HTTP status in brackets where the API answers one)::

    ConvhookError
    ├── ConfigError          a setting or secret is wrong: fix the configuration
    │   ├── SecretError          a ``whsec_`` secret cannot be parsed
    │   └── TargetError          a webhook URL or its address may not be called (422)
    ├── UsageError           the calling code is wrong: fix it; retrying cannot help
    │   └── ClosedError          an object was used outside its ``async with`` block
    ├── PayloadError         a request body is not a valid event: fix the body (400)
    │   ├── PayloadTooLarge      the body is over the size limit (413)
    │   ├── UnsendableChange     the changed conversation would not be a valid event (422)
    │   └── EventTooLarge        the change would record an event over the limit (422)
    ├── ResourceError        the object a request names cannot serve it: check the id
    │   ├── NotFoundError        no such object in this workspace (404)
    │   ├── GoneError            the event's payload was removed by retention (410)
    │   └── ConflictError        the change collides with stored data, e.g. an identifier (409)
    ├── StateError           the object's current state refuses the action: re-read or wait
    │   ├── TransitionError      the conversation's phase does not allow the action (409)
    │   └── ActiveLimitError     the workspace has its maximum of live conversations (429)
    ├── SignatureError       a signature is missing, invalid or too old: reject it (401)
    ├── ForwardError         a forward target was unreachable or did not answer 2xx
    └── StoreError           the database failed (driver error as ``__cause__``): retry (503)
        ├── SchemaVersionError   the schema is older or newer than this code: migrate
        └── ConstraintError      a write broke a schema constraint: the same write fails (409)

The API answers each with the status in brackets; the table is
:data:`convhook.api.errors.STATUS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convhook.lifecycle import Action, Phase


class ConvhookError(Exception):
    """Root of every error convhook raises on purpose."""


class ConfigError(ConvhookError):
    """A setting is wrong; the message says how to fix it."""


class SecretError(ConfigError):
    """A signing secret cannot be used."""


class TargetError(ConfigError):
    """A webhook URL or the address it resolves to may not be called."""


class UsageError(ConvhookError):
    """The library was called the wrong way; the message names the call that was missing.

    Not a :class:`StoreError`: the loops that retry a failing database must not retry a bug.
    """


class ClosedError(UsageError):
    """An object was used before it was opened or after it was closed."""


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


class UnsendableChange(PayloadError):
    """The conversation after the change is not a valid event (HTTP 422)."""

    status_code = 422

    def __init__(self, error: PayloadError) -> None:
        super().__init__(
            f"the conversation would not be a valid event: {error.message}", error.problems
        )


class EventTooLarge(PayloadError):
    """The change would record an event larger than receivers accept (HTTP 422)."""

    status_code = 422

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the conversation's event would be {size} bytes, over the {limit} bytes a "
            "receiver accepts: send shorter fields",
            [FieldProblem("body", f"makes the event larger than {limit} bytes")],
        )
        self.size = size
        self.limit = limit


class ResourceError(ConvhookError):
    """The object a request names is missing, pruned or collides with another one."""


class NotFoundError(ResourceError):
    """No such object in this workspace (HTTP 404; other workspaces' objects look the same)."""

    status_code = 404


class GoneError(ResourceError):
    """The event exists but its payload was removed by the retention job (HTTP 410)."""

    status_code = 410


class ConflictError(ResourceError):
    """The change conflicts with stored data, e.g. a duplicate identifier (HTTP 409);
    ``problems`` names the fields that collide."""

    status_code = 409

    def __init__(self, message: str, problems: Sequence[FieldProblem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)

    @property
    def field(self) -> str | None:
        """The first field named, for callers that report one."""
        return self.problems[0].field if self.problems else None

    def as_dict(self) -> dict[str, object]:
        return {"error": self.message, "problems": [p.as_dict() for p in self.problems]}


class StateError(ConvhookError):
    """The object's current state refuses the action: re-read it, or wait and retry."""


class TransitionError(StateError):
    """The action is not allowed from the conversation's phase (HTTP 409)."""

    status_code = 409

    def __init__(self, conversation_id: str, phase: Phase, action: Action) -> None:
        # lifecycle imports this module, so the state machine is looked up at raise time.
        from convhook.lifecycle import allowed_actions

        self.conversation_id = conversation_id
        self.phase = phase
        self.action = action
        self.allowed = allowed_actions(phase)
        allowed = ", ".join(a.value for a in self.allowed) or "nothing (the conversation is final)"
        super().__init__(
            f"cannot {action.value}: conversation {conversation_id} is {phase.value}; "
            f"allowed from {phase.value}: {allowed}"
        )


class ActiveLimitError(StateError):
    """The workspace already has its maximum of dialing or active conversations (HTTP 429)."""

    status_code = 429

    def __init__(self, workspace_id: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"workspace {workspace_id} already has {limit} conversations dialing or active: "
            "retry after one of them ends"
        )


class SignatureError(ConvhookError):
    """The webhook signature headers are missing, malformed, wrong or outside tolerance."""

    status_code = 401


class ForwardError(ConvhookError):
    """The forward target was unreachable or did not answer 2xx."""


class StoreError(ConvhookError):
    """The database failed; the driver's exception is chained as ``__cause__``."""


class ConstraintError(StoreError):
    """A write broke a constraint of the schema (the driver's integrity error as
    ``__cause__``): the stored data disagrees with it, and the same write fails the same way,
    so an unattended caller must not repeat it forever."""


class SchemaVersionError(StoreError):
    """The database schema is not the version this code knows."""
