"""Types the data plane owns: served model versions (:class:`ModelKey`, :class:`TensorSpec`,
:class:`ModelSpec`) and the transport-neutral request, result, record and telemetry types.

Every other layer (backends, batching, stores, grpc, rest) imports these from here.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One served model version. ``name`` is the served name (a bundle's full model, or
    ``<bundle>.<cut point>`` for the tail run from that cut point)."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, numpy dtype name (``"float32"``...) and shape of one tensor; ``-1`` is variable
    (the first dimension is always the batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the shape without the batch dimension)."""
        return self.shape[1:]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a backend needs to load one model version."""

    name: str
    version: str
    onnx_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 64
    bundle: str = ""
    """Bundle the model comes from (empty for a bare ONNX file)."""
    cut_point: str = ""
    """Cut point whose tail this model is (empty for a full model)."""
    segment: str = ""
    """Segment name inside the bundle (``full``, ``tail_cut1``...)."""
    labels: tuple[str, ...] = field(default=())
    """Class names, for classifiers (index = class id)."""
    temperature: float = 1.0
    """Temperature of the final exit: confidence = max softmax(logits / temperature)."""
    entropy_model: Path | None = None
    """Entropy-model file of the cut point's codec (``cut_points[].codec.entropy_model``), passed
    to ``common.codecs.decode`` for ANS/range frames coded with it."""
    model_config: bytes = b""
    """Triton ``ModelConfig`` (serialized) of a model read from a Triton model repository, as
    completed at load; ``ModelConfig`` reports it as is (empty: built from this spec)."""
    max_queue_delay_s: float | None = None
    """The model's own batching delay (a Triton config's ``dynamic_batching``); None: the
    gateway's ``batching.max_queue_delay_ms``."""
    pipeline: Path | None = None
    """Pipeline description (``pipeline.json``, ``common.pipeline``) this model runs: its ONNX
    stages and the Python steps between them (``cloud.backends.PipelineBackend``); None: the
    ONNX file ``onnx_path``."""
    width_bucket: int = 0
    """Requests whose last input dimension differs batch together when it falls in the same
    bucket of this many (``ceil(width / width_bucket)``), right-padded with zeros to the batch's
    widest; 0: only equal shapes batch (a Triton config's ``parameters`` key
    ``aiml021.width_bucket``)."""

    @property
    def key(self) -> ModelKey:
        """The key this spec is served under."""
        return ModelKey(self.name, self.version)


class Priority(enum.IntEnum):
    """Scheduling priority; higher is served first among equal deadlines."""

    LOW = 1
    NORMAL = 2
    HIGH = 3


@dataclass(slots=True)
class InferenceRequest:
    """One inference request as the data plane sees it, whatever transport brought it.

    ``inputs`` are full tensors with the batch dimension first; ``deadline`` is a
    ``time.monotonic()`` instant or None.
    """

    model_name: str
    model_version: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    request_id: str = ""
    deadline: float | None = None
    priority: Priority = Priority.NORMAL
    idempotency_key: str = ""
    payload_digest: bytes = b""
    device_id: str = ""
    api: str = "infer"
    """The API that brought it: ``infer`` (ModelInfer), ``stream`` (ModelStreamInfer),
    ``session`` (the device session stream) or ``rest``. (A *route* is where a request was
    answered: edge, cloud, cache...)"""
    kserve: bool = False
    """Arrived through the KServe-v2/Triton protocol (ModelInfer, ModelStreamInfer, ``/v2`` REST):
    the result cache answers it only when the data plane's ``cache_kserve`` is on."""
    codec: str = "raw"
    cut_point: str = ""
    session_id: str = ""
    """Session stream the request arrived on (empty for KServe and REST)."""
    offload_reason: str = ""
    """Why the device offloaded: ``deferred`` (replayed from its offline queue), ``offload``."""
    received_at: float = field(default_factory=time.monotonic)
    """Monotonic instant the gateway had the whole request (deadline and latency base)."""
    region: str = ""
    """Region the device declares (``RequestContext.region``; empty: none or not a device)."""
    device_class: str = ""
    """Device class the device declares in its request context."""
    traceparent: str = ""
    """W3C trace context of the caller's span (InferHeader.traceparent, gRPC metadata)."""


@dataclass(slots=True)
class InferenceResult:
    """Outputs of one request (batch dimension first) with where its time went."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    cached: bool = False
    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 1
    compute_input_s: float = 0.0
    """Time stacking the batch's inputs (Triton's compute_input)."""
    compute_output_s: float = 0.0
    """Time slicing this request's rows out of the batch's outputs (Triton's compute_output)."""
    decode_s: float = 0.0
    """Time the gateway spent decoding the request's coded payload (sessions)."""
    top_class: int | None = None
    """Top class of a single-sample classifier answer (set once by ``calibrate``)."""
    confidence: float | None = None
    """Its temperature-scaled softmax probability (``common.confidence``)."""


@dataclass(slots=True)
class RequestRecord:
    """What the metadata sink receives after each request (success or failure); the one record of
    a request, written as is by ``cloud.stores`` to ``requests``/``results``/``costs``."""

    request_id: str
    device_id: str
    model_name: str
    model_version: str
    route: str
    """Where it was answered (``aiml021.common.v1.Route`` names): ``cloud`` or ``cache`` for the
    gateway's own records; the device's route (``edge``, ``edge_fallback``...) for a report."""
    status: str
    api: str = ""
    """The API that brought it (``InferenceRequest.api``); empty for a device's report."""
    codec: str = ""
    cut_point: str = ""
    idempotency_key: str = ""
    bytes_in: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    cached: bool = False
    session_id: str = ""
    deadline_ms: float | None = None
    """The request's deadline as milliseconds after its arrival (None: no deadline)."""
    offload_reason: str = ""
    top_class: int | None = None
    """Argmax of the first output for single-sample answers."""
    confidence: float | None = None
    """Temperature-scaled softmax probability of ``top_class`` (classifiers)."""
    bytes_out: int = 0
    """Bytes of the output tensors returned."""
    latency_ms: float | None = None
    """Gateway time from arrival of the whole request to its answer."""
    recorded_at: float = field(default_factory=time.time)
    """Seconds since the epoch when the record was made (the request had just finished)."""
    region: str = ""
    """Region the device declared (empty: none)."""


@dataclass(slots=True)
class TelemetryEvent:
    """One finished request as a device saw it (from a session stream or TelemetryService)."""

    device_id: str
    request_id: str = ""
    model_name: str = ""
    route: str = ""
    """``edge``, ``cloud``, ``edge_fallback``, ``cache``, ``deferred`` or ``unspecified``."""
    exit_index: int = -1
    total_s: float | None = None
    """End-to-end latency on the device (None when the device did not report it)."""
    bytes_sent: int = 0
    bytes_received: int = 0
    cache_hit: bool = False
    cut_point: str = ""
    codec: str = ""
    confidence: float = 0.0
    session_id: str = ""
    region: str = ""
    """Region the device reports with its batch (TelemetryBatch.region)."""
    device_class: str = ""
    """Device class the device reports with its batch."""


__all__ = [
    "InferenceRequest",
    "InferenceResult",
    "ModelKey",
    "ModelSpec",
    "Priority",
    "RequestRecord",
    "TelemetryEvent",
    "TensorSpec",
]
