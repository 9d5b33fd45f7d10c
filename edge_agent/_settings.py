"""Edge agent settings: one tree, env prefix ``AIML021_EDGE_``, sections joined with ``__``.

``aiml021 edge run`` reads it from flags > env > ``--config FILE`` (TOML or JSON) > defaults
(:meth:`EdgeSettings.load`); e.g. ``AIML021_EDGE_CACHE__ENTRIES`` is ``cache.entries``,
``[cache] entries = 0`` in a TOML file. docs/edge_agent.md lists every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.privacy import FeaturePrivacySettings
from common.settings import TREE_CONFIG, LayeredSettings, Section


class TlsSettings(Section):
    """The device's mTLS material (``dir``), or a plaintext channel (``insecure``)."""

    insecure: bool = False
    """Use a plaintext channel (tests and loopback demos only)."""
    dir: Path | None = None
    """Directory with the device's mTLS material (see the ``*_file`` keys)."""
    ca_file: str = "ca.pem"
    """CA bundle that signed the gateway certificate, relative to ``dir``."""
    cert_file: str | None = None
    """Device certificate chain, relative to ``dir``; default ``<device_id>.pem`` (the layout
    ``aiml021 certs --device ID`` writes)."""
    key_file: str | None = None
    """Device private key, relative to ``dir``; default ``<device_id>.key``."""
    server_name: str | None = None
    """Override of the TLS server name checked against the gateway certificate."""


class EnrollmentSettings(Section):
    """Enrollment with the issuing CA (``aiml021 ca serve``) and automatic renewal of the
    device certificate in ``tls.dir`` (off unless ``ca_endpoint`` is set)."""

    ca_endpoint: str = ""
    """``host:port`` of the CA service; empty: the certificate is managed elsewhere."""
    server_name: str | None = None
    """TLS name of the CA service when it differs from the endpoint's host."""
    bootstrap_token: str = ""
    """One-time token (``aiml021 ca issue-bootstrap``) for the first enrollment, used only while
    ``tls.dir`` holds no certificate; ``tls.dir``'s ca.pem must already trust the CA."""
    bootstrap_token_file: Path | None = None
    """File holding the bootstrap token (preferred over ``bootstrap_token``)."""
    renew_at: float = Field(default=0.67, gt=0, lt=1)
    """Renew once this fraction of the certificate's lifetime has passed."""
    retry_s: float = Field(default=5.0, gt=0)
    """Wait after a failed renewal; doubles up to ``retry_max_s``."""
    retry_max_s: float = Field(default=300.0, gt=0)
    """Longest wait between renewal attempts."""


