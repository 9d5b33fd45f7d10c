"""Protobuf <-> core types. Generated ``*_pb2`` types stop here.

One small function group per message: KServe-v2 ModelInferRequest/Response and the session
frames (InferHeader, TensorChunk -> core; results, errors, credits -> ConnectResponse).
"""

from __future__ import annotations

import struct
import time

import numpy as np
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.session.v1 import session_pb2
from inference import grpc_service_pb2 as pb

from cloud.core import (
    Chunk,
    InferenceRequest,
    InferenceResult,
    ModelSpec,
    PayloadFormat,
    PayloadPart,
    Priority,
    RequestHeader,
    SessionLimits,
    bytes_input,
    calibrate,
)
from cloud.grpc._policy_converters import request_context_from_proto
from common import dtypes
from common.dtypes import dtype_from_proto, dtype_to_proto, dtype_to_v2
from common.errors import InvalidArgument
from common.prototime import duration_from_s, monotonic_from_timestamp
from common.tensors import check_shape, from_raw, to_raw

_MAX_ELEMENTS = 1 << 40
"""More elements than any buffer holds: a shape past it is refused before numpy sees it."""

# -- KServe v2 ---------------------------------------------------------------------------------


def _param(params: object, name: str) -> object | None:
    p = params.get(name) if hasattr(params, "get") else None
    if p is None:
        return None
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def check_request_id(request_id: str, max_bytes: int, what: str = "request id") -> None:
    """INVALID_ARGUMENT for an id longer than ``max_bytes`` (UTF-8); the message does not echo it."""
    n = len(request_id.encode())
    if n > max_bytes:
        raise InvalidArgument(
            f"{what} of {n} bytes exceeds the gateway's limit of {max_bytes} bytes "
            "(server.max_request_id_bytes)"
        )


def check_frame_request_id(msg: session_pb2.ConnectRequest, max_bytes: int) -> None:
    """INVALID_ARGUMENT when the request id of a session frame (InferHeader, TensorChunk, Cancel)
    is over ``max_bytes``."""
    kind = msg.WhichOneof("frame")
    if kind in ("infer_header", "tensor_chunk", "cancel"):
        frame = getattr(msg, kind)
        check_request_id(frame.request_id, max_bytes, f"{type(frame).__name__}.request_id")


_CONTENT_BYTES = (
    ("bool_contents", 1),
    ("int_contents", 4),
    ("int64_contents", 8),
    ("uint_contents", 4),
    ("uint64_contents", 8),
    ("fp32_contents", 4),
    ("fp64_contents", 8),
)


def infer_request_bytes(msg: pb.ModelInferRequest) -> int:
    """Bytes of tensor data a ModelInferRequest carries (raw and typed contents), counted
    without copying them: what the call holds of its device's buffer quota."""
    n = sum(map(len, msg.raw_input_contents))
    for t in msg.inputs:
        if t.HasField("contents"):
            c = t.contents
            n += sum(len(getattr(c, field)) * size for field, size in _CONTENT_BYTES)
            n += sum(map(len, c.bytes_contents))
    return n


