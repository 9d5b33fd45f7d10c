"""The gateway core: data plane, model repository, session reassembly and hooks (no grpc here)."""

from cloud.core._codec import CODEC_RAW, PayloadFormat, decode_payload
from cloud.core._dataplane import DataPlane, content_hash, monotonic_deadline, validate_inputs
from cloud.core._hooks import (
    IdempotencyRecord,
    IdempotencyStore,
    MemoryIdempotencyStore,
    MemoryResultCache,
    MetadataSink,
    RequestRouter,
    ResultCache,
    TelemetrySink,
    discard_record,
    discard_telemetry,
)
from cloud.core._repository import (
    ModelRepository,
    scan_models_dir,
    spec_from_onnx,
    specs_from_bundle,
    tail_model_name,
)
from cloud.core._session import (
    ByteBudget,
    Chunk,
    RequestHeader,
    SessionCore,
    SessionLimits,
    SessionSink,
)
from cloud.core._types import (
    InferenceRequest,
    InferenceResult,
    Priority,
    RequestRecord,
    TelemetryEvent,
)

__all__ = [
    "CODEC_RAW",
    "ByteBudget",
    "Chunk",
    "DataPlane",
    "IdempotencyRecord",
    "IdempotencyStore",
    "InferenceRequest",
    "InferenceResult",
    "MemoryIdempotencyStore",
    "MemoryResultCache",
    "MetadataSink",
    "ModelRepository",
    "PayloadFormat",
    "Priority",
    "RequestHeader",
    "RequestRecord",
    "RequestRouter",
    "ResultCache",
    "SessionCore",
    "SessionLimits",
    "SessionSink",
    "TelemetryEvent",
    "TelemetrySink",
    "content_hash",
    "decode_payload",
    "discard_record",
    "discard_telemetry",
    "monotonic_deadline",
    "scan_models_dir",
    "spec_from_onnx",
    "specs_from_bundle",
    "tail_model_name",
    "validate_inputs",
]
