"""Request models' shared parts: camelCase, unknown fields refused, phone, email, timestamp
and integer checks the JSON Schema also states."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from convhook.api.errors import ApiError, validation_problems
from convhook.errors import FieldProblem
from convhook.timefmt import MAX_YEAR, MIN_YEAR, format_ts, in_range

# ASCII digits only and matched whole (fullmatch: "$" alone lets a trailing newline through);
# the same patterns are the JSON Schema's, where "$" ends the text.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_EMAIL = 254
MAX_BATCH = 1000
MAX_INT64 = 2**63 - 1
"""Largest integer the databases store (SQLite INTEGER, PostgreSQL BIGINT)."""


def _phone(value: str) -> str:
    if not E164.fullmatch(value):
        raise ValueError("must be an E.164 phone number such as +14155550100")
    return value


def _email(value: str) -> str:
    if len(value) > MAX_EMAIL or not EMAIL.fullmatch(value):
        raise ValueError("must be an email address such as jane@example.com")
    return value


# The schemas state the rules the validators check (the validators keep their messages).
Phone = Annotated[
    str,
    AfterValidator(_phone),
    WithJsonSchema(
        {"type": "string", "pattern": E164.pattern, "maxLength": 16, "examples": ["+14155550100"]}
    ),
]
Email = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "pattern": EMAIL.pattern,
            "maxLength": MAX_EMAIL,
            "examples": ["jane@example.com"],
        }
    ),
]
Id = Annotated[str, Field(min_length=1, max_length=200)]
Int64 = Annotated[int, Strict(), Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]
"""A JSON integer (not a boolean, string or float) the databases can store."""
Timestamp = Annotated[
    datetime,
    AfterValidator(in_range),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": f"ISO-8601; a time without offset is UTC. Years {MIN_YEAR} to "
            f"{MAX_YEAR} once moved to UTC.",
            "examples": ["2023-01-01T12:00:00.000Z"],
        }
    ),
]
"""Any ISO-8601 date-time in :data:`~convhook.timefmt.MIN_YEAR`..``MAX_YEAR`` (in UTC), so
that every timestamp the API stores is written back as a four-digit year and parses again."""


class RequestModel(BaseModel):
    """Base of request bodies: camelCase names, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The fields the client set, in wire form (camelCase, JSON values)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


M = TypeVar("M", bound=BaseModel)


def validate_items(
    model: type[M], items: Sequence[Any], prefix: str
) -> tuple[list[tuple[int, M]], list[dict[str, Any]]]:
    """Validate each batch item alone: the good ones with their index, and one error per bad
    field as ``{"index", "field", "problem"}``."""
    if len(items) > MAX_BATCH:
        raise ApiError(
            422,
            f"a batch holds at most {MAX_BATCH} items, got {len(items)}",
            [FieldProblem(prefix, f"more than {MAX_BATCH} items")],
        )
    adapter = TypeAdapter(model)
    good: list[tuple[int, M]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            good.append((index, adapter.validate_python(item)))
        except ValidationError as exc:
            for p in validation_problems(exc.errors(include_url=False), strip=0):
                errors.append(item_error(index, p))
    return good, errors


def item_error(index: int, problem: FieldProblem) -> dict[str, Any]:
    """One batch error entry."""
    return {"index": index, "field": problem.field, "problem": problem.problem}


def batch_refused(prefix: str, errors: list[dict[str, Any]]) -> ApiError:
    """The 422 answered when no item of a batch could be saved."""
    problems = [FieldProblem(f"{prefix}[{e['index']}].{e['field']}", e["problem"]) for e in errors]
    return ApiError(
        422,
        "no item of the batch was saved: see errors",
        problems,
        extra={"results": [], "errors": errors},
    )
