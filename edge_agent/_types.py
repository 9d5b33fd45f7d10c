"""Plain types the edge agent hands to applications (no protobuf here)."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np


class Route(enum.Enum):
    """Where an answer came from (mirrors ``aiml021.common.v1.Route``)."""

    EDGE = "edge"
    """An early exit on the device was confident enough (or the final exit answered)."""
    CLOUD = "cloud"
    """The gateway ran the tail."""
    EDGE_FALLBACK = "edge_fallback"
    """The cloud answer could not arrive in time (or failed); the best local answer."""
    CACHE = "cache"
    """The result cache answered."""
    DEFERRED = "deferred"
    """The device is offline: the best local answer, queued for deferred refinement."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """Where time went for one request, in milliseconds (0 when not on the path)."""

    edge_compute_ms: float = 0.0
    encode_ms: float = 0.0
    network_ms: float = 0.0
    cloud_compute_ms: float = 0.0
    queue_ms: float = 0.0
    decode_ms: float = 0.0
    """Gateway time decoding the offloaded features (from the answer's timing)."""
    total_ms: float = 0.0


@dataclasses.dataclass(frozen=True)
class EdgeResult:
    """The answer to one :meth:`EdgeAgent.infer` call."""

    request_id: str
    idempotency_key: str
    top_class: int
    confidence: float
    """Calibrated top-1 probability of the answer."""
    route: Route
    exit_index: int
    """Index of the exit that answered; -1 when the cloud answered."""
    exit_name: str
    label: str | None = None
    timing: Timing = dataclasses.field(default_factory=Timing)
    bytes_sent: int = 0
    cut_point: str = ""
    codec: str = ""
    cache_hit: bool = False
    queued: bool = False
    """True when the request was put in the replay queue for deferred refinement."""
    error: str | None = None
    """Why the cloud answer was not used, when the route is a fallback."""
    exit_confidences: tuple[float, ...] = ()
    bundle_version: str = ""
    """Version of the bundle whose head answered (or coded the features the cloud answered)."""


@dataclasses.dataclass(frozen=True)
class ExitOutput:
    """One evaluated exit: calibrated probabilities and the decision inputs derived from them."""

    name: str
    index: int
    probabilities: np.ndarray
    confidence: float
    entropy: float
    threshold: float | None

    @property
    def top_class(self) -> int:
        """Index of the most probable class."""
        return int(np.argmax(self.probabilities))

    @property
    def confident(self) -> bool:
        """True when the exit is enabled and its confidence clears its threshold."""
        return self.threshold is not None and self.confidence >= self.threshold


@dataclasses.dataclass(frozen=True)
class Reconciliation:
    """What became of a replay-queue entry; handed to the reconciliation callback."""

    entry_id: str
    idempotency_key: str
    status: str
    """``delivered``, ``expired``, ``lost`` (failed authentication/decoding), ``dropped``
    (evicted because the queue was full) or ``failed`` (the gateway refused it)."""
    top_class: int | None = None
    confidence: float | None = None
    duplicate: bool = False
    """True when the gateway had already computed this key and answered from its store."""
    detail: str = ""


__all__ = ["EdgeResult", "ExitOutput", "Reconciliation", "Route", "Timing"]
