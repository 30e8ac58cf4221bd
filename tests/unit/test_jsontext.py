"""convhook.jsontext writes what ``json.dumps(..., separators=(",", ":"))`` writes (ASCII, the
same escapes) and reads what ``json.loads`` reads, on any JSON value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from convhook import jsontext

_SCALARS = st.none() | st.booleans() | st.integers() | st.text()
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )


@given(_json(_SCALARS))
def test_the_text_is_the_standard_librarys(value: Any) -> None:
    """Without floats, byte for byte the same text: every character outside ASCII, DEL and
    control characters escaped as json.dumps escapes them, astral ones as surrogate pairs."""
    expected = json.dumps(value, separators=(",", ":"))
    assert jsontext.dumps(value) == expected
    assert jsontext.loads(expected) == json.loads(expected)


@given(_json(_SCALARS | _FLOATS))
def test_floats_read_back_the_same(value: Any) -> None:
    """With floats only an exponent's spelling may differ: the value read back is the same."""
    text = jsontext.dumps(value)
    assert text.isascii()
    assert json.loads(text) == value
    assert jsontext.loads(text) == json.loads(json.dumps(value))


def test_texts_msgspec_refuses_are_read_as_json_reads_them() -> None:
    """NaN, a number past a float and a lone surrogate: msgspec refuses them, json reads them
    (a row stored before today's intake checks may hold one)."""
    for text in ('{"a":NaN}', "[1e400]", '"\\ud800"'):
        assert repr(jsontext.loads(text)) == repr(json.loads(text))


def test_values_msgspec_cannot_write_go_through_json() -> None:
    """A lone surrogate is written as json writes it."""
    assert jsontext.dumps({"name": "\ud800x"}) == json.dumps(
        {"name": "\ud800x"}, separators=(",", ":")
    )


def test_a_non_finite_float_is_written_as_null() -> None:
    """JSON has no NaN or Infinity: a legacy value holding one is written as null, which
    every parser reads, where json.dumps wrote tokens strict parsers refuse."""
    value = {"a": float("nan"), "b": [float("inf"), -float("inf")], "c": 1.5}
    assert jsontext.dumps(value) == '{"a":null,"b":[null,null],"c":1.5}'


def test_a_raw_lone_surrogate_is_read_as_json_reads_it() -> None:
    """Text holding a lone surrogate character (not an escape) reads as json.loads reads it."""
    assert jsontext.loads('["\ud800"]') == json.loads('["\ud800"]')
