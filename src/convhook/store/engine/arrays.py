"""PostgreSQL array literals for batches that bind whole columns as arrays.

psycopg's list dumper looks at every element in Python to pick the array's type (and an
integer type wide enough for all of them): with a dozen arrays per flush that was about a tenth
of a dispatcher's writer. A statement that casts the parameter to the array type it wants
(``CAST(? AS BIGINT[])``) lets PostgreSQL's own array input read these texts instead. No
driver import here: SQLite-only installs load the modules that use it.
"""

from __future__ import annotations

from collections.abc import Iterable


def number_array(values: Iterable[int | float | None]) -> str:
    """An array literal of numbers (``NULL`` for None), for ``CAST(? AS BIGINT[])`` and
    the like."""
    return (
        "{"
        + ",".join(
            "NULL" if v is None else repr(v) if type(v) is float else str(int(v)) for v in values
        )
        + "}"
    )


def text_array(values: Iterable[str | None]) -> str:
    """An array literal of texts (``NULL`` for None), for ``CAST(? AS TEXT[])``: every
    element quoted, its backslashes and double quotes escaped, as the array input reads them."""
    return (
        "{"
        + ",".join(
            "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in values
        )
        + "}"
    )
