"""common.telemetry's trace-context plumbing: W3C traceparent in and out of gRPC metadata, what
is ignored, sampling that follows the caller, and tracing off by default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.telemetry import (
    configure_tracing,
    context_from_traceparent,
    extract_metadata,
    inject_metadata,
    shutdown_tracing,
    traceparent,
    tracer,
)

SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("test", exporter=exporter, sample_ratio=0.0)  # new traces: never
    yield exporter
    shutdown_tracing()


def test_tracing_is_off_until_configured() -> None:
    assert configure_tracing("x") is None
    with tracer("t").start_as_current_span("s") as span:
        assert not span.is_recording() and traceparent() == ""
    assert inject_metadata([("a", "1")]) == [("a", "1")]


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", SAMPLED + "x" * 200, "ff-zz-zz-zz"],
)
def test_malformed_or_empty_trace_context_is_ignored(value: str) -> None:
    assert context_from_traceparent(value) is None
    assert extract_metadata([("traceparent", value)]) is None


def test_metadata_round_trip_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    parent = extract_metadata([("x-other", "1"), ("traceparent", SAMPLED)])
    assert parent is not None
    assert extract_metadata({"traceparent": SAMPLED}) is not None
    assert extract_metadata([("traceparent", SAMPLED.encode())]) is None  # binary: not ours
    with tracer("t").start_as_current_span("child", context=parent):
        out = inject_metadata([("traceparent", "stale"), ("k", "v")])
    (value,) = [v for k, v in out if k == "traceparent"]
    assert ("k", "v") in out and len(out) == 2
    assert value.split("-")[1] == SAMPLED.split("-")[1]  # same trace, a new parent span
    (span,) = spans.get_finished_spans()
    assert span.parent is not None and format(span.parent.span_id, "016x") == SAMPLED[36:52]


def test_the_callers_sampling_decision_wins_over_the_ratio(spans: InMemorySpanExporter) -> None:
    with tracer("t").start_as_current_span("new-trace") as span:
        assert not span.is_recording()  # ratio 0: a trace started here is not sampled
    unsampled = SAMPLED[:-2] + "00"
    with tracer("t").start_as_current_span("x", context=context_from_traceparent(unsampled)):
        assert not trace.get_current_span().is_recording()
    with tracer("t").start_as_current_span("y", context=context_from_traceparent(SAMPLED)):
        assert trace.get_current_span().is_recording()
    assert [s.name for s in spans.get_finished_spans()] == ["y"]
