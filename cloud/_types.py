"""Transport-neutral request and result types of the data plane."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


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
    route: str = "infer"
    """Which front door: ``infer`` (ModelInfer), ``stream`` (ModelStreamInfer), ``session``."""
    codec: str = "raw"
    cut_point: str = ""


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


@dataclass(slots=True)
class RequestRecord:
    """What the metadata sink receives after each request (success or failure)."""

    request_id: str
    device_id: str
    model_name: str
    model_version: str
    route: str
    status: str
    codec: str = ""
    cut_point: str = ""
    idempotency_key: str = ""
    bytes_in: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    cached: bool = False
    extra: dict[str, str] = field(default_factory=dict)


__all__ = ["InferenceRequest", "InferenceResult", "Priority", "RequestRecord"]
