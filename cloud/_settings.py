"""Gateway settings: one tree, env prefix ``AIML021_GATEWAY_``, sections joined with ``__``.

``aiml021 serve`` reads it from flags > env > ``--config FILE`` (TOML or JSON) > defaults
(:meth:`GatewaySettings.load`); e.g. ``AIML021_GATEWAY_STORES__REDIS_URL`` is
``stores.redis_url``, ``[stores] redis_url = ...`` in a TOML file. docs/gateway.md lists every key.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from cloud._observability import AccountingSettings, ObservabilitySettings
from cloud._privacy import GatewayPrivacySettings
from cloud.artifacts import ArtifactSettings
from cloud.authz._settings import AuthzSettings
from cloud.stores._settings import CacheSettings, IdempotencySettings, StoreSettings
from common.settings import TREE_CONFIG, LayeredSettings, Section
from policy._settings import PolicySettings


class ServerSettings(Section):
    """The gRPC front door."""

    host: str = "127.0.0.1"
    """Address the gRPC (and metrics, REST) servers bind."""
    allow_insecure_non_loopback: bool = False
    """Let ``tls.insecure`` bind an address other than loopback (plaintext, no client
    certificates: anyone who reaches the port is every device). Off: start-up fails instead."""
    port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port (0 picks a free port; see ``port_file``)."""
    port_file: Path | None = None
    """When set, the bound gRPC, metrics and REST ports are written here as JSON once serving."""
    workers: int = Field(default=1, ge=1)
    """Gateway processes on this host (``serve --workers``): a supervisor starts this many,
    each binding the same gRPC and REST ports (SO_REUSEPORT, the kernel spreads connections),
    and restarts one that dies. More than one needs shared stores (``stores.backend = redis``)."""
    reuse_port: bool = False
    """Bind the gRPC and REST ports with SO_REUSEPORT so that other processes of the same user
    can bind them too (set by ``serve --workers`` for its workers)."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    fit_message_limit_to_models: bool = True
    """Receive at most what the served models and session chunks can use (a full batch of the
    largest input as sent at most, or ``session.max_chunk_bytes``, plus 64 KiB), if less than
    ``max_message_bytes``:
    gRPC refuses a larger message (RESOURCE_EXHAUSTED) before the gateway reads or holds it.
    Models with a dynamic non-batch dimension leave ``max_message_bytes`` in force."""
    max_metadata_bytes: int = Field(default=16 * 1024, ge=1024)
    """Largest request metadata (headers) a call may carry; larger calls are refused by gRPC."""
    max_request_id_bytes: int = Field(default=256, ge=1)
    """Longest request id (ModelInferRequest.id, InferHeader.request_id, TensorChunk and Cancel
    request ids) accepted; longer ones are INVALID_ARGUMENT and never echoed."""
    heap_trim_interval_s: float | None = Field(default=1.0, gt=0)
    """How often freed heap memory is handed back to the OS (glibc ``malloc_trim``), so RSS
    returns to its baseline after large or rejected requests; null disables."""
    keepalive_time_s: float = Field(default=30.0, gt=0)
    """Interval of server keepalive pings on idle connections."""
    keepalive_timeout_s: float = Field(default=10.0, gt=0)
    """Time to wait for a keepalive ack before closing the connection."""
    handshake_timeout_s: float = Field(default=5.0, gt=0)
    """A connection that has not finished its TLS and HTTP/2 handshake in this time is closed
    (silent TCP connections)."""
    max_connection_idle_s: float = Field(default=300.0, gt=0)
    """A connection with no RPC open for this long is closed (GOAWAY)."""
    max_connection_age_s: float = Field(default=3600.0, gt=0)
    """A connection older than this is asked to go away (clients reconnect; spreads load over
    replicas and bounds what one connection can accumulate)."""
    max_connection_age_grace_s: float = Field(default=30.0, ge=0)
    """After ``max_connection_age_s``, how long open RPCs may finish before the connection is
    closed."""
    min_client_ping_interval_s: float = Field(default=5.0, gt=0)
    """Client keepalive pings closer together than this are strikes."""
    max_ping_strikes: int = Field(default=2, ge=0)
    """Strikes (pings too often) after which the connection is closed with GOAWAY
    ENHANCE_YOUR_CALM (0: unlimited)."""


class TlsSettings(Section):
    """Transport security of the gRPC server (mTLS unless ``insecure``)."""

    insecure: bool = False
    """Serve plaintext without client certificates (development only; logs a warning)."""
    dir: Path = Path("certs")
    """Directory with ca.pem (the CA bundle devices are checked against), server.pem and
    server.key (0600), written by ``aiml021 certs``; never the CA's private key. Re-read when
    its files change: a rotated certificate or CA bundle serves new connections without a
    restart."""
    reload_interval_s: float = Field(default=1.0, gt=0)
    """Least time between two looks at ``dir`` for rotated material (looked at on handshakes)."""
    revocation_url: str = ""
    """Where the revocation deny-list lives (``aiml021 ca revoke`` writes it): ``sqlite:///PATH``,
    ``postgresql://...`` or ``redis://...``; empty: the store the gateways share (``stores.redis_url``
    with the redis backend, else ``stores.metadata_url``); ``none``: no revocation."""
    revocation_refresh_s: float = Field(default=2.0, gt=0)
    """How often the deny-list is re-read; a revoked device's open streams end within this."""


