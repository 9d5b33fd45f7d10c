"""Converters between the session protocol's protobuf frames and the agent's plain types.

This is the only module of the agent that touches generated ``*_pb2`` code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grpc
import numpy as np
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.session.v1 import session_pb2
from aiml021.telemetry.v1 import telemetry_pb2

from common import tensors
from common.dtypes import dtype_to_proto
from common.errors import AimlError, ErrorCode, error_from_code
from common.prototime import (
    duration_from_ms,
    duration_from_s,
    duration_to_ms,
    duration_to_s,
    now_timestamp,
    timestamp_from_s,
    timestamp_to_s,
)
from edge_agent._features import RAW, EncodedFeatures
from edge_agent._types import Route
from policy import PolicySnapshot

PROTOCOL_VERSION = 1
_ROUTES = {
    request_pb2.ROUTE_EDGE: Route.EDGE,
    request_pb2.ROUTE_CLOUD: Route.CLOUD,
    request_pb2.ROUTE_EDGE_FALLBACK: Route.EDGE_FALLBACK,
    request_pb2.ROUTE_CACHE: Route.CACHE,
    request_pb2.ROUTE_DEFERRED: Route.DEFERRED,
}
_ROUTE_IDS = {v: k for k, v in _ROUTES.items()}


@dataclasses.dataclass(frozen=True)
class OutboundRequest:
    """One offload as the stream client sends it (and re-sends after a reconnect)."""

    request_id: str
    idempotency_key: str
    model_name: str
    model_version: str
    cut_point: str
    features: EncodedFeatures
    deadline: float
    """Wall-clock instant (``time.time()`` seconds) after which the answer is useless."""
    digest: bytes
    deferred: bool = False
    high_priority: bool = False
    rtt_s: float = 0.0
    bandwidth_bps: float = 0.0
    exit_confidences: tuple[float, ...] = ()
    entropy: float = 0.0
    device_class: str = ""
    edge_load: float = 0.0
    region: str = ""
    traceparent: str = ""
    """W3C trace context of the device's offload span (empty: not traced)."""


@dataclasses.dataclass(frozen=True)
class Welcome:
    session_id: str
    device_id: str
    max_request_bytes: int
    max_chunk_bytes: int
    max_inflight: int
    ping_interval_s: float
    initial_credit_bytes: int
    policy: PolicySnapshot | None
    inline_payloads: bool = False
    """The gateway accepts InferHeader.payload (one frame per small request)."""


@dataclasses.dataclass(frozen=True)
class CloudAnswer:
    request_id: str
    top_class: int
    confidence: float
    route: Route
    served_model_version: str
    cached: bool
    queue_ms: float
    cloud_compute_ms: float
    decode_ms: float
    outputs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """The model's output tensors (a detector's map, a recogniser's steps...), by name."""


@dataclasses.dataclass(frozen=True)
class CloudFailure:
    request_id: str
    code: ErrorCode
    message: str


@dataclasses.dataclass(frozen=True)
class Credit:
    bytes: int
    requests: int


@dataclasses.dataclass(frozen=True)
class Drain:
    reason: str
    reconnect_after_s: float
    alternate_endpoint: str
    close_at: float | None


@dataclasses.dataclass(frozen=True)
class Pong:
    nonce: int


Incoming = Welcome | CloudAnswer | CloudFailure | Credit | Drain | Pong | PolicySnapshot


def hello(
    device_id: str,
    device_class: str,
    agent_version: str,
    max_inflight: int,
    max_chunk_bytes: int,
    resume_session_id: str = "",
    bundles: Sequence[tuple[str, str]] = (),
) -> session_pb2.ConnectRequest:
    """The Hello frame that opens a session; ``bundles``: (model name, head version) pairs the
    gateway must serve the matching tails of."""
    caps = session_pb2.Capabilities(
        codecs=[tensor_pb2.CODEC_KIND_RAW],
        max_inflight_requests=max_inflight,
        max_chunk_bytes=max_chunk_bytes,
        accepts_policy_updates=True,
    )
    return session_pb2.ConnectRequest(
        hello=session_pb2.Hello(
            device_id=device_id,
            protocol_version=PROTOCOL_VERSION,
            capabilities=caps,
            agent_version=agent_version,
            device_class=device_class,
            resume_session_id=resume_session_id,
            bundles=[session_pb2.BundleHead(model_name=n, version=v) for n, v in bundles],
        )
    )


