"""``POST /v1/features``: an offloaded request without a session (``InferFeaturesRequest``).

The features arrive base64-coded in ``features_b64`` with a ``compression`` object that says how
they are coded (the session's EncodedTensorHeader: codec stages, dtype, shape). The declared
dtype and shape are checked against the tail model before anything is decoded; a codec frame is
decoded off the event loop, bounded by the declared shape; the answer is the session's
InferResult (top class and calibrated confidence for a classifier), in proto3 JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiml021.session.v1 import features_pb2, session_pb2

from cloud.core import DataPlane, InferenceRequest, check_payload_format, decode_payload
from cloud.grpc._converters import (
    check_request_id,
    payload_format_from_pb,
    priority_from_pb,
    result_to_pb,
)
from common.errors import InvalidArgument
from common.prototime import duration_to_s


async def infer_features(
    dp: DataPlane, msg: features_pb2.InferFeaturesRequest, max_request_id_bytes: int = 256
) -> session_pb2.InferResult:
    """Run ``msg`` through the data plane; returns the InferResult message."""
    check_request_id(msg.request_id, max_request_id_bytes, "requestId")
    if not msg.HasField("compression"):
        raise InvalidArgument("compression: required (the codec, dtype and shape of the features)")
    if not msg.features_b64:
        raise InvalidArgument("features_b64: required (the coded features, base64)")
    fmt = payload_format_from_pb(msg.compression)
    spec = dp.repository.resolve_cut(msg.model_name, msg.model_version, msg.cut_point)
    check_payload_format(spec, fmt)
    payload = msg.features_b64
    entropy = dp.entropy_models(spec)
    max_bytes = dp.decoder.max_bytes
    if fmt.is_raw and len(payload) == fmt.raw_bytes():
        arr = decode_payload(payload, fmt, max_bytes, entropy)  # a view: nothing to decode
    else:  # a codec frame costs CPU in proportion to its declared tensor: off the event loop
        arr = await asyncio.to_thread(decode_payload, payload, fmt, max_bytes, entropy)
    name = spec.inputs[0].name
    if arr.ndim == len(spec.inputs[0].shape) - 1:
        arr = arr[None]
    deadline = None
    if msg.HasField("timeout"):
        seconds = duration_to_s(msg.timeout)
        if seconds <= 0:
            raise InvalidArgument("timeout must be positive")
        deadline = time.monotonic() + seconds
    req = InferenceRequest(
        model_name=spec.name,
        model_version=msg.model_version,
        inputs={name: arr},
        request_id=msg.request_id,
        deadline=deadline,
        priority=priority_from_pb(msg.priority),
        idempotency_key=msg.idempotency_key,
        payload_digest=hashlib.sha256(payload).digest(),
        api="rest",
        codec=fmt.codec_name,
        cut_point=msg.cut_point,
    )
    del payload
    result = await dp.submit(req, spec, rows=arr.shape[0])
    dp.record(req, "OK", result, bytes_in=len(msg.features_b64))
    return result_to_pb(msg.request_id, result, spec).infer_result


__all__ = ["infer_features"]
