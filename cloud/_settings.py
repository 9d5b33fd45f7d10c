"""Gateway settings: one pydantic-settings class, env prefix ``AIML021_GATEWAY_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Everything the gateway reads at start-up; validated, errors name the setting."""

    model_config = SettingsConfigDict(env_prefix="AIML021_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    """Address the gRPC server binds."""
    port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port (0 picks a free port; see ``port_file``)."""
    port_file: Path | None = None
    """When set, the bound gRPC and metrics ports are written here as JSON once serving."""
    metrics_port: int | None = Field(default=8002, ge=0, le=65535)
    """Prometheus metrics port (0 picks a free port, null disables the endpoint)."""
    models_dir: Path = Path("models")
    """Directory of model bundles (each subdirectory with a manifest.json) and bare *.onnx files."""
    insecure: bool = False
    """Serve plaintext without client certificates (development only; logs a warning)."""
    tls_dir: Path = Path("certs")
    """Directory with ca.pem, server.pem and server.key (written by ``aiml021 certs``)."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent."""
    keepalive_time_s: float = Field(default=30.0, gt=0)
    """Interval of server keepalive pings on idle connections."""
    keepalive_timeout_s: float = Field(default=10.0, gt=0)
    """Time to wait for a keepalive ack before closing the connection."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most samples in one batch (capped by each model's own limit)."""
    max_queue_delay_ms: float = Field(default=0.0, ge=0)
    """How long the batcher waits for a batch to fill; 0 batches whatever is queued."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Queued requests per model version before new ones get RESOURCE_EXHAUSTED."""
    intra_op_threads: int = Field(default=1, ge=1)
    """onnxruntime intra-op threads per session."""
    inter_op_threads: int = Field(default=1, ge=1)
    """onnxruntime inter-op threads per session."""
    backend_workers: int = Field(default=1, ge=1)
    """Batches computing at the same time (onnxruntime thread pool size)."""
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    """Largest payload one session request may declare."""
    max_chunk_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest TensorChunk payload."""
    max_inflight_per_session: int = Field(default=256, ge=1)
    """Requests one session may have open (reassembling, queued or computing)."""
    session_buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    """Bytes of unfinished payloads buffered per session (also the initial byte credit)."""
    global_buffer_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Bytes of unfinished payloads buffered over all sessions."""
    reassembly_timeout_s: float = Field(default=10.0, gt=0)
    """A request whose chunks do not all arrive in this time is dropped and answered."""
    ping_interval_s: float = Field(default=20.0, gt=0)
    """Ping interval suggested to devices in Welcome."""
    drain_grace_s: float = Field(default=10.0, ge=0)
    """On shutdown, how long in-flight work may take to finish after Drain."""
    idempotency_entries: int = Field(default=100_000, ge=0)
    """Results kept by the in-memory idempotency store (0 disables it)."""
    idempotency_ttl_s: float = Field(default=3600.0, gt=0)
    """How long the in-memory idempotency store keeps a result."""
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    """Inference engine: in-process onnxruntime, or a Triton server (``triton_url``)."""
    triton_url: str = ""
    """host:port of Triton's gRPC endpoint (empty: ``AIML021_TRITON_URL`` or its default)."""
    cache_full_models: bool = True
    """Answer repeated inputs of full models from the result cache (model, version, content hash)."""
    cache_tail_segments: bool = False
    """Also cache tail-segment (offloaded feature) requests; their inputs rarely repeat."""
    result_cache_entries: int = Field(default=10_000, ge=1)
    """Capacity of the in-memory result cache used when no shared stores are configured."""
    control_services: bool = True
    """Also serve ModelRegistryService, DeployService, CacheService, TelemetryService and
    PolicyService on the same port."""
    policy_bundle: str = ""
    """Bundle whose profile builds PolicyService's heuristic (empty: the first bundle served)."""

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.max_chunk_bytes > self.max_message_bytes:
            raise ValueError("max_chunk_bytes must not exceed max_message_bytes")
        if self.session_buffer_bytes > self.global_buffer_bytes:
            raise ValueError("session_buffer_bytes must not exceed global_buffer_bytes")
        return self


__all__ = ["GatewaySettings"]
