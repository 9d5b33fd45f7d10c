"""Accounting helpers of the data plane: per-request metadata records, telemetry metrics, the
request's trace spans and access-log line, and content hashes (no grpc, no state)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from cloud._metrics import GatewayMetrics
from cloud.core._hooks import TelemetrySink, discard_telemetry
from cloud.core._repository import ModelRepository
from cloud.core._types import InferenceRequest, InferenceResult, RequestRecord, TelemetryEvent
from common import confidence
from common.errors import AimlError
from common.telemetry import context_from_traceparent, device_pseudonym, tracer, wall_ns

log = logging.getLogger(__name__)
access_log = logging.getLogger("aiml021.access")
"""One line per finished request (INFO; off unless logging is configured with access lines)."""
_tracer = tracer  # resolved per call: tracing may be configured after import


def request_record(
    repository: ModelRepository,
    request: InferenceRequest,
    status: str,
    result: InferenceResult | None,
    bytes_in: int,
) -> RequestRecord:
    """The metadata record of a finished request."""
    top, conf, bytes_out = None, None, 0
    if result is not None:
        bytes_out = sum(int(a.nbytes) for a in result.outputs.values())
        top, conf = top_class(repository, result)
    deadline_ms = (
        None if request.deadline is None else (request.deadline - request.received_at) * 1000.0
    )
    return RequestRecord(
        request_id=request.request_id,
        device_id=request.device_id,
        model_name=request.model_name,
        model_version=result.model_version if result else request.model_version,
        route="cache" if result is not None and result.cached else "cloud",
        status=status,
        api=request.api,
        codec=request.codec,
        cut_point=request.cut_point,
        idempotency_key=request.idempotency_key,
        bytes_in=bytes_in,
        queue_s=result.queue_s if result else 0.0,
        compute_s=result.compute_s if result else 0.0,
        cached=result.cached if result else False,
        session_id=request.session_id,
        deadline_ms=deadline_ms,
        offload_reason=request.offload_reason,
        top_class=top,
        confidence=conf,
        bytes_out=bytes_out,
        latency_ms=(time.monotonic() - request.received_at) * 1000.0,
    )


def trace_request(
    request: InferenceRequest, status: str, result: InferenceResult | None, end: float
) -> dict[str, str]:
    """The gateway's spans of a finished request, parented by the caller's ``traceparent``:
    ``aiml021.gateway.request`` (arrival to answer) with ``aiml021.gateway.decode``,
    ``aiml021.batcher.queue`` and ``aiml021.backend.compute`` inside it, placed from the
    result's measured times (written once the request is over, so the hot path holds no span)."""
    t = _tracer("aiml021.gateway")
    parent = context_from_traceparent(request.traceparent)
    end_ns = wall_ns(end)

    def at(instant: float) -> int:  # one clock anchor: nested spans never cross by jitter
        return end_ns - int((end - instant) * 1e9)

    name = "aiml021.session.request" if request.api == "session" else "aiml021.gateway.request"
    span = t.start_span(
        name,
        context=parent,
        start_time=at(request.received_at),
        attributes={
            "aiml021.request_id": request.request_id,
            "aiml021.model": request.model_name,
            "aiml021.api": request.api,
            "aiml021.status": status,
            "aiml021.cut_point": request.cut_point,
            "aiml021.codec": request.codec,
        },
    )
    if not span.is_recording():
        return {}
    from opentelemetry import trace

    ctx = trace.set_span_in_context(span)
    if result is not None and not result.cached:
        compute_start = end - result.compute_s
        queue_start = compute_start - result.queue_s
        steps = [("aiml021.batcher.queue", queue_start, compute_start)]
        steps.append(("aiml021.backend.compute", compute_start, end))
        if result.decode_s:
            steps.insert(0, ("aiml021.gateway.decode", queue_start - result.decode_s, queue_start))
        for step, a, b in steps:
            child = t.start_span(step, context=ctx, start_time=at(a))
            if step == "aiml021.backend.compute":
                child.set_attribute("aiml021.batch_size", result.batch_size)
            child.end(end_time=at(b))
    if status != "OK":
        span.set_status(trace.StatusCode.ERROR, status)
    span.end(end_time=end_ns)
    sc = span.get_span_context()
    return {"trace_id": format(sc.trace_id, "032x"), "span_id": format(sc.span_id, "016x")}


