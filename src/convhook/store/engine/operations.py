"""How a write crosses to the writer process: an operation's name and typed codecs.

A write is ``op(conn, *args)``, a module-level function under ``convhook.store``. It travels
as ``module:qualname`` with its arguments encoded by msgspec (msgpack), and the other side
decodes the arguments and the result as the operation's type hints say, so structs, tuples
and enums arrive as they left. Frames on the socket are a 4-byte little-endian length and a
msgpack array: ``[seq, name, args]`` to the child, ``[seq, ok, result or message]`` back.
The first frame to the child is ``[0, engine, where, setting]``: the database to open.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec

LENGTH = struct.Struct("<I")
# Only the store's own operations run in the child.
_OPS_PACKAGE = "convhook.store."
REQUEST = msgspec.msgpack.Decoder(tuple[int, str, msgspec.Raw])
OPEN = msgspec.msgpack.Decoder(tuple[int, str, str, str])
REPLY = msgspec.msgpack.Decoder(tuple[int, bool, msgspec.Raw])
MESSAGE = msgspec.msgpack.Decoder(str)


@dataclass(frozen=True)
class Operation:
    """How one operation crosses to the child: its name and its typed decoders."""

    name: str
    args: msgspec.msgpack.Decoder[Any]
    result: msgspec.msgpack.Decoder[Any]


@functools.cache
def operation(op: Callable[..., Any]) -> Operation:
    """The wire form of ``op``, read from its signature and type hints (once per op)."""
    module, qualname = getattr(op, "__module__", ""), getattr(op, "__qualname__", "")
    if not module.startswith(_OPS_PACKAGE) or "<" in qualname or "." in qualname:
        raise TypeError(
            f"{module}.{qualname} cannot run in the writer process: a write there must "
            f"be a module-level function under {_OPS_PACKAGE.rstrip('.')}"
        )
    hints = typing.get_type_hints(op)
    params = list(inspect.signature(op).parameters.values())[1:]
    types = tuple(hints.get(p.name, Any) for p in params)
    args: Any = tuple[types] if types else tuple[()]  # type: ignore[valid-type]
    return Operation(
        f"{module}:{qualname}",
        msgspec.msgpack.Decoder(args),
        msgspec.msgpack.Decoder(hints.get("return", Any)),
    )


def resolve(name: str) -> Callable[..., Any]:
    """The operation a name sent by the parent stands for (the child's side of :func:`operation`)."""
    module, _, qualname = name.partition(":")
    if not module.startswith(_OPS_PACKAGE):
        raise LookupError(f"unknown writer operation {name!r}")
    fn = getattr(importlib.import_module(module), qualname, None)
    if not callable(fn):
        raise LookupError(f"unknown writer operation {name!r}")
    return cast(Callable[..., Any], fn)