def _encoding(f: EncodedFeatures) -> tensor_pb2.EncodedTensorHeader:
    """What the header declares about the payload. A codec frame describes its own codec (the
    gateway reads it from the frame), so the codec is named here only for bare elements (RAW)."""
    msg = tensor_pb2.EncodedTensorHeader(
        dtype=dtype_to_proto(f.dtype),  # type: ignore[arg-type]
        shape=list(f.shape),
        original_bytes=f.original_bytes,
        coded_bytes=len(f.payload),
        crc32c=f.crc32c,
    )
    if not f.framed:
        msg.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
        msg.codec.text = RAW
    return msg


def infer_frames(
    req: OutboundRequest, chunk_bytes: int, *, inline: bool = False
) -> list[session_pb2.ConnectRequest]:
    """InferHeader followed by the TensorChunk frames of ``req``; with ``inline`` (for a payload
    of at most ``chunk_bytes``) the header alone, carrying the payload in ``payload``."""
    payload = req.features.payload
    if inline and not 0 < len(payload) <= chunk_bytes:
        raise ValueError(f"an inline payload must be 1..{chunk_bytes} bytes, not {len(payload)}")
    header = session_pb2.InferHeader(
        request_id=req.request_id,
        idempotency_key=req.idempotency_key,
        model_name=req.model_name,
        model_version=req.model_version,
        cut_point=req.cut_point,
        total_bytes=len(payload),
        deadline=timestamp_from_s(req.deadline),
        priority=request_pb2.PRIORITY_HIGH if req.high_priority else request_pb2.PRIORITY_NORMAL,
        context=request_pb2.RequestContext(
            rtt=duration_from_s(req.rtt_s),
            bandwidth_bps=req.bandwidth_bps,
            edge_load=req.edge_load,
            exit_confidences=list(req.exit_confidences),
            entropy=req.entropy,
            modality=request_pb2.MODALITY_IMAGE,
            device_class=req.device_class,
            region=req.region,
        ),
        deferred=req.deferred,
        payload_digest=req.digest,
        traceparent=req.traceparent,
    )
    if req.features.parts:  # a multi-tensor cut: one part per tensor, each with its own codec
        for name, part in req.features.parts:
            header.parts.add(name=name, encoding=_encoding(part), payload_bytes=len(part.payload))
    else:
        header.encoding.CopyFrom(_encoding(req.features))
    if inline:
        header.payload = payload
    frames = [session_pb2.ConnectRequest(infer_header=header)]  # copies the header
    if inline:
        return frames
    offsets = range(0, max(len(payload), 1), chunk_bytes)
    for off in offsets:
        data = payload[off : off + chunk_bytes]
        frames.append(
            session_pb2.ConnectRequest(
                tensor_chunk=session_pb2.TensorChunk(
                    request_id=req.request_id,
                    offset=off,
                    data=data,
                    last=off + chunk_bytes >= len(payload),
                )
            )
        )
    return frames


def cancel(request_id: str) -> session_pb2.ConnectRequest:
    """A Cancel frame."""
    return session_pb2.ConnectRequest(cancel=session_pb2.Cancel(request_id=request_id))


def ping(nonce: int) -> session_pb2.ConnectRequest:
    """A Ping frame stamped now."""
    return session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=nonce, sent_at=now_timestamp()))


def telemetry(
    device_id: str,
    events: list[dict[str, object]],
    dropped: int,
    *,
    region: str = "",
    device_class: str = "",
    replay_backlog: int = 0,
) -> session_pb2.ConnectRequest:
    """A TelemetryBatch frame from event dicts (see ``edge_agent._telemetry``), with what the
    device says about itself (region, class, offloads waiting in its replay queue)."""
    batch = telemetry_pb2.TelemetryBatch(
        device_id=device_id,
        dropped=dropped,
        region=region,
        device_class=device_class,
        replay_backlog=replay_backlog,
    )
    for e in events:
        t = request_pb2.TimingBreakdown(
            edge_compute=duration_from_ms(float(e["edge_compute_ms"])),  # type: ignore[arg-type]
            encode=duration_from_ms(float(e["encode_ms"])),  # type: ignore[arg-type]
            network=duration_from_ms(float(e["network_ms"])),  # type: ignore[arg-type]
            cloud_compute=duration_from_ms(float(e["cloud_compute_ms"])),  # type: ignore[arg-type]
            total=duration_from_ms(float(e["total_ms"])),  # type: ignore[arg-type]
        )
        batch.events.append(
            telemetry_pb2.TelemetryEvent(
                request_id=str(e["request_id"]),
                finished_at=timestamp_from_s(float(e["finished_at"])),  # type: ignore[arg-type]
                model_name=str(e["model_name"]),
                route=_ROUTE_IDS[Route(e["route"])],
                exit_index=int(e["exit_index"]),  # type: ignore[call-overload]
                timing=t,
                bytes_sent=int(e["bytes_sent"]),  # type: ignore[call-overload]
                cache_hit=bool(e["cache_hit"]),
                cut_point=str(e["cut_point"]),
                codec=str(e["codec"]),
                confidence=float(e["confidence"]),  # type: ignore[arg-type]
            )
        )
    return session_pb2.ConnectRequest(telemetry_batch=batch)


