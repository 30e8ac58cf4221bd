"""W3C Trace Context for events, and spans that are real only when OpenTelemetry is set up.

A :class:`TraceContext` is the ``traceparent`` header as a value: the API takes one from a
request (or starts one), the outbox stores it with the event, the dispatcher sends a child of
it on every attempt and the receiver runs the event's handlers under it (docs/tracing.md).

:func:`span` is the one call site for tracing. Until :func:`configure` succeeds it only
derives a child context and makes it :func:`current` for the block: no OpenTelemetry import,
about a microsecond per block (bench/tracing.py). After it, each block is an OpenTelemetry
span exported over OTLP/HTTP (the ``convhook[otel]`` extra, :mod:`convhook.tracing_otel`).

This module imports the standard library only: a receiver installed without extras uses it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol

from convhook.errors import FieldProblem, PayloadError

__all__ = [
    "HEADER",
    "AttributeValue",
    "SpanKind",
    "TraceContext",
    "TraceparentError",
    "child_header",
    "configure",
    "configured",
    "current",
    "parse",
    "shutdown",
    "span",
]

log = logging.getLogger("convhook.tracing")

HEADER = "traceparent"
"""The HTTP header that carries a :class:`TraceContext`, in requests and deliveries."""

EXPECTED = "00-<32 lowercase hex trace id>-<16 lowercase hex span id>-<2 hex flags>"

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float

_HEX = "0123456789abcdef"
# Version 00 exactly; a later version is checked field by field (see parse()).
_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_LATER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED = 0x01


class TraceparentError(PayloadError):
    """A ``traceparent`` header is not a W3C Trace Context the API can continue (HTTP 400)."""

    def __init__(self, value: str, reason: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        message = (
            f"the {HEADER} header {shown!r} is not a W3C trace context ({reason}): "
            f"expected {EXPECTED}"
        )
        super().__init__(message, [FieldProblem(HEADER, f"{reason}; expected {EXPECTED}")])
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One position in a trace: the trace, the span that is the parent of what comes next,
    and the trace flags (``01``: sampled), all lowercase hex as on the wire."""

    trace_id: str
    span_id: str
    flags: str

    def __post_init__(self) -> None:
        parse(self.header())

    @classmethod
    def new(cls) -> TraceContext:
        """The root of a new trace, sampled (flags ``01``)."""
        return _unchecked(_random_id(16), _random_id(8), "01")

    def header(self) -> str:
        """The ``traceparent`` header value (version ``00``)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """The same trace and flags under a new random span id."""
        return _unchecked(self.trace_id, _random_id(8), self.flags)

    @property
    def sampled(self) -> bool:
        """Whether the caller records this trace (the flags' sampled bit)."""
        return bool(int(self.flags, 16) & _SAMPLED)


_new = object.__new__


def _unchecked(trace_id: str, span_id: str, flags: str) -> TraceContext:
    # The ids are valid by construction here. Skipping the check, and setting the slots
    # through their descriptors rather than the frozen __setattr__, keeps a span cheap.
    context = _new(TraceContext)
    _set_trace_id(context, trace_id)
    _set_span_id(context, span_id)
    _set_flags(context, flags)
    return context


_set_trace_id = TraceContext.__dict__["trace_id"].__set__
_set_span_id = TraceContext.__dict__["span_id"].__set__
_set_flags = TraceContext.__dict__["flags"].__set__


# Bound to the random module's shared generator, which is reseeded in a forked child.
_randbytes = random.randbytes


def _random_id(size: int) -> str:
    # The random module, as OpenTelemetry's own generator: ids must be unique, not secret.
    while True:
        value = _randbytes(size).hex()
        if value.strip("0"):
            return value


def parse(value: str) -> TraceContext:
    """The context a ``traceparent`` header carries; :class:`TraceparentError` if it is not
    valid W3C Trace Context.

    Version ``00`` must be exactly 55 characters. A later version is read as the
    specification says: its first 55 characters in version 00's layout, then nothing or a
    ``-`` and more; only its sampled flag is kept. Version ``ff`` is refused.
    """
    found = _VERSION_00.fullmatch(value)
    if found is not None:
        trace_id, span_id, flags = found.groups()
    elif value.startswith("00"):
        raise TraceparentError(value, _why_not_00(value))
    else:
        later = _LATER.match(value)
        if later is None or (len(value) > 55 and value[55] != "-"):
            raise TraceparentError(value, _why_not_later(value))
        version, trace_id, span_id, flags = later.groups()
        if version == "ff":
            raise TraceparentError(value, "version ff is invalid")
        flags = f"{int(flags, 16) & _SAMPLED:02x}"
    if trace_id == _ZERO_TRACE:
        raise TraceparentError(value, "the trace id is all zeros")
    if span_id == _ZERO_SPAN:
        raise TraceparentError(value, "the span id is all zeros")
    return _unchecked(trace_id, span_id, flags)


def child_header(parent: str | None) -> str:
    """The ``traceparent`` of a new span under the ``parent`` header (the root of a new trace
    when it is None or not valid), as :func:`span` would give it without a backend: for work
    prepared ahead of the block that sends it (a dispatcher's claims)."""
    if parent is not None:
        try:
            context = parse(parent)
        except TraceparentError:
            pass
        else:
            return f"00-{context.trace_id}-{_random_id(8)}-{context.flags}"
    return f"00-{_random_id(16)}-{_random_id(8)}-01"


def _why_not_00(value: str) -> str:
    if len(value) != 55:
        return f"version 00 is 55 characters, this is {len(value)}"
    if value != value.lower():
        return "hex digits must be lowercase"
    return "a field is not hex or a dash is missing"


def _why_not_later(value: str) -> str:
    if not value:
        return "the value is empty"
    if len(value) < 2 or any(c not in _HEX for c in value[:2]):
        return "the version is not 2 lowercase hex digits"
    if len(value) < 55:
        return f"a trace context is at least 55 characters, this is {len(value)}"
    if value != value.lower():
        return "hex digits must be lowercase"
    if _LATER.match(value) is None:
        return "a field is not hex or a dash is missing"
    return "after the flags comes the end or a dash"


_current: ContextVar[TraceContext | None] = ContextVar("convhook_trace", default=None)


def current() -> TraceContext | None:
    """The context of the innermost :func:`span` block running here, or None."""
    return _current.get()


class _Backend(Protocol):
    """What :mod:`convhook.tracing_otel` provides once configured."""

    def start(
        self,
        name: str,
        parent: TraceContext | None,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> _Started: ...

    def shutdown(self) -> None: ...


class _Started(Protocol):
    """A real span begun by the backend: its context, and how it ends."""

    context: TraceContext

    def end(self, error: BaseException | None) -> None: ...


_backend: _Backend | None = None
_configure_lock = threading.Lock()


# A lower-case class: it reads as the function call it replaces, `with span("..."):`.
class span:
    """A block of work in the trace: yields its :class:`TraceContext`, current for the block.

    ``parent`` continues a trace from elsewhere (a stored or received ``traceparent``);
    without it the block is a child of the current span, or the root of a new trace. With
    OpenTelemetry configured the block is exported as a span of ``kind`` with
    ``attributes``, and an exception leaving it is recorded with an error status. Works as
    ``with`` and ``async with``; enter it once.
    """

    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_started", "_token")

    def __init__(
        self,
        name: str,
        parent: TraceContext | None = None,
        *,
        kind: SpanKind = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self._name = name
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._started: _Started | None = None
        self._token: Token[TraceContext | None] | None = None

    def __enter__(self) -> TraceContext:
        backend = _backend
        if backend is None:
            parent = self._parent or _current.get()
            if parent is None:
                context = TraceContext.new()
            else:
                context = _unchecked(parent.trace_id, _random_id(8), parent.flags)
        else:
            self._started = backend.start(self._name, self._parent, self._kind, self._attributes)
            context = self._started.context
        self._token = _current.set(context)
        return context

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self._started is not None:
            self._started.end(error)
            self._started = None

    async def __aenter__(self) -> TraceContext:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)


def _enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(service_name: str) -> bool:
    """Export spans over OTLP/HTTP as ``service_name``, if this process is set up for it.

    True when spans are now exported: an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``), the SDK is
    not disabled (``OTEL_SDK_DISABLED``) and the ``convhook[otel]`` extra is installed; the
    other standard ``OTEL_*`` variables apply as the OpenTelemetry SDK defines them. False
    otherwise, and :func:`span` stays the cheap path. A second call keeps the first setup.
    """
    global _backend
    with _configure_lock:
        if _backend is not None:
            return True
        # The OTEL_* variables belong to OpenTelemetry's own convention, which its SDK
        # reads from the environment too; convhook's settings stay in convhook.config.
        if not _enabled(os.environ):
            return False
        try:
            from convhook import tracing_otel
        except ImportError as error:
            log.warning(
                "OTLP tracing is configured but OpenTelemetry is not installed "
                "(%s): pip install 'convhook[otel]'",
                error,
                extra={"action": "tracing_unavailable"},
            )
            return False
        backend: _Backend = tracing_otel.Backend(service_name)
        _backend = backend
        log.info(
            "tracing exported over OTLP as %s",
            service_name,
            extra={"action": "tracing_configured", "service_name": service_name},
        )
        return True


def configured() -> bool:
    """Whether :func:`span` records real spans (after a successful :func:`configure`)."""
    return _backend is not None


def shutdown() -> None:
    """Flush the spans not exported yet and stop exporting; :func:`span` is cheap again."""
    global _backend
    with _configure_lock:
        backend, _backend = _backend, None
    if backend is not None:
        backend.shutdown()
