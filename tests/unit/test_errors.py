"""The exception tree in convhook.errors and the API's table from each class to its answer."""

from __future__ import annotations

import inspect
import json

import pytest

import convhook
from convhook import errors
from convhook.api.errors import STATUS, answer_for, error_response
from convhook.errors import (
    ActiveLimitError,
    ClosedError,
    ConfigError,
    ConflictError,
    ConstraintError,
    ConvhookError,
    EventTooLarge,
    FieldProblem,
    ForwardError,
    GoneError,
    NotFoundError,
    PayloadError,
    PayloadTooLarge,
    ResourceError,
    SchemaVersionError,
    SecretError,
    SignatureError,
    StateError,
    StoreError,
    TargetError,
    TransitionError,
    UnsendableChange,
    UsageError,
)
from convhook.lifecycle import Action, Phase

PARENT: dict[type[ConvhookError], type[Exception]] = {
    ConvhookError: Exception,
    ConfigError: ConvhookError,
    SecretError: ConfigError,
    TargetError: ConfigError,
    UsageError: ConvhookError,
    ClosedError: UsageError,
    PayloadError: ConvhookError,
    PayloadTooLarge: PayloadError,
    UnsendableChange: PayloadError,
    EventTooLarge: PayloadError,
    ResourceError: ConvhookError,
    NotFoundError: ResourceError,
    GoneError: ResourceError,
    ConflictError: ResourceError,
    StateError: ConvhookError,
    TransitionError: StateError,
    ActiveLimitError: StateError,
    SignatureError: ConvhookError,
    ForwardError: ConvhookError,
    StoreError: ConvhookError,
    SchemaVersionError: StoreError,
    ConstraintError: StoreError,
}

SAMPLES: list[tuple[ConvhookError, int]] = [
    (PayloadError("bad", [FieldProblem("a", "missing")]), 400),
    (PayloadTooLarge("big"), 413),
    (UnsendableChange(PayloadError("bad", [FieldProblem("a", "missing")])), 422),
    (EventTooLarge(70_000, 65_536), 422),
    (TargetError("blocked"), 422),
    (SignatureError("wrong"), 401),
    (NotFoundError("no conversation c"), 404),
    (GoneError("pruned"), 410),
    (ConflictError("taken", [FieldProblem("identifier", "already used")]), 409),
    (TransitionError("c", Phase.FAILED, Action.DIAL), 409),
    (ActiveLimitError("ws", 3), 429),
    (StoreError("connection refused"), 503),
    (SchemaVersionError("too new"), 503),
    (ClosedError("not open"), 500),
    (UsageError("wrong call"), 500),
    (ConfigError("bad setting"), 500),
    (ForwardError("unreachable"), 500),
]


def _public_classes() -> set[type[ConvhookError]]:
    return {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ConvhookError) and cls.__module__ == errors.__name__
    }


@pytest.mark.parametrize(("cls", "parent"), PARENT.items(), ids=lambda c: c.__name__)
def test_tree(cls: type[ConvhookError], parent: type[Exception]) -> None:
    """Each exception sits directly under the branch the module docstring draws."""
    assert cls.__bases__ == (parent,)
    assert cls.__name__ in (errors.__doc__ or "")


def test_tree_lists_every_class() -> None:
    """The table above covers every exception class convhook.errors defines."""
    assert _public_classes() == set(PARENT)


def test_every_class_is_exported() -> None:
    """Every exception in the tree is importable from the convhook package."""
    assert {cls.__name__ for cls in PARENT} <= set(convhook.__all__)


def test_closed_error_is_not_a_store_error() -> None:
    """A call outside ``async with`` is a usage error, never the retryable StoreError."""
    assert not issubclass(ClosedError, StoreError)
    assert issubclass(ClosedError, UsageError)


@pytest.mark.parametrize(
    ("old_home", "name"),
    [
        ("convhook.lifecycle", "TransitionError"),
        ("convhook.netguard", "TargetError"),
        ("convhook.outbox", "UnsendableChange"),
        ("convhook.outbox", "EventTooLarge"),
        ("convhook.receiver.forwarder", "ForwardError"),
        ("convhook.store.producer", "NotFoundError"),
        ("convhook.store.producer", "ConflictError"),
        ("convhook.store.producer", "GoneError"),
        ("convhook.store.producer", "ActiveLimitError"),
    ],
)
def test_old_imports_still_work(old_home: str, name: str) -> None:
    """A class moved into convhook.errors is the same object under its old module."""
    module = __import__(old_home, fromlist=[name])
    assert getattr(module, name) is getattr(errors, name)


@pytest.mark.parametrize(("exc", "status"), SAMPLES, ids=lambda v: type(v).__name__)
def test_http_table(exc: ConvhookError, status: int) -> None:
    """The API answers each domain error with its status, in the JSON error shape."""
    response = error_response(exc, retry_after=7)
    assert response.status_code == status
    doc = json.loads(bytes(response.body))
    assert doc["error"]
    assert isinstance(doc["problems"], list)
    advised = response.headers.get("Retry-After")
    assert advised == ("7" if status in (429, 503) else None)


def test_table_agrees_with_status_codes() -> None:
    """Where a class carries a status_code, the table answers that same status."""
    for cls in _public_classes():
        code = cls.__dict__.get("status_code")
        if code is not None:
            assert STATUS[cls].status == code, cls.__name__


def test_subclass_takes_nearest_listed_parent() -> None:
    """A class the table does not list answers as its nearest listed ancestor."""

    class Outage(StoreError):
        pass

    class Misuse(ClosedError):
        pass

    assert answer_for(Outage("down")).status == 503
    assert answer_for(Misuse("closed")).status == 500


def test_context_fields() -> None:
    """Field problems and the 409's and 429's context fields reach the answer."""
    conflict = json.loads(
        bytes(error_response(ConflictError("taken", [FieldProblem("identifier", "used")])).body)
    )
    assert conflict["problems"] == [{"field": "identifier", "problem": "used"}]
    moved = json.loads(bytes(error_response(TransitionError("c", Phase.ACTIVE, Action.DIAL)).body))
    assert moved["state"] == "active"
    assert moved["allowed"] == ["leave", "end"]
    busy = json.loads(bytes(error_response(ActiveLimitError("ws", 3)).body))
    assert busy["limit"] == 3


def test_store_text_stays_in_the_log() -> None:
    """A 503 does not tell the client the driver's text, which names the server."""
    doc = json.loads(bytes(error_response(StoreError("db.internal:5432 refused")).body))
    assert "db.internal" not in doc["error"]


def test_a_broken_constraint_is_a_409_without_retry_after() -> None:
    """A write that broke a schema constraint would fail again: 409, no Retry-After, and
    the driver's text stays out of the answer."""
    answer = answer_for(ConstraintError("UNIQUE constraint failed: events.id"))
    assert answer.status == 409
    assert not answer.retry_after
    assert answer.message is not None
    assert "UNIQUE" not in answer.message
