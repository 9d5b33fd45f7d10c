"""The gateway core: the types it owns, the data plane, model repository, session reassembly,
the seams its outer layers implement (backend, batcher, stores) — no grpc, starlette or
implementation imports here."""

from cloud.core._accounting import calibrate
from cloud.core._audit import AuditEvent, AuditSink, discard_audit
from cloud.core._backend import Backend
from cloud.core._batching import Batcher, BatcherFactory, BatchObserver, RunFn
from cloud.core._codec import CODEC_RAW, PayloadFormat, PayloadPart, decode_payload
from cloud.core._dataplane import DataPlane, content_hash, monotonic_deadline
from cloud.core._decoding import PayloadDecoder
from cloud.core._hooks import (
    CacheEntry,
    IdempotencyStore,
    MetadataSink,
    RequestRouter,
    ResultCache,
    TelemetrySink,
    discard_record,
    discard_telemetry,
)
from cloud.core._pipeline_model import (
    IMAGE_INPUT,
    PIPELINE_FILE,
    PIPELINE_OUTPUTS,
    bytes_input,
    is_pipeline_model,
    spec_from_pipeline,
)
from cloud.core._principal import INTERNAL, Principal, Role, acting_as, current_principal
from cloud.core._quota import DeviceLedger, DeviceQuota, DeviceQuotas
from cloud.core._registry import CutPointInfo, ExitInfo, ModelInfo, RegistryView, VersionInfo
from cloud.core._repository import (
    ModelRepository,
    scan_models_dir,
    spec_from_onnx,
    specs_from_bundle,
    tail_model_name,
)
from cloud.core._rollout import (
    RollbackPolicy,
    Rollout,
    RolloutManager,
    RolloutMode,
    RolloutState,
    RolloutStats,
    VersionChoice,
    hash_fraction,
    top_classes,
)
from cloud.core._rollout_router import RolloutRouter
from cloud.core._session import (
    ByteBudget,
    Chunk,
    RequestHeader,
    SessionCore,
    SessionLimits,
    SessionSink,
)
from cloud.core._statistics import (
    BatchStatistics,
    Duration,
    InferenceStatistics,
    ModelStatistics,
)
from cloud.core._tenancy import OrgScopedCache, check_payload_digest, idempotency_key
from cloud.core._types import (
    InferenceRequest,
    InferenceResult,
    ModelKey,
    ModelSpec,
    Priority,
    RequestRecord,
    TelemetryEvent,
    TensorSpec,
)
from cloud.core._validate import check_payload_format, largest_request_bytes, validate_inputs

__all__ = [
    "CODEC_RAW",
    "IMAGE_INPUT",
    "INTERNAL",
    "PIPELINE_FILE",
    "PIPELINE_OUTPUTS",
    "AuditEvent",
    "AuditSink",
    "Backend",
    "BatchObserver",
    "BatchStatistics",
    "Batcher",
    "BatcherFactory",
    "ByteBudget",
    "CacheEntry",
    "Chunk",
    "CutPointInfo",
    "DataPlane",
    "DeviceLedger",
    "DeviceQuota",
    "DeviceQuotas",
    "Duration",
    "ExitInfo",
    "IdempotencyStore",
    "InferenceRequest",
    "InferenceResult",
    "InferenceStatistics",
    "MetadataSink",
    "ModelInfo",
    "ModelKey",
    "ModelRepository",
    "ModelSpec",
    "ModelStatistics",
    "OrgScopedCache",
    "PayloadDecoder",
    "PayloadFormat",
    "PayloadPart",
    "Principal",
    "Priority",
    "RegistryView",
    "RequestHeader",
    "RequestRecord",
    "RequestRouter",
    "ResultCache",
    "Role",
    "RollbackPolicy",
    "Rollout",
    "RolloutManager",
    "RolloutMode",
    "RolloutRouter",
    "RolloutState",
    "RolloutStats",
    "RunFn",
    "SessionCore",
    "SessionLimits",
    "SessionSink",
    "TelemetryEvent",
    "TelemetrySink",
    "TensorSpec",
    "VersionChoice",
    "VersionInfo",
    "acting_as",
    "bytes_input",
    "calibrate",
    "check_payload_digest",
    "check_payload_format",
    "content_hash",
    "current_principal",
    "decode_payload",
    "discard_audit",
    "discard_record",
    "discard_telemetry",
    "hash_fraction",
    "idempotency_key",
    "is_pipeline_model",
    "largest_request_bytes",
    "monotonic_deadline",
    "scan_models_dir",
    "spec_from_onnx",
    "spec_from_pipeline",
    "specs_from_bundle",
    "tail_model_name",
    "top_classes",
    "validate_inputs",
]