def _policy(p: policy_pb2.PolicyUpdate) -> PolicySnapshot:
    # Versions are integers (policy.PolicyPublisher); another gateway's text version reads as -1.
    version = int(p.policy_version) if p.policy_version.lstrip("-").isdigit() else -1
    return PolicySnapshot(
        policy_id=p.policy_id,
        policy_version=version,
        kind=p.kind,
        exit_thresholds=dict(p.exit_thresholds),
        cut_point=p.cut_point,
        codec=p.codec.text,
        state=p.state,
        created_at=timestamp_to_s(p.created_at),
    )


def incoming(msg: session_pb2.ConnectResponse) -> Incoming | None:
    """The plain form of a gateway frame; None for frames of an unknown kind."""
    kind = msg.WhichOneof("frame")
    if kind == "welcome":
        w = msg.welcome
        lim = w.limits
        return Welcome(
            session_id=w.session_id,
            device_id=w.device_id,
            max_request_bytes=lim.max_request_bytes,
            max_chunk_bytes=lim.max_chunk_bytes,
            max_inflight=lim.max_inflight_requests,
            ping_interval_s=duration_to_s(lim.ping_interval),
            initial_credit_bytes=w.initial_credit_bytes,
            policy=_policy(w.policy) if w.HasField("policy") else None,
            inline_payloads=w.inline_payloads,
        )
    if kind == "infer_result":
        r = msg.infer_result
        return CloudAnswer(
            request_id=r.request_id,
            top_class=r.top_class,
            confidence=r.confidence,
            route=_ROUTES.get(r.route, Route.CLOUD),
            served_model_version=r.served_model_version,
            cached=r.cached,
            queue_ms=duration_to_ms(r.timing.queue),
            cloud_compute_ms=duration_to_ms(r.timing.cloud_compute),
            decode_ms=duration_to_ms(r.timing.decode),
            outputs={
                t.name: tensors.from_proto(t) for t in r.outputs if not t.HasField("encoding")
            },
        )
    if kind == "infer_error":
        e = msg.infer_error
        return CloudFailure(
            request_id=e.request_id,
            code=ErrorCode.from_rpc_code(e.status.code),
            message=e.status.message,
        )
    if kind == "credit":
        return Credit(bytes=msg.credit.bytes, requests=msg.credit.requests)
    if kind == "drain":
        d = msg.drain
        return Drain(
            reason=d.reason,
            reconnect_after_s=duration_to_s(d.reconnect_after),
            alternate_endpoint=d.alternate_endpoint,
            close_at=timestamp_to_s(d.close_at) if d.HasField("close_at") else None,
        )
    if kind == "pong":
        return Pong(nonce=msg.pong.nonce)
    if kind == "policy_update":
        return _policy(msg.policy_update)
    return None


def error_from_rpc_error(exc: grpc.RpcError) -> AimlError:
    """Our error for a failed call to the gateway (the one place the agent turns a
    ``grpc.RpcError`` into an :class:`AimlError`)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return error_from_code(ErrorCode.from_name(name), f"gateway: {details or name}")


__all__ = [
    "PROTOCOL_VERSION",
    "CloudAnswer",
    "CloudFailure",
    "Credit",
    "Drain",
    "Incoming",
    "OutboundRequest",
    "Pong",
    "Welcome",
    "cancel",
    "error_from_rpc_error",
    "hello",
    "incoming",
    "infer_frames",
    "ping",
    "telemetry",
]
