"""convhook.tracing without OpenTelemetry: the traceparent format and the cheap spans."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convhook import tracing
from convhook.errors import ConvhookError, PayloadError
from convhook.tracing import TraceContext, TraceparentError, current, parse, span

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
HEADER = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (HEADER, "01"),
        (f"00-{TRACE}-{SPAN}-00", "00"),
        (f"00-{TRACE}-{SPAN}-ff", "ff"),
        # A later version: its first 55 characters as version 00, the rest ignored, only
        # the sampled flag kept.
        (f"01-{TRACE}-{SPAN}-03", "01"),
        (f"cc-{TRACE}-{SPAN}-02", "00"),
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-adds", "01"),
    ],
)
def test_parse_valid(value: str, flags: str) -> None:
    """A valid traceparent gives its trace id, span id and flags."""
    context = parse(value)
    assert context == TraceContext(TRACE, SPAN, flags)
    assert context.header() == f"00-{TRACE}-{SPAN}-{flags}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        (HEADER + "-", "55 characters"),
        (HEADER + " ", "55 characters"),
        (" " + HEADER, "version is not"),
        (HEADER.upper(), "lowercase"),
        (f"00-{TRACE.upper()}-{SPAN}-01", "lowercase"),
        (f"00-{TRACE}-{SPAN}-0A", "lowercase"),
        (f"00-{TRACE[:-1]}g-{SPAN}-01", "not hex"),
        (f"00-{TRACE}_{SPAN}-01", "not hex"),
        (f"00-{TRACE}-{SPAN}-1", "55 characters"),
        (f"00-{'0' * 32}-{SPAN}-01", "trace id is all zeros"),
        (f"00-{TRACE}-{'0' * 16}-01", "span id is all zeros"),
        (f"ff-{TRACE}-{SPAN}-01", "version ff"),
        (f"01-{TRACE}-{SPAN}-01x", "the end or a dash"),
        (f"01-{TRACE}-{SPAN}", "at least 55"),
        (f"01-{TRACE}-{SPAN[:-1]}x-01", "not hex"),
        (f"01-{TRACE}-{SPAN}-0A", "lowercase"),
        (f"01-{'0' * 32}-{SPAN}-01", "trace id is all zeros"),
        ("0", "version is not"),
    ],
)
def test_parse_invalid(value: str, reason: str) -> None:
    """An invalid traceparent is refused with the reason and the expected form."""
    with pytest.raises(TraceparentError) as caught:
        parse(value)
    assert reason in caught.value.reason
    message = str(caught.value)
    assert "traceparent" in message
    assert tracing.EXPECTED in message
    assert caught.value.problems[0].field == "traceparent"


HEX = "0123456789abcdef"


@given(
    st.text(HEX, min_size=32, max_size=32).filter(lambda t: t.strip("0")),
    st.text(HEX, min_size=16, max_size=16).filter(lambda t: t.strip("0")),
    st.text(HEX, min_size=2, max_size=2),
)
def test_round_trip(trace_id: str, span_id: str, flags: str) -> None:
    """Any valid version 00 value parses to its fields and is written back unchanged."""
    value = f"00-{trace_id}-{span_id}-{flags}"
    assert parse(value).header() == value


@given(st.text(max_size=80) | st.text("0123456789abcdefABCDEF-", max_size=80))
def test_anything_else_is_refused_cleanly(value: str) -> None:
    """Any string either parses to a 55-character version 00 value or is a TraceparentError."""
    try:
        header, reason = parse(value).header(), ""
    except TraceparentError as error:
        header, reason = "", error.reason
    assert bool(reason) != bool(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", header))


def test_error_is_a_client_error() -> None:
    """TraceparentError is the API's 400 branch of the convhook tree."""
    from convhook.api.errors import answer_for

    error = TraceparentError("x", "version 00 is 55 characters")
    assert isinstance(error, PayloadError)
    assert isinstance(error, ConvhookError)
    assert answer_for(error).status == 400


def test_long_value_is_shortened_in_the_message() -> None:
    """A long refused value is cut in the message (it is echoed to the client)."""
    error = TraceparentError("a" * 1000, "too long")
    assert len(str(error)) < 300
    assert error.value == "a" * 1000


def test_constructor_checks_the_fields() -> None:
    """A TraceContext built by hand is checked like a parsed header."""
    with pytest.raises(TraceparentError):
        TraceContext(TRACE.upper(), SPAN, "01")
    with pytest.raises(TraceparentError):
        TraceContext(TRACE, "0" * 16, "01")


def test_new_and_child() -> None:
    """new() starts a sampled trace; child() keeps the trace and flags under a new span id."""
    root = TraceContext.new()
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", root.header())
    assert root.sampled
    assert parse(root.header()) == root
    kids = {root.child() for _ in range(100)}
    assert len({k.span_id for k in kids}) == 100
    assert {(k.trace_id, k.flags) for k in kids} == {(root.trace_id, "01")}
    assert root.span_id not in {k.span_id for k in kids}
    assert TraceContext.new().trace_id != root.trace_id
    unsampled = parse(f"00-{TRACE}-{SPAN}-00").child()
    assert not unsampled.sampled
    assert unsampled.flags == "00"


def test_span_without_otel_is_a_child_context() -> None:
    """Unconfigured, a span yields a child of its parent and is current only inside."""
    parent = parse(HEADER)
    assert not tracing.configured()
    assert current() is None
    with span("attempt", parent, kind="client", attributes={"attempt": 1}) as inside:
        assert inside.trace_id == TRACE
        assert inside.span_id != SPAN
        assert current() == inside
        with span("inner") as nested:
            assert nested.trace_id == TRACE
            assert nested.span_id not in (SPAN, inside.span_id)
            assert current() == nested
        assert current() == inside
    assert current() is None


def test_span_without_parent_starts_a_trace() -> None:
    """With no parent and nothing current, a span is the root of a new trace."""
    with span("api request", kind="server") as root:
        assert root.sampled
        assert current() == root
    with span("api request") as other:
        assert other.trace_id != root.trace_id


def test_span_restores_current_on_error() -> None:
    """An exception leaving a span propagates and the previous context is current again."""
    with span("outer") as outer:
        with pytest.raises(ValueError, match="boom"), span("failing"):
            raise ValueError("boom")
        assert current() == outer


async def test_span_in_async_code() -> None:
    """Concurrent tasks each see their own current span, with `with` and `async with`."""
    parent = parse(HEADER)

    async def handler(n: int) -> tuple[TraceContext, TraceContext | None]:
        async with span(f"handler {n}", parent, kind="consumer") as mine:
            await asyncio.sleep(0.01)
            with span("step"):
                await asyncio.sleep(0.01)
            return mine, current()

    results = await asyncio.gather(*(handler(n) for n in range(5)))
    for mine, seen in results:
        assert mine == seen
        assert mine.trace_id == TRACE
    assert len({mine.span_id for mine, _ in results}) == 5
    assert current() is None


def test_configure_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an OTLP endpoint configure() declines and spans stay cheap."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.configure("convhook-test") is False
    assert not tracing.configured()
    tracing.shutdown()


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_SDK_DISABLED": "true"},
        {"OTEL_SDK_DISABLED": "TRUE"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_configure_when_disabled(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none wins over an endpoint."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.configure("convhook-test") is False
    assert not tracing.configured()


def test_import_leaves_opentelemetry_out() -> None:
    """Importing convhook.tracing and using a span does not import OpenTelemetry."""
    probe = (
        "import sys\n"
        "from convhook import tracing\n"
        "with tracing.span('x'):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
