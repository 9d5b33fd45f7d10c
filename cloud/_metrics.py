"""Prometheus metrics of the gateway, on their own registry (served on the metrics port).

Label values are bounded, so no client can grow ``/metrics`` (or the gateway's memory) by sending
names: ``model`` takes only names the gateway serves or served (:meth:`GatewayMetrics.add_model`;
any other name is counted as ``_unknown``), labels that devices fill in (``device_class``,
``codec``) keep their first :data:`MAX_FREE_VALUES` values of at most :data:`MAX_LABEL_CHARS`
characters and count the rest as ``_other``; ``region`` takes only the configured regions
(:meth:`GatewayMetrics.set_regions`; any other value is ``_other``, none is the gateway's own
region or ``unspecified``); ``org`` comes from the gateway's accounting configuration; every other
label comes from the gateway's own enumerations (status codes, routes, kinds).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_REQUEST_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

UNKNOWN_MODEL = "_unknown"
"""The ``model`` label of requests naming a model the gateway does not serve."""
OTHER = "_other"
"""The value of a device-filled label past its bound."""
MAX_FREE_VALUES = 64
"""Distinct values kept per device-filled label (``device_class``, ``codec``)."""
MAX_LABEL_CHARS = 64
"""Longest device-filled label value kept."""
_FREE_LABELS = frozenset({"device_class", "codec", "policy"})
UNSPECIFIED_REGION = "unspecified"
"""The ``region`` label of requests and devices that name none (and no gateway region is set)."""


class GatewayMetrics:
    """All gateway metrics; one instance per gateway (tests create their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aiml021_gateway_requests",
            "Finished requests by model, API (infer, stream, session, rest) and status code.",
            ["model", "api", "status"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "aiml021_gateway_queue_seconds",
            "Time requests waited in the batcher queue.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "aiml021_gateway_compute_seconds",
            "Backend compute time per batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "aiml021_gateway_batch_size",
            "Samples per executed batch.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.bytes_received = Counter(
            "aiml021_gateway_bytes_received",
            "Payload bytes received, by codec.",
            ["codec"],
            registry=r,
        )
        self.open_streams = Gauge(
            "aiml021_gateway_open_streams",
            "Open streams by kind (session, infer_stream).",
            ["kind"],
            registry=r,
        )
        self.rejections = Counter(
            "aiml021_gateway_rejections",
            "Requests refused before compute, by reason (status code).",
            ["reason"],
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "aiml021_gateway_buffered_bytes",
            "Bytes of unfinished session payloads buffered (global budget in use).",
            registry=r,
        )
        self.queued_requests = Gauge(
            "aiml021_gateway_queued_requests",
            "Requests waiting in this process's batcher queues, over all models (autoscaling).",
            registry=r,
        )
        self.cache_requests = Counter(
            "aiml021_gateway_result_cache",
            "Result cache lookups of the data plane by model and result (hit, miss).",
            ["model", "result"],
            registry=r,
        )
        self.idempotency = Counter(
            "aiml021_gateway_idempotency",
            "Requests with an idempotency key by outcome: computed (claimed and computed here), "
            "cached (claimed, answered by the result cache), stored (answered from the store).",
            ["outcome"],
            registry=r,
        )
        self.telemetry_events = Counter(
            "aiml021_gateway_telemetry_events",
            "Device telemetry events received, by the route the device reports.",
            ["route"],
            registry=r,
        )
        self.device_latency = Histogram(
            "aiml021_gateway_device_latency_seconds",
            "End-to-end request latency as devices report it, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.telemetry_bytes = Counter(
            "aiml021_gateway_telemetry_bytes",
            "Bytes devices report having sent and received for their requests.",
            ["direction"],
            registry=r,
        )
        self.telemetry_dropped = Counter(
            "aiml021_gateway_telemetry_dropped",
            "Telemetry events devices report having dropped (their buffer was full).",
            registry=r,
        )
        self.offload_confidence = Histogram(
            "aiml021_gateway_offload_exit_confidence",
            "Calibrated confidence of the device's last exit when it offloaded (its request "
            "context): how sure devices were when they asked the cloud, by model and device class.",
            ["model", "device_class"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.answer_confidence = Histogram(
            "aiml021_gateway_device_answer_confidence",
            "Calibrated confidence of the answers devices report (telemetry), by route: its mean "
            "is the expected accuracy of what devices answered (no ground truth is recorded).",
            ["route"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "aiml021_gateway_request_duration_seconds",
            "Gateway time of each finished request, from having the whole request to its answer "
            "(decode, queue, compute), by model, API, the device's region and device class.",
            ["model", "api", "region", "device_class"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.device_replay_backlog = Gauge(
            "aiml021_gateway_device_replay_backlog_requests",
            "Offloads waiting in devices' offline replay queues, summed over the devices that "
            "reported in the last 15 minutes (their latest telemetry batch).",
            ["region", "device_class"],
            registry=r,
        )
        self.reporting_devices = Gauge(
            "aiml021_gateway_reporting_devices",
            "Devices whose telemetry arrived in the last 15 minutes.",
            ["region", "device_class"],
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "aiml021_gateway_certificate_expiry_timestamp_seconds",
            "When the gateway's TLS certificate expires (notAfter, seconds since the epoch); "
            "re-read when the file changes.",
            ["cert"],
            registry=r,
        )
        self.batch_worker_restarts = Counter(
            "aiml021_gateway_batch_worker_restarts",
            "Batch workers restarted after a crash, by model.",
            ["model"],
            registry=r,
        )
        self.drift_psi = Gauge(
            "aiml021_gateway_drift_psi",
            "Population stability index of a signal's recent window against its reference "
            "window, by model, region and signal (exit_confidence, feature_rms).",
            ["model", "region", "signal"],
            registry=r,
        )
        self.drift_kl = Gauge(
            "aiml021_gateway_drift_kl_divergence",
            "KL divergence (nats) of a signal's recent window from its reference window.",
            ["model", "region", "signal"],
            registry=r,
        )
        self.drift_window = Gauge(
            "aiml021_gateway_drift_window_samples",
            "Samples in a drift signal's window (phase reference: still filling the reference; "
            "phase current: the window compared against it).",
            ["model", "region", "signal", "phase"],
            registry=r,
        )
        self.compute_billed = Counter(
            "aiml021_gateway_billed_compute_seconds",
            "Backend compute billed to requests (each request's share of its batch), by "
            "organisation, model and processor (cpu, gpu).",
            ["org", "model", "processor"],
            registry=r,
        )
        self.egress_bytes = Counter(
            "aiml021_gateway_egress_bytes",
            "Output bytes sent back to devices, by organisation and model.",
            ["org", "model"],
            registry=r,
        )
        self.cost = Counter(
            "aiml021_gateway_cost",
            "Cost of requests in the price table's currency (compute and egress), by "
            "organisation, model and region.",
            ["org", "model", "region"],
            registry=r,
        )
        self.budget = Gauge(
            "aiml021_gateway_budget",
            "An organisation's budget for the current budget period (price-table currency).",
            ["org"],
            registry=r,
        )
        self.budget_spent = Gauge(
            "aiml021_gateway_budget_spent",
            "What an organisation has spent in the current budget period on this gateway.",
            ["org"],
            registry=r,
        )
        self.policy_outcomes = Counter(
            "aiml021_policy_outcomes",
            "Outcomes reported to PolicyService, by the policy that decided (an A/B "
            "experiment's arms are policies of their own), its action and whether the answer "
            "was correct.",
            ["policy", "action", "result"],
            registry=r,
        )
        self.policy_outcome_latency = Histogram(
            "aiml021_policy_outcome_latency_seconds",
            "End-to-end latency of the requests PolicyService decided, as reported, by policy.",
            ["policy"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.policy_deadline_missed = Counter(
            "aiml021_policy_deadline_missed",
            "Reported outcomes slower than their decision's deadline, by policy.",
            ["policy"],
            registry=r,
        )
        self.policy_cloud_cost = Counter(
            "aiml021_policy_cloud_cost",
            "Cloud cost the callers reported for the requests PolicyService decided, by policy.",
            ["policy"],
            registry=r,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._regions: frozenset[str] = frozenset()
        self._home_region = UNSPECIFIED_REGION
        self._models: set[str] = set()
        self._free: dict[str, set[str]] = {name: set() for name in _FREE_LABELS}

    def add_model(self, name: str) -> None:
        """Let ``name`` be a ``model`` label value (called when a model is loaded)."""
        self._models.add(name)

    def set_regions(self, regions: frozenset[str] | set[str], home: str = "") -> None:
        """Let ``regions`` (and ``home``, the gateway's own region, which also stands for
        requests that name none) be ``region`` label values; any other value is ``_other``."""
        self._home_region = home or UNSPECIFIED_REGION
        self._regions = frozenset(regions) | {self._home_region}
        self._children.clear()

    def region(self, value: str) -> str:
        """The ``region`` label of a device-declared region."""
        if not value:
            return self._home_region
        return value if value in self._regions else OTHER

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)`` with the values bounded (see the module docstring), cached:
        the hot path avoids prometheus' label lookup. Only known values are cached."""
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            bounded = self._bounded(metric._labelnames, labels)
            c = metric.labels(*bounded)
            if bounded == labels:
                self._children[key] = c
        return c

    def bounded_label(self, name: str, value: str) -> str:
        """``value`` as label ``name`` takes it (see the module docstring)."""
        return self._bounded((name,), (value,))[0]

    def _bounded(self, names: tuple[str, ...], labels: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for name, value in zip(names, labels, strict=True):
            if name == "model":
                value = value if value in self._models else UNKNOWN_MODEL
            elif name == "region":
                value = self.region(value)
            elif name in _FREE_LABELS:
                seen = self._free[name]
                if value not in seen:
                    if len(value) > MAX_LABEL_CHARS or len(seen) >= MAX_FREE_VALUES:
                        value = OTHER
                    else:
                        seen.add(value)
            out.append(value)
        return tuple(out)


__all__ = [
    "MAX_FREE_VALUES",
    "MAX_LABEL_CHARS",
    "OTHER",
    "UNKNOWN_MODEL",
    "UNSPECIFIED_REGION",
    "GatewayMetrics",
]