class MetricsSettings(Section):
    """The Prometheus endpoint."""

    port: int | None = Field(default=8002, ge=0, le=65535)
    """Prometheus metrics port (0 picks a free port, null disables the endpoint)."""
    host: str = "127.0.0.1"
    """Address the metrics endpoint binds: loopback by default (it has no authentication; a
    scraper elsewhere reaches it through the pod network namespace or a sidecar)."""


class RestSettings(Section):
    """The REST front door (KServe v2 over HTTP)."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """REST port (0 picks a free port); null (the default) serves no REST. Same host and
    transport security as gRPC: mTLS with TLS 1.3 only, plaintext with ``tls.insecure``."""


class SessionSettings(Section):
    """Limits of one device session stream (sent to the device in Welcome)."""

    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    """Largest payload one session request may declare."""
    max_chunk_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest TensorChunk payload."""
    max_inflight: int = Field(default=256, ge=1)
    """Requests one session may have open (reassembling, queued or computing)."""
    buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    """Bytes of unfinished payloads buffered per session (also the initial byte credit)."""
    global_buffer_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Bytes of unfinished payloads buffered over all sessions."""
    reassembly_timeout_s: float = Field(default=10.0, gt=0)
    """A request whose chunks do not all arrive in this time is dropped and answered."""
    decode_threads: int = Field(default=2, ge=1)
    """Threads decoding coded payloads (codec frames) off the event loop."""
    max_waiting_decodes: int = Field(default=64, ge=1)
    """Coded payloads that may wait for a decode thread; more are RESOURCE_EXHAUSTED."""
    ping_interval_s: float = Field(default=20.0, gt=0)
    """Ping interval suggested to devices in Welcome."""
    hello_timeout_s: float = Field(default=10.0, gt=0)
    """A stream that has not sent Hello in this time is ended with DEADLINE_EXCEEDED."""
    idle_timeout_s: float = Field(default=120.0, gt=0)
    """A session that sends no frame (not even a Ping) for this long while nothing of it is in
    flight is ended with DEADLINE_EXCEEDED."""
    max_outbound_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Bytes of answers queued for a device that does not read them; past this the gateway stops
    reading its frames."""
    outbound_stall_s: float = Field(default=2.0, gt=0)
    """How long a full outbound queue may stay full before the stream is ended with
    RESOURCE_EXHAUSTED."""
    max_result_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest answer frame sent on a session (gRPC clients refuse messages over 4 MiB by default
    and end the whole stream); a larger answer fails only its request, RESOURCE_EXHAUSTED."""

    @model_validator(mode="after")
    def _check(self) -> SessionSettings:
        if self.buffer_bytes > self.global_buffer_bytes:
            raise ValueError("session.buffer_bytes must not exceed session.global_buffer_bytes")
        return self


class LimitsSettings(Section):
    """Per-device quotas: every session and every inference call (ModelInfer, each
    ModelStreamInfer request, REST infer and features) of one device (its certificate's id) draw
    on them."""

    max_sessions_per_device: int = Field(default=8, ge=1)
    """Session streams one device may have open at once."""
    max_inflight_per_device: int = Field(default=512, ge=1)
    """Requests one device may have open over all its sessions and inference calls."""
    max_buffered_bytes_per_device: int = Field(default=64 * 1024 * 1024, ge=1)
    """Bytes of unfinished payloads one device may have buffered over all its sessions and
    inference calls (a call holds its tensors, or its REST body, until it is answered)."""
    requests_per_s: float = Field(default=500.0, ge=0)
    """Requests (InferHeaders and inference calls) per second one device may send, sustained
    (0: no limit)."""
    burst: int = Field(default=500, ge=1)
    """Requests a device may send at once above ``requests_per_s`` (token bucket size)."""
    fair_share: bool = True
    """Also cap each device at its fair share of ``session.global_buffer_bytes``: the budget
    divided by the devices connected."""
    shared: bool = False
    """Count ``requests_per_s``/``burst`` and ``max_sessions_per_device`` over all gateway
    processes (workers and replicas) in Redis, instead of in each process; needs
    ``stores.backend = "redis"`` (its ``stores.redis_url``). In flight and buffered bytes stay
    per process. While Redis is unreachable each process applies the limits alone."""


class BatchingSettings(Section):
    """Dynamic batching per model version."""

    max_batch_size: int = Field(default=64, ge=1)
    """Most samples in one batch (capped by each model's own limit)."""
    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    """How long the batcher waits for a batch to fill; 0 batches whatever is queued."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Queued requests per model version before new ones get RESOURCE_EXHAUSTED."""
    workers: int = Field(default=1, ge=1)
    """Batches computing at the same time (also onnxruntime's thread pool size). While devices
    share a model, one device's batches occupy at most all workers but one, so with 2 or more a
    light device's request does not wait for a flooder's batch (nor for a model loading); 2 is
    recommended for internet-facing gateways (not yet the default: see docs/gateway.md)."""
    contended_batch_ms: float | None = Field(default=5.0, gt=0)
    """While more than one device uses a model (within the last second), its batches are cut
    once their estimated compute reaches this (at least one request), so a light device waits
    for a short batch, not a flooder's full one; null: always fill up to ``max_batch_size``
    (raise it for engines that gain from large batches, e.g. GPUs)."""


class OnnxRuntimeSettings(Section):
    """The in-process onnxruntime engine (``backend = "onnxruntime"``)."""

    intra_op_threads: int = Field(default=1, ge=1)
    """onnxruntime intra-op threads per session."""
    inter_op_threads: int = Field(default=1, ge=1)
    """onnxruntime inter-op threads per session."""


class PipelineSettings(Section):
    """Pipelines served as models (a models-directory entry with ``pipeline.json``)."""

    max_image_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest encoded image a pipeline request may carry; larger ones are RESOURCE_EXHAUSTED
    before anything is decoded."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    """Most pixels (width x height, as the image's header declares them) a pipeline decodes;
    more is RESOURCE_EXHAUSTED, read from the header without decoding (JPEG bombs)."""


class TritonSettings(Section):
    """How the gateway reaches Triton (``backend = "triton"``)."""

    url: str = "127.0.0.1:8001"
    """host:port of Triton's gRPC endpoint."""
    infer_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of one inference call; a dead server is UNAVAILABLE well before it."""
    control_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of readiness and metadata calls."""
    version_suffix: bool = True
    """Address version ``v`` of ``name`` as Triton model ``<name>__<v>`` (how the dev launcher
    serves them); false: as Triton version ``v`` of ``name`` (numeric versions only)."""
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest gRPC message sent to or received from Triton."""


class GatewaySettings(LayeredSettings):
    """Everything the gateway reads at start-up; validated, errors name the setting."""

    model_config = SettingsConfigDict(env_prefix="AIML021_GATEWAY_", **TREE_CONFIG)

    retired_env: ClassVar[dict[str, str]] = {
        "AIML021_STORES_": "AIML021_GATEWAY_STORES__*, _IDEMPOTENCY__*, _CACHE__* (docs/gateway.md)",
        "AIML021_TRITON_": "AIML021_GATEWAY_TRITON__* (docs/gateway.md)",
        "AIML021_POLICY_": "AIML021_GATEWAY_POLICY__* (docs/gateway.md)",
    }
    foreign_env: ClassVar[frozenset[str]] = frozenset({"AIML021_TRITON_VENV"})
    renamed: ClassVar[dict[str, str]] = {
        "host": "server.host",
        "port": "server.port",
        "port_file": "server.port_file",
        "max_message_bytes": "server.max_message_bytes",
        "keepalive_time_s": "server.keepalive_time_s",
        "keepalive_timeout_s": "server.keepalive_timeout_s",
        "metrics_port": "metrics.port",
        "insecure": "tls.insecure",
        "tls_dir": "tls.dir",
        "max_batch_size": "batching.max_batch_size",
        "max_queue_delay_ms": "batching.max_queue_delay_ms",
        "max_queue_size": "batching.max_queue_size",
        "backend_workers": "batching.workers",
        "intra_op_threads": "onnxruntime.intra_op_threads",
        "inter_op_threads": "onnxruntime.inter_op_threads",
        "max_request_bytes": "session.max_request_bytes",
        "max_chunk_bytes": "session.max_chunk_bytes",
        "max_inflight_per_session": "session.max_inflight",
        "session_buffer_bytes": "session.buffer_bytes",
        "global_buffer_bytes": "session.global_buffer_bytes",
        "reassembly_timeout_s": "session.reassembly_timeout_s",
        "ping_interval_s": "session.ping_interval_s",
        "idempotency_entries": "idempotency.entries",
        "idempotency_ttl_s": "idempotency.ttl_s",
        "triton_url": "triton.url",
        "cache_full_models": "cache.full_models",
        "cache_tail_segments": "cache.tail_segments",
        "result_cache_entries": "cache.entries",
        "policy_bundle": "policy.bundle",
    }

    models_dir: Path = Path("models")
    """Directory of model bundles (each subdirectory with a manifest.json) and bare *.onnx files."""
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    """Inference engine: in-process onnxruntime (section ``onnxruntime``), or a Triton server
    (section ``triton``)."""
    control_services: bool = True
    """Also serve ModelRegistryService, DeployService, CacheService, TelemetryService and
    PolicyService on the gRPC port."""
    drain_grace_s: float = Field(default=10.0, ge=0)
    """On shutdown, how long in-flight work may take to finish after Drain."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """The gRPC server: bind address, port, message and keepalive limits."""
    tls: TlsSettings = Field(default_factory=TlsSettings)
    """mTLS material, or plaintext for development."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """The Prometheus endpoint."""
    rest: RestSettings = Field(default_factory=RestSettings)
    """The REST endpoint (off unless a port is set)."""
    authz: AuthzSettings = Field(default_factory=AuthzSettings)
    """Who may call what: tokens (JWKS), orgs, the audit trail (docs/authz.md)."""
    session: SessionSettings = Field(default_factory=SessionSettings)
    """Per-session limits of the device stream."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Per-device quotas over all of a device's sessions."""
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    """Dynamic batching."""
    onnxruntime: OnnxRuntimeSettings = Field(default_factory=OnnxRuntimeSettings)
    """The onnxruntime engine."""
    triton: TritonSettings = Field(default_factory=TritonSettings)
    """The Triton engine."""
    pipelines: PipelineSettings = Field(default_factory=PipelineSettings)
    """Pipelines with Python steps served as models (docs/bundles.md, *Serving pipelines*)."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """The result cache."""
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    """Idempotency keys."""
    stores: StoreSettings = Field(default_factory=StoreSettings)
    """Where idempotency keys, cached results and request metadata live."""
    policy: PolicySettings = Field(default_factory=PolicySettings)
    """The policy PolicyService serves."""
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    """Signed model bundles loaded from S3-compatible storage into ``models_dir`` at start."""
    privacy: GatewayPrivacySettings = Field(default_factory=GatewayPrivacySettings)
    """Pseudonyms, DLP and encryption at rest for what the gateway keeps (docs/privacy.md)."""
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    """Region labels, drift detection and tracing (docs/observability.md)."""
    accounting: AccountingSettings = Field(default_factory=AccountingSettings)
    """Cost accounting: prices, organisations and their budgets."""

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.session.max_chunk_bytes > self.server.max_message_bytes:
            raise ValueError("session.max_chunk_bytes must not exceed server.max_message_bytes")
        if self.server.workers > 1 and self.stores.backend != "redis":
            raise ValueError(
                f"server.workers = {self.server.workers} needs shared stores: set stores.backend "
                "to redis (each worker's memory store would let a retry that lands on another "
                "worker compute again)"
            )
        if self.limits.shared and self.stores.backend != "redis":
            raise ValueError(
                "limits.shared = true counts quotas over all gateway processes in Redis: set "
                'stores.backend = "redis" (and stores.redis_url), or limits.shared = false'
            )
        host = self.server.host
        if (
            self.tls.insecure
            and not self.server.allow_insecure_non_loopback
            and not _loopback(host)
        ):
            raise ValueError(
                f"tls.insecure (plaintext, no client certificates) binds loopback only, but "
                f"server.host is {host!r}; use 127.0.0.1, or set "
                "server.allow_insecure_non_loopback to expose it deliberately"
            )
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


__all__ = [
    "BatchingSettings",
    "GatewaySettings",
    "LimitsSettings",
    "MetricsSettings",
    "OnnxRuntimeSettings",
    "PipelineSettings",
    "RestSettings",
    "ServerSettings",
    "SessionSettings",
    "TlsSettings",
    "TritonSettings",
]
