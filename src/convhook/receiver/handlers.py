"""Handler registration: which functions run for which event type, sync or async."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from convhook.events import AnyEvent

Handler = Callable[..., Any]
CATCH_ALL = "*"


@dataclass(frozen=True)
class Delivery:
    """The stored request behind an event, for handlers that need the raw bytes or headers."""

    event_id: str
    webhook_id: str | None
    event_type: str
    body: bytes
    headers: Mapping[str, str]
    received_at: float
    attempt: int
    conversation_id: str | None = None
    """The conversation of a ``conversation.*`` event."""
    sequence: int | None = None
    """The event's position in its conversation, when the sender numbers them."""
    origin: str = "delivery"
    """``reconciled`` when the event was fetched from the producer's API to fill a gap."""
    traceparent: str | None = None
    """The W3C ``traceparent`` the event was delivered with (handlers also run in it)."""


@dataclass(frozen=True)
class Registration:
    """One handler: its stable ``name`` (recorded when it succeeds) and how to call it."""

    name: str
    fn: Handler
    event_types: frozenset[str]
    is_async: bool
    wants_delivery: bool

    def matches(self, event_type: str) -> bool:
        """True if this handler runs for ``event_type`` (a catch-all runs for every type)."""
        return CATCH_ALL in self.event_types or event_type in self.event_types

    async def run(self, event: AnyEvent, delivery: Delivery) -> None:
        """Call the handler; a sync one runs in a thread so it cannot block the event loop."""
        args: tuple[Any, ...] = (event, delivery) if self.wants_delivery else (event,)
        if self.is_async:
            await self.fn(*args)
            return
        try:
            result = await asyncio.to_thread(_carry, self.fn, args)
        except _Carried as carried:
            # Raised here, in this frame: thrown into the task instead, a GeneratorExit
            # would close the coroutines awaiting this one rather than reach their handlers.
            raise carried.error from None
        if inspect.isawaitable(result):
            await result


class _Carried(Exception):
    """A GeneratorExit raised by a sync handler, carried back from its thread."""

    def __init__(self, error: GeneratorExit) -> None:
        super().__init__()
        self.error = error


def _carry(fn: Handler, args: tuple[Any, ...]) -> Any:
    try:
        return fn(*args)
    except GeneratorExit as exc:
        raise _Carried(exc) from None


def _wants_delivery(fn: Handler) -> bool:
    """True if ``fn`` takes a second positional parameter (the :class:`Delivery`)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _is_async(fn: Handler) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class HandlerRegistry:
    """The handlers of one receiver, in registration order."""

    def __init__(self) -> None:
        self._handlers: list[Registration] = []
        self._by_type: dict[str, list[Registration]] = {}

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, fn: Handler, event_types: Iterable[str], name: str | None = None) -> Registration:
        """Register ``fn`` for ``event_types`` (``"*"`` for every type, known or not)."""
        types = frozenset(str(t) for t in event_types) or frozenset({CATCH_ALL})
        base = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        taken = {h.name for h in self._handlers}
        unique, n = base, 2
        while unique in taken:
            unique, n = f"{base}#{n}", n + 1
        registration = Registration(unique, fn, types, _is_async(fn), _wants_delivery(fn))
        self._handlers.append(registration)
        self._by_type.clear()
        return registration

    def matching(self, event_type: str) -> list[Registration]:
        """The handlers that run for ``event_type``, in registration order."""
        found = self._by_type.get(event_type)
        if found is None:
            found = [h for h in self._handlers if h.matches(event_type)]
            # Event types come from senders: cache the known ones only, to bound memory.
            if len(self._by_type) < 256:
                self._by_type[event_type] = found
        return found