class SessionSettings(Section):
    """The session stream to the gateway: reconnects, pings and the agent's own limits."""

    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Time allowed for Hello -> Welcome on a new stream."""
    backoff_initial_s: float = Field(default=0.1, gt=0)
    """First reconnect delay; doubles after each failed attempt."""
    backoff_max_s: float = Field(default=10.0, gt=0)
    """Ceiling of the reconnect delay."""
    backoff_jitter: float = Field(default=0.5, ge=0, le=1)
    """Fraction of each delay randomised ("equal jitter": delay * (1 - j + j * U[0,1]))."""
    ping_interval_s: float = Field(default=2.0, gt=0)
    """Ping period when the gateway does not negotiate one."""
    max_inflight: int = Field(default=256, ge=1)
    """Most requests the agent keeps open on the stream (capped by the gateway's limit)."""
    max_chunk_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest TensorChunk the agent sends (capped by the gateway's limit)."""
    initial_bandwidth_bps: float = Field(default=10e6, gt=0)
    """Uplink bandwidth assumed before traffic gives an estimate."""
    initial_rtt_ms: float = Field(default=20.0, ge=0)
    """Round-trip time assumed before the first Pong."""

    @model_validator(mode="after")
    def _check(self) -> SessionSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("session.backoff_max_s must be >= session.backoff_initial_s")
        return self


class RuntimeSettings(Section):
    """How the head segments run on the device."""

    intra_op_threads: int = Field(default=1, ge=1)
    """onnxruntime intra-op threads for the head segments."""
    compute_in_thread: bool = True
    """Run head segments on one worker thread so the event loop (stream I/O, deadline timers)
    stays responsive under load; False runs them inline (a little faster for one request at a
    time, but a burst of local work then delays offloads and timeouts)."""


class RoutingSettings(Section):
    """Deadlines and the offload choice."""

    sla_ms: float = Field(default=200.0, gt=0)
    """Default per-request deadline, from the call until an answer is useless."""
    fallback_margin_ms: float = Field(default=5.0, ge=0)
    """Time kept back before the deadline to produce the local fallback answer."""
    cut_point: str | None = None
    """Cut point to offload at; None lets the policy choose (default: the first computed cut)."""
    codec: str | None = None
    """Codec spec overriding the bundle's default for the cut (e.g. ``"int8"``)."""
    defer_on_fallback: bool = False
    """Queue a request for deferred refinement when it fell back to the local answer."""


class CacheSettings(Section):
    """The device's result cache."""

    entries: int = Field(default=1024, ge=0)
    """Most results cached (0 disables the cache)."""
    ttl_s: float = Field(default=300.0, gt=0)
    """Seconds a cached result stays valid."""
    similarity: float | None = Field(default=None, gt=0, le=1)
    """Cosine threshold for similarity hits; None keeps only exact (content-hash) hits."""
    embedding: str | None = None
    """Tensor whose global-average-pooled value is the similarity embedding (default: first cut)."""


class ReplaySettings(Section):
    """The encrypted offline replay queue (off unless ``path`` is set)."""

    path: Path | None = None
    """SQLite file of the encrypted replay queue; None disables offline replay."""
    key_file: Path | None = None
    """File holding the device secret (at least 32 random bytes: raw, hex or base64) that the
    queue's AES-256-GCM key is derived from with HKDF, bound to ``device_id``; mode 0600, not
    beside the queue file. Weak secrets (short, all one byte) are refused."""
    key: str | None = None
    """The device secret itself (hex or base64), e.g. from a secret store; prefer ``key_file``."""
    retention_s: float = Field(default=24 * 3600.0, gt=0)
    """Entries older than this are expired, reported and deleted instead of replayed."""
    max_entries: int = Field(default=100_000, ge=1)
    """Most entries the queue holds."""
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    """Most ciphertext bytes the queue holds."""
    full_policy: Literal["reject_new", "drop_oldest"] = "reject_new"
    """What enqueueing does when the queue is full: refuse the new entry (it keeps its local
    answer) or evict the oldest entries (reported as dropped)."""
    deadline_s: float = Field(default=30.0, gt=0)
    """Deadline given to each replayed request."""
    concurrency: int = Field(default=32, ge=1)
    """Replayed requests in flight at once while draining."""


class TelemetrySettings(Section):
    """Telemetry batches sent on the session stream."""

    batch: int = Field(default=64, ge=1)
    """Events per TelemetryBatch frame."""
    interval_s: float = Field(default=1.0, gt=0)
    """Longest time an event waits before its batch is sent."""
    buffer: int = Field(default=4096, ge=1)
    """Events buffered while disconnected; older ones are dropped (and counted) beyond this."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector (``host:port``, OTLP/gRPC) that receives the agent's spans (each
    request's trace continues at the gateway); empty: tracing off."""
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of requests traced."""


class MetricsSettings(Section):
    """The agent's own Prometheus endpoint (``/metrics``, docs/observability.md); off by default."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the endpoint (0: a free one, see ``EdgeAgent.metrics_port``); None: none."""
    host: str = "127.0.0.1"
    """Address the endpoint listens on: loopback unless a Prometheus elsewhere must reach it."""


class ArtifactsSettings(Section):
    """Following the bundle assigned to ``device_class`` in S3-compatible storage (off unless
    ``bucket`` is set): the running agent checks every ``check_interval_s``, installs and
    verifies (Ed25519 signature, then every file's SHA-256) the assigned bundle, probes it, and
    swaps its head without a restart; a bundle the gateway refuses or that fails in service is
    rolled back to the last known good one. See docs/scale-out.md."""

    bucket: str = ""
    """Bucket of signed bundles (``aiml021 artifacts publish``); empty: run ``bundle`` as it is."""
    endpoint: str = ""
    """S3 endpoint URL (MinIO: ``http://minio:9000``); empty: AWS S3. Credentials come as boto3
    finds them (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a role)."""
    verify_key: Path = Path("certs/bundle-signing.pub")
    """Ed25519 public key (PEM) every bundle must be signed with."""
    root: Path | None = None
    """The device's bundle directory (``versions/``, the ``current`` link, ``state.json``);
    required with ``bucket``. A bundle installed there earlier is run at start-up instead of
    ``bundle``."""
    check_interval_s: float = Field(default=60.0, gt=0)
    """Seconds between checks of the assignment."""
    max_bundle_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    """Largest bundle archive downloaded (and unpacked); a larger one is refused unread."""
    negotiate_timeout_s: float = Field(default=30.0, gt=0)
    """Time allowed for the session to re-Hello with a new bundle version; past it the new
    bundle is rolled back as refused."""


class EdgeSettings(LayeredSettings):
    """Everything the edge agent reads at start-up; validated, errors name the setting."""

    model_config = SettingsConfigDict(env_prefix="AIML021_EDGE_", **TREE_CONFIG)

    renamed: ClassVar[dict[str, str]] = {
        **{f"tls_{k}": f"tls.{k}" for k in ("dir", "ca_file", "cert_file", "key_file")},
        "tls_server_name": "tls.server_name",
        "insecure": "tls.insecure",
        **{k: f"session.{k}" for k in SessionSettings.model_fields},
        "threads": "runtime.intra_op_threads",
        "compute_in_thread": "runtime.compute_in_thread",
        **{k: f"routing.{k}" for k in RoutingSettings.model_fields},
        "cache_size": "cache.entries",
        **{f"cache_{k}": f"cache.{k}" for k in ("ttl_s", "similarity", "embedding")},
        **{f"replay_{k}": f"replay.{k}" for k in ReplaySettings.model_fields},
        **{f"telemetry_{k}": f"telemetry.{k}" for k in TelemetrySettings.model_fields},
    }
    """Flat names of the first release -> their place in the tree (quoted in errors)."""

    device_id: str = "edge-dev"
    """Device identity sent in Hello (the gateway trusts the client certificate, not this)."""
    device_class: str = "generic-cpu"
    """Device class reported to the gateway and the policy."""
    region: str = ""
    """Region the device runs in (e.g. ``eu-west``), reported with each request and telemetry
    batch: the gateway's metrics, drift and daily summary break down by it."""
    gateway: str | None = None
    """Gateway address ``host:port``; None runs the agent offline (local answers and replay)."""
    bundle: Path | None = None
    """Model bundle directory (see docs/bundles.md)."""
    model_name: str | None = None
    """Model name sent to the gateway; defaults to the bundle name."""
    model_version: str = ""
    """Model version sent to the gateway; empty lets the gateway's rollout choose."""
    tls: TlsSettings = Field(default_factory=TlsSettings)
    """mTLS material, or plaintext for tests."""
    enrollment: EnrollmentSettings = Field(default_factory=EnrollmentSettings)
    """Enrollment with the issuing CA and automatic certificate renewal."""
    session: SessionSettings = Field(default_factory=SessionSettings)
    """The session stream to the gateway."""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    """How head segments run."""
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    """Deadlines and the offload choice."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """The result cache."""
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    """The offline replay queue."""
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    """Telemetry batching."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """The agent's Prometheus endpoint."""
    privacy: FeaturePrivacySettings = Field(default_factory=FeaturePrivacySettings)
    """Differential privacy on offloaded features (off by default; docs/privacy.md)."""
    artifacts: ArtifactsSettings = Field(default_factory=ArtifactsSettings)
    """Following the device class's bundle assignment in object storage (off by default)."""

    @model_validator(mode="after")
    def _check(self) -> EdgeSettings:
        if self.gateway and not self.tls.insecure and self.tls.dir is None:
            raise ValueError(
                "gateway is set but neither tls.dir (AIML021_EDGE_TLS__DIR) nor tls.insecure "
                "(AIML021_EDGE_TLS__INSECURE) is; mTLS needs the device certificate directory"
            )
        if self.artifacts.bucket and self.artifacts.root is None:
            raise ValueError(
                "artifacts.bucket is set but artifacts.root (AIML021_EDGE_ARTIFACTS__ROOT) is "
                "not; the agent needs a directory for the bundles it installs"
            )
        return self


__all__ = [
    "ArtifactsSettings",
    "CacheSettings",
    "EdgeSettings",
    "EnrollmentSettings",
    "ReplaySettings",
    "RoutingSettings",
    "RuntimeSettings",
    "SessionSettings",
    "TelemetrySettings",
    "TlsSettings",
]