def infer_request_from_pb(
    msg: pb.ModelInferRequest,
    api: str,
    time_remaining: float | None,
    max_request_id_bytes: int = 256,
) -> InferenceRequest:
    """Core request of a ModelInferRequest (raw_input_contents or typed contents). Sizes are
    checked before anything is built from a declared shape."""
    check_request_id(msg.id, max_request_id_bytes, "ModelInferRequest.id")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidArgument(
            f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs; send one per input"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(msg.inputs):
        if t.datatype == "BYTES":  # one encoded image for a pipeline (cloud.core.bytes_input)
            element = (
                raw[i]
                if raw
                else b"".join(struct.pack("<I", len(v)) + v for v in t.contents.bytes_contents)
            )
            if t.name in inputs:
                raise InvalidArgument(f"input {t.name!r} given twice")
            inputs[t.name] = bytes_input(t.name, t.shape, element)
            continue
        row = dtypes.by_v2(t.datatype)
        dtype = row.name
        if raw:
            if t.HasField("contents"):  # Triton refuses the mix: which of the two is the input?
                raise InvalidArgument(
                    f"input {t.name!r}: contents must not be given when raw_input_contents are "
                    "used; send every input one way"
                )
            arr = from_raw(dtype, t.shape, raw[i])
        else:
            field = row.contents_field
            if field is None:
                raise InvalidArgument(f"input {t.name!r}: send {t.datatype} as raw_input_contents")
            values = getattr(t.contents, field)
            count = check_shape(t.shape, _MAX_ELEMENTS)
            if count != len(values):
                raise InvalidArgument(
                    f"input {t.name!r}: {len(values)} values but shape {list(t.shape)} needs {count}"
                )
            arr = np.asarray(values, dtype=dtype).reshape([int(d) for d in t.shape])
        if t.name in inputs:
            raise InvalidArgument(f"input {t.name!r} given twice")
        inputs[t.name] = arr
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    timeout_us = _param(msg.parameters, "timeout")
    if isinstance(timeout_us, int) and timeout_us > 0:
        mine = time.monotonic() + timeout_us / 1e6
        deadline = mine if deadline is None else min(deadline, mine)
    prio = _param(msg.parameters, "priority")
    priority = Priority.NORMAL
    if isinstance(prio, int) and prio > 0:
        # Triton: 1 is the highest priority level.
        priority = Priority.HIGH if prio == 1 else Priority.LOW
    idem = _param(msg.parameters, "idempotency_key")
    return InferenceRequest(
        model_name=msg.model_name,
        model_version=msg.model_version,
        inputs=inputs,
        outputs=tuple(o.name for o in msg.outputs),
        request_id=msg.id,
        deadline=deadline,
        priority=priority,
        idempotency_key=idem if isinstance(idem, str) else "",
        api=api,
        kserve=api in ("infer", "stream"),
    )


def infer_response_to_pb(result: InferenceResult, request_id: str) -> pb.ModelInferResponse:
    """ModelInferResponse with raw_output_contents (what tritonclient reads)."""
    resp = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=request_id
    )
    for name, arr in result.outputs.items():
        resp.outputs.add(name=name, datatype=dtype_to_v2(arr.dtype), shape=arr.shape)
        resp.raw_output_contents.append(to_raw(arr))
    return resp


def tensor_metadata(spec_tensors: object) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    """TensorMetadata list of a model's input or output specs."""
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=t.name, datatype=dtype_to_v2(t.dtype), shape=list(t.shape)
        )
        for t in spec_tensors  # type: ignore[attr-defined]
    ]


# -- session frames ----------------------------------------------------------------------------

_PRIORITY = {
    request_pb2.PRIORITY_UNSPECIFIED: Priority.NORMAL,
    request_pb2.PRIORITY_LOW: Priority.LOW,
    request_pb2.PRIORITY_NORMAL: Priority.NORMAL,
    request_pb2.PRIORITY_HIGH: Priority.HIGH,
}


_RAW_STAGES = ((), (tensor_pb2.CODEC_KIND_RAW,))


def header_from_pb(h: session_pb2.InferHeader) -> RequestHeader:
    """Core header of an InferHeader (deadline turned into a monotonic instant)."""
    parts = tuple(
        PayloadPart(p.name, _payload_format(p.encoding), p.payload_bytes) for p in h.parts
    )
    if parts and h.HasField("encoding"):
        raise InvalidArgument("InferHeader.encoding must be unset when parts are given")
    fmt = (
        PayloadFormat(parts[0].format.dtype, (), (), "parts")
        if parts
        else _payload_format(h.encoding)
    )
    deadline = None
    if h.HasField("deadline"):
        deadline = monotonic_from_timestamp(h.deadline)
    return RequestHeader(
        request_id=h.request_id,
        model_name=h.model_name,
        model_version=h.model_version,
        cut_point=h.cut_point,
        payload=fmt,
        parts=parts,
        total_bytes=h.total_bytes,
        deadline=deadline,
        priority=_PRIORITY.get(h.priority, Priority.NORMAL),
        idempotency_key=h.idempotency_key,
        payload_digest=h.payload_digest,
        deferred=h.deferred,
        inline_payload=h.payload,
        context=request_context_from_proto(h.context) if h.HasField("context") else None,
        region=h.context.region,
        traceparent=h.traceparent,
    )


