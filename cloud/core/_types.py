"""Request and result types of the data plane (defined in :mod:`cloud._types`, shared with the
batcher without an import cycle)."""

from cloud._types import (
    InferenceRequest,
    InferenceResult,
    Priority,
    RequestRecord,
    TelemetryEvent,
)

__all__ = ["InferenceRequest", "InferenceResult", "Priority", "RequestRecord", "TelemetryEvent"]
