"""Edge agent settings: one pydantic-settings class, env prefix ``AIML021_EDGE_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    """Everything the edge agent reads at start-up. Every field has an env var
    ``AIML021_EDGE_<FIELD>`` (e.g. ``AIML021_EDGE_GATEWAY=host:443``)."""

    model_config = SettingsConfigDict(env_prefix="AIML021_EDGE_", extra="forbid")

    # -- identity and transport ------------------------------------------------------------
    device_id: str = "edge-dev"
    """Device identity sent in Hello (the gateway trusts the client certificate, not this)."""
    device_class: str = "generic-cpu"
    """Device class reported to the gateway and the policy."""
    gateway: str | None = None
    """Gateway address ``host:port``; None runs the agent offline (local answers and replay)."""
    insecure: bool = False
    """Use a plaintext channel (tests and loopback demos only)."""
    tls_dir: Path | None = None
    """Directory with the device's mTLS material (see ``tls_*_file``)."""
    tls_ca_file: str = "ca.pem"
    """CA bundle that signed the gateway certificate, relative to ``tls_dir``."""
    tls_cert_file: str | None = None
    """Device certificate chain, relative to ``tls_dir``; default ``<device_id>.pem`` (the
    layout ``aiml021 certs --device ID`` writes)."""
    tls_key_file: str | None = None
    """Device private key, relative to ``tls_dir``; default ``<device_id>.key``."""
    tls_server_name: str | None = None
    """Override of the TLS server name checked against the gateway certificate."""
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

    # -- model and routing -----------------------------------------------------------------
    bundle: Path | None = None
    """Model bundle directory (see docs/bundles.md)."""
    model_name: str | None = None
    """Model name sent to the gateway; defaults to the bundle name."""
    model_version: str = ""
    """Model version sent to the gateway; empty lets the gateway's rollout choose."""
    threads: int = Field(default=1, ge=1)
    """onnxruntime intra-op threads for the head segments."""
    compute_in_thread: bool = True
    """Run head segments on one worker thread so the event loop (stream I/O, deadline timers)
    stays responsive under load; False runs them inline (a little faster for one request at a
    time, but a burst of local work then delays offloads and timeouts)."""
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
    initial_bandwidth_bps: float = Field(default=10e6, gt=0)
    """Uplink bandwidth assumed before traffic gives an estimate."""
    initial_rtt_ms: float = Field(default=20.0, ge=0)
    """Round-trip time assumed before the first Pong."""

    # -- cache -----------------------------------------------------------------------------
    cache_size: int = Field(default=1024, ge=0)
    """Most results cached (0 disables the cache)."""
    cache_ttl_s: float = Field(default=300.0, gt=0)
    """Seconds a cached result stays valid."""
    cache_similarity: float | None = Field(default=None, gt=0, le=1)
    """Cosine threshold for similarity hits; None keeps only exact (content-hash) hits."""
    cache_embedding: str | None = None
    """Tensor whose global-average-pooled value is the similarity embedding (default: first cut)."""

    # -- replay queue ----------------------------------------------------------------------
    replay_path: Path | None = None
    """SQLite file of the encrypted replay queue; None disables offline replay."""
    replay_key_file: Path | None = None
    """File holding the 32-byte AES-256-GCM key (raw, hex or base64); must not sit beside the
    queue file."""
    replay_key: str | None = None
    """The key itself (hex or base64), e.g. from a secret store; prefer ``replay_key_file``."""
    replay_retention_s: float = Field(default=24 * 3600.0, gt=0)
    """Entries older than this are expired, reported and deleted instead of replayed."""
    replay_max_entries: int = Field(default=100_000, ge=1)
    """Most entries the queue holds."""
    replay_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    """Most ciphertext bytes the queue holds."""
    replay_full_policy: Literal["reject_new", "drop_oldest"] = "reject_new"
    """What enqueueing does when the queue is full: refuse the new entry (it keeps its local
    answer) or evict the oldest entries (reported as dropped)."""
    replay_deadline_s: float = Field(default=30.0, gt=0)
    """Deadline given to each replayed request."""
    replay_concurrency: int = Field(default=32, ge=1)
    """Replayed requests in flight at once while draining."""

    # -- telemetry -------------------------------------------------------------------------
    telemetry_batch: int = Field(default=64, ge=1)
    """Events per TelemetryBatch frame."""
    telemetry_interval_s: float = Field(default=1.0, gt=0)
    """Longest time an event waits before its batch is sent."""
    telemetry_buffer: int = Field(default=4096, ge=1)
    """Events buffered while disconnected; older ones are dropped (and counted) beyond this."""

    @model_validator(mode="after")
    def _check(self) -> EdgeSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.gateway and not self.insecure and self.tls_dir is None:
            raise ValueError(
                "gateway is set but neither tls_dir (AIML021_EDGE_TLS_DIR) nor insecure "
                "(AIML021_EDGE_INSECURE) is; mTLS needs the device certificate directory"
            )
        return self


__all__ = ["EdgeSettings"]
