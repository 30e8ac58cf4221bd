"""The OpenTelemetry side of :mod:`convhook.tracing`: real spans, exported over OTLP/HTTP.

Imported by :func:`convhook.tracing.configure` only, so that OpenTelemetry stays out of a
process that does not export (the ``convhook[otel]`` extra installs it).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from convhook import __version__
from convhook.tracing import AttributeValue, SpanKind, TraceContext, _unchecked, current

_KINDS: dict[str, trace.SpanKind] = {
    "internal": trace.SpanKind.INTERNAL,
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}


def _remote(parent: TraceContext) -> otel_context.Context:
    """An OpenTelemetry context whose current span is ``parent``, received from elsewhere."""
    span_context = SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(parent.flags, 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def _as_trace_context(span_context: SpanContext) -> TraceContext:
    # A valid SpanContext holds valid ids: the check a TraceContext makes of its fields
    # would only add to each span's cost.
    return _unchecked(
        f"{span_context.trace_id:032x}",
        f"{span_context.span_id:016x}",
        f"{span_context.trace_flags:02x}",
    )


def _resource(service_name: str) -> Resource:
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service when set (attributes
    # given to Resource.create would win over them); the caller's name is the default.
    if SERVICE_NAME in OTELResourceDetector().detect().attributes:
        return Resource.create()
    return Resource.create({SERVICE_NAME: service_name})


class Started:
    """A real span begun by :meth:`Backend.start`, current in OpenTelemetry's context too,
    so spans of the application's own instrumentation nest under it."""

    __slots__ = ("_span", "_token", "context")

    def __init__(self, span: trace.Span, context: TraceContext) -> None:
        self._span = span
        self.context = context
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def end(self, error: BaseException | None) -> None:
        try:
            if error is not None and self._span.is_recording():
                self._span.record_exception(error)
                self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            self._span.end()
        finally:
            otel_context.detach(self._token)


class Backend:
    """A TracerProvider of convhook's own, exporting in batches to the OTLP/HTTP endpoint
    that the standard ``OTEL_EXPORTER_OTLP_*`` variables name."""

    def __init__(self, service_name: str) -> None:
        self._provider = TracerProvider(resource=_resource(service_name))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("convhook", __version__)
        # The application's own spans go through this provider too, unless it set one up
        # itself (OpenTelemetry's global provider can be set once per process).
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(self._provider)

    def start(
        self,
        name: str,
        parent: TraceContext | None,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> Started:
        if parent is not None:
            parent_context: otel_context.Context | None = _remote(parent)
        elif trace.get_current_span().get_span_context().is_valid:
            parent_context = None
        else:
            # Nothing current in OpenTelemetry's context, e.g. a block entered before
            # configure(): continue convhook's own current context if there is one.
            ours = current()
            parent_context = _remote(ours) if ours is not None else None
        span = self._tracer.start_span(
            name,
            context=parent_context,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        span_context = span.get_span_context()
        if span_context.is_valid:
            context = _as_trace_context(span_context)
        elif parent is not None:
            context = parent.child()
        else:
            context = TraceContext.new()
        return Started(span, context)

    def shutdown(self) -> None:
        """Export what the batch still holds, then stop."""
        self._provider.shutdown()
