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
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from convhook.api.errors import ApiError, validation_problems
from convhook.errors import FieldProblem
from convhook.store.producer.paging import MAX_SEQ
from convhook.timefmt import MAX_YEAR, MIN_YEAR, YEAR_PATTERN, format_ts, in_range

MAX_INT64 = MAX_SEQ
"""The largest id and cursor the store holds (a signed 64-bit integer)."""

# ASCII digits only and matched whole (fullmatch: "$" alone lets a trailing newline through);
# the same patterns are the JSON Schema's, where "$" ends the text.
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_EMAIL = 254
MAX_BATCH = 1000
"""Largest integer the databases store (SQLite INTEGER, PostgreSQL BIGINT)."""
MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer a double holds exactly: what a JSON parser in JavaScript (or one reading
numbers as doubles, as JSON Schema tools do) reads back unchanged."""
_YEAR = re.compile(YEAR_PATTERN)


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


def json_number(value: object) -> object:
    """Pass JSON numbers through and refuse the rest: lax pydantic would read ``true`` as 1
    and ``"5"`` as 5, which the schema does not offer (JSON Schema does count 5.0 as an
    integer, and pydantic then takes it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a JSON number")
    return value


# Constraints go before the validator: after it, pydantic publishes them as "ge"/"le", which
# JSON Schema does not know, instead of "minimum"/"maximum".
Integer = Annotated[
    int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER), BeforeValidator(json_number)
]
"""A JSON integer (not a boolean or string) every JSON parser reads exactly."""


def _iso_text(value: object) -> object:
    # Only text written with a year in range: pydantic would also take numbers (and numeric
    # strings) as Unix times, which the schema does not offer.
    if isinstance(value, datetime) or (isinstance(value, str) and _YEAR.match(value)):
        return value
    raise ValueError(
        f"must be an ISO-8601 date-time with a year from {MIN_YEAR} to {MAX_YEAR}, such as "
        "2023-01-01T12:00:00Z"
    )


Timestamp = Annotated[
    datetime,
    BeforeValidator(_iso_text),
    AfterValidator(in_range),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": YEAR_PATTERN,
            "description": f"ISO-8601; a time without offset is UTC. Years {MIN_YEAR} to "
            f"{MAX_YEAR}.",
            "examples": ["2023-01-01T12:00:00.000Z"],
        }
    ),
]
"""Any ISO-8601 date-time written with a year from :data:`~convhook.timefmt.MIN_YEAR` to
``MAX_YEAR``, so that every timestamp the API stores is written back with a four-digit year
and parses again."""


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


def batch_refused(prefix: str, errors: list[dict[str, Any]], status: int = 422) -> ApiError:
    """The error answered when no item of a batch could be saved (``status`` 409 when every
    item conflicted with what is stored, as a single create answers)."""
    problems = [FieldProblem(f"{prefix}[{e['index']}].{e['field']}", e["problem"]) for e in errors]
    return ApiError(
        status,
        "no item of the batch was saved: see errors",
        problems,
        extra={"results": [], "errors": errors},
    )
