"""Numbers in JSON text that no float carries: which bodies may hold one, and the check.

RFC 8259 has no ``NaN`` or ``Infinity``, yet Python's parsers read those tokens, and every
parser reads a number such as ``1e400`` as infinity, which ``json.dumps`` then writes as
``Infinity`` and a strict receiver refuses. The byte test is cheap and false for almost every
body; only a body it flags is parsed again to find such a number.
"""

from __future__ import annotations

import json
import math

# With digits and signs as "0" and exponents as "e", a number that overflows a float shows an
# exponent of two or more characters ("e00": 1e99 is near, 1e400 past the limit) or a run of
# three hundred digits (a float's largest finite value has 309).
_SHAPES = bytes.maketrans(b"0123456789+-E", b"000000000000e")


class _NotFinite(ValueError):
    pass


def may_hold_non_finite(body: bytes | str) -> bool:
    """Whether ``body`` may hold ``NaN``, ``Infinity`` or a number that overflows a float."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if b"NaN" in data or b"Infinity" in data:
        return True
    shapes = data.translate(_SHAPES)
    return b"e00" in shapes or b"0" * 300 in shapes


def non_finite_number(body: bytes | str) -> str | None:
    """The first number of the JSON ``body`` that is not finite, as written, or None (also
    when ``body`` is not JSON at all: that is the parser's to report)."""
    try:
        json.loads(body, parse_constant=_refuse, parse_float=_finite)
    except _NotFinite as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None
    return None


def _refuse(token: str) -> float:
    raise _NotFinite(token)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text if len(text) <= 40 else text[:37] + "...")
    return value