def log_request(
    request: InferenceRequest,
    status: str,
    result: InferenceResult | None,
    region: str,
    latency_s: float,
    trace_ids: dict[str, str] | None = None,
) -> None:
    """The access-log line of a finished request (JSON fields with ``--log-format json``)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s",
        request.api,
        request.model_name,
        status,
        extra={
            "request_id": request.request_id,
            "device": device_pseudonym(request.device_id),
            "model": request.model_name,
            "api": request.api,
            "route": "cache" if result is not None and result.cached else "cloud",
            "decision": request.offload_reason or "infer",
            "status": status,
            "region": region,
            "latency_ms": round(latency_s * 1000.0, 3),
            **(trace_ids or {}),
        },
    )


def calibrate(result: InferenceResult, temperature: float) -> tuple[int | None, float | None]:
    """Top class and temperature-scaled confidence of a single-sample classifier answer,
    computed once per result (kept on it: the answer and the request record read the same)."""
    if result.top_class is None and result.outputs:
        first = next(iter(result.outputs.values()))
        if first.ndim == 2 and first.shape[0] == 1 and np.issubdtype(first.dtype, np.floating):
            result.top_class, result.confidence = confidence.top_class(first[0], temperature)
    return result.top_class, result.confidence


def top_class(
    repository: ModelRepository, result: InferenceResult
) -> tuple[int | None, float | None]:
    """:func:`calibrate` with the temperature of the model that answered."""
    if result.top_class is not None:
        return result.top_class, result.confidence
    try:
        temperature = repository.resolve(result.model_name, result.model_version).temperature
    except AimlError:
        temperature = 1.0
    return calibrate(result, temperature)


def record_telemetry(
    metrics: GatewayMetrics,
    sink: TelemetrySink,
    events: Sequence[TelemetryEvent],
    dropped: int = 0,
) -> int:
    """Count device telemetry (route, device-side latency, bytes) and hand each event to
    ``sink``; never blocks or raises. Returns the events accepted."""
    m = metrics
    if dropped:
        m.telemetry_dropped.inc(dropped)
    for e in events:
        e.region = m.region(e.region)  # what is kept is a label value, never the device's text
        route = e.route or "unspecified"
        m.child(m.telemetry_events, route).inc()
        if e.total_s is not None:
            m.child(m.device_latency, route).observe(e.total_s)
        if 0.0 < e.confidence <= 1.0:  # 0: the device reported none
            m.child(m.answer_confidence, route).observe(e.confidence)
        if e.bytes_sent:
            m.child(m.telemetry_bytes, "sent").inc(e.bytes_sent)
        if e.bytes_received:
            m.child(m.telemetry_bytes, "received").inc(e.bytes_received)
        if sink is not discard_telemetry:
            try:
                sink(e)
            except Exception:
                log.exception("telemetry sink failed")
    return len(events)


def content_hash(inputs: Mapping[str, np.ndarray], outputs: Sequence[str] = ()) -> str:
    """Hex sha256 over the inputs (names, dtypes, shapes, bytes) and the requested outputs."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        arr = np.ascontiguousarray(inputs[name])
        h.update(f"{name}\x00{arr.dtype.str}\x00{arr.shape}\x00".encode())
        h.update(arr.data)
    h.update("\x00".join(outputs).encode())
    return h.hexdigest()


__all__ = [
    "access_log",
    "calibrate",
    "content_hash",
    "log_request",
    "record_telemetry",
    "request_record",
    "top_class",
    "trace_request",
]
