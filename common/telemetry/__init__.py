"""Observability shared by the gateway and the edge agent: one logging configuration (JSON lines
with request fields and pseudonymous devices) and OpenTelemetry tracing with W3C trace context."""

from common.telemetry._logging import (
    REQUEST_FIELDS,
    JsonFormatter,
    LogFormat,
    configure_logging,
    device_pseudonym,
)
from common.telemetry._tracing import (
    TRACEPARENT,
    configure_tracing,
    context_from_traceparent,
    extract_metadata,
    inject_metadata,
    shutdown_tracing,
    traceparent,
    tracer,
    wall_ns,
)

__all__ = [
    "REQUEST_FIELDS",
    "TRACEPARENT",
    "JsonFormatter",
    "LogFormat",
    "configure_logging",
    "configure_tracing",
    "context_from_traceparent",
    "device_pseudonym",
    "extract_metadata",
    "inject_metadata",
    "shutdown_tracing",
    "traceparent",
    "tracer",
    "wall_ns",
]
