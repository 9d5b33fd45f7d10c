"""OpenTelemetry tracing of one request from the edge agent through the session stream, the
batcher and the backend.

The process installs a tracer provider once (:func:`configure_tracing`: an OTLP/gRPC exporter
when an endpoint is configured, or any exporter a test passes, e.g. the SDK's in-memory one);
without one every span is OpenTelemetry's no-op span and costs next to nothing.

Context crosses processes as a W3C ``traceparent``: in gRPC metadata on unary calls
(:func:`inject_metadata` / :func:`extract_metadata`), and in ``InferHeader.traceparent`` for a
request on the session stream, whose gRPC metadata belongs to the stream, not to one request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from common.privacy import Redactor, export_redactor

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
TRACEPARENT = "traceparent"


def configure_tracing(
    service_name: str,
    otlp_endpoint: str = "",
    *,
    exporter: SpanExporter | None = None,
    sample_ratio: float = 1.0,
    insecure: bool = True,
) -> TracerProvider | None:
    """Install this process's tracer provider; returns it (None: tracing stays off).

    ``exporter`` (tests: ``InMemorySpanExporter``) is flushed span by span; otherwise an
    ``otlp_endpoint`` (``host:port`` of an OpenTelemetry collector) gets batches over OTLP/gRPC.
    Neither: tracing is off. Requests whose caller sampled them are always traced; new traces
    are sampled at ``sample_ratio``."""
    global _provider
    if exporter is None and not otlp_endpoint:
        shutdown_tracing()
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exporter)))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure)
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(otlp)))
    shutdown_tracing()
    _provider = provider
    return provider


def _attributes(attrs: Mapping[str, Any] | None, r: Redactor) -> dict[str, Any]:
    return {k: r.text(v, "trace") if isinstance(v, str) else v for k, v in (attrs or {}).items()}


def _redacted(span: ReadableSpan, r: Redactor) -> ReadableSpan:
    attributes = _attributes(span.attributes, r)
    events = [Event(e.name, _attributes(e.attributes, r), e.timestamp) for e in span.events]
    status = span.status
    if status.description:
        status = Status(status.status_code, r.text(status.description, "trace"))
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=attributes, events=events, links=span.links, kind=span.kind, status=status,
        start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )  # fmt: skip


class RedactingSpanExporter(SpanExporter):
    """Passes spans on to ``inner`` with personal data redacted from their string attributes,
    event attributes and status message (DLP on exported traces; spans pass unchanged until an
    export redactor is installed, ``common.privacy.configure_export_redaction``)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        r = export_redactor()
        return self.inner.export(spans if r is None else [_redacted(s, r) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def shutdown_tracing() -> None:
    """Flush and remove the tracer provider (spans become no-ops)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer(name: str) -> trace.Tracer:
    """A tracer of the installed provider (a no-op tracer when tracing is off)."""
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer(name)


def traceparent() -> str:
    """The W3C traceparent of the current span ("" when no span is recording)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_from_traceparent(value: str) -> otel_context.Context | None:
    """The context a W3C ``traceparent`` names (None when empty or malformed)."""
    if not value or len(value) > 128:
        return None
    ctx = _propagator.extract({TRACEPARENT: value})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def inject_metadata(metadata: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """``metadata`` plus the current span's traceparent (gRPC call metadata)."""
    out = [(k, v) for k, v in metadata if k != TRACEPARENT]
    value = traceparent()
    if value:
        out.append((TRACEPARENT, value))
    return out


def extract_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | Mapping[str, str] | None,
) -> otel_context.Context | None:
    """The context carried by a call's ``traceparent`` metadata (None when absent)."""
    if metadata is None:
        return None
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    for key, value in items:
        if key == TRACEPARENT and isinstance(value, str):
            return context_from_traceparent(value)
    return None


def wall_ns(monotonic_s: float) -> int:
    """Epoch nanoseconds of a ``time.monotonic()`` instant (span start and end times)."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


__all__ = [
    "TRACEPARENT",
    "RedactingSpanExporter",
    "configure_tracing",
    "context_from_traceparent",
    "extract_metadata",
    "inject_metadata",
    "shutdown_tracing",
    "traceparent",
    "tracer",
    "wall_ns",
]