def _payload_format(enc: tensor_pb2.EncodedTensorHeader) -> PayloadFormat:
    stages = tuple([s.kind for s in enc.codec.stages])
    if tensor_pb2.CODEC_KIND_UNSPECIFIED in stages:
        raise InvalidArgument("codec stage kind CODEC_KIND_UNSPECIFIED is not allowed")
    shape = tuple(enc.shape)
    if shape and min(shape) < 0:
        raise InvalidArgument(f"encoding.shape {list(shape)} has a negative dimension")
    return PayloadFormat(
        dtype_from_proto(enc.dtype),
        shape,
        stages,
        enc.codec.text or ("raw" if stages in _RAW_STAGES else "coded"),
    )


def payload_format_from_pb(enc: tensor_pb2.EncodedTensorHeader) -> PayloadFormat:
    """Core payload format of an EncodedTensorHeader (a session's encoding, REST's
    ``compression``); UNSPECIFIED codec stages and negative dimensions are refused."""
    return _payload_format(enc)


def priority_from_pb(value: request_pb2.Priority.ValueType) -> Priority:
    """Core priority of an ``aiml021.common.v1.Priority`` (UNSPECIFIED: normal)."""
    return _PRIORITY.get(value, Priority.NORMAL)


def chunk_from_pb(c: session_pb2.TensorChunk) -> Chunk:
    """Core chunk of a TensorChunk."""
    return Chunk(c.request_id, c.offset, c.data, c.last)


def limits_to_pb(limits: SessionLimits) -> session_pb2.NegotiatedLimits:
    """NegotiatedLimits for Welcome."""
    return session_pb2.NegotiatedLimits(
        max_request_bytes=limits.max_request_bytes,
        max_chunk_bytes=limits.max_chunk_bytes,
        max_inflight_requests=limits.max_inflight_requests,
        max_session_buffer_bytes=limits.max_session_buffer_bytes,
        reassembly_timeout=duration_from_s(limits.reassembly_timeout_s),
        ping_interval=duration_from_s(limits.ping_interval_s),
    )


def result_to_pb(
    request_id: str, result: InferenceResult, spec: ModelSpec
) -> session_pb2.ConnectResponse:
    """ConnectResponse carrying an InferResult (top class and calibrated confidence for
    single-sample classifier outputs)."""
    msg = session_pb2.ConnectResponse()
    r = msg.infer_result
    r.request_id = request_id
    r.route = request_pb2.ROUTE_CACHE if result.cached else request_pb2.ROUTE_CLOUD
    r.served_model_version = result.model_version
    r.cached = result.cached
    for name, arr in result.outputs.items():
        r.outputs.add(
            name=name, dtype=dtype_to_proto(arr.dtype), shape=arr.shape, contents=to_raw(arr)
        )
    top, confidence = calibrate(result, spec.temperature)
    if top is not None and confidence is not None:
        r.top_class = top
        r.confidence = confidence
    if result.queue_s or result.compute_s:
        r.timing.queue.CopyFrom(duration_from_s(result.queue_s))
        r.timing.cloud_compute.CopyFrom(duration_from_s(result.compute_s))
    if result.decode_s:
        r.timing.decode.CopyFrom(duration_from_s(result.decode_s))
    return msg


__all__ = [
    "check_frame_request_id",
    "check_request_id",
    "chunk_from_pb",
    "header_from_pb",
    "infer_request_bytes",
    "infer_request_from_pb",
    "infer_response_to_pb",
    "limits_to_pb",
    "payload_format_from_pb",
    "priority_from_pb",
    "result_to_pb",
    "tensor_metadata",
]
