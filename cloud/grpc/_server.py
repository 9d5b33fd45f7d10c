"""The gateway process: one grpc.aio server with the session and inference services, health,
reflection, keepalive and message limits, mTLS by default, and graceful drain on shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import grpc
from aiml021.session.v1 import session_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from inference import grpc_service_pb2, grpc_service_pb2_grpc

from cloud._metrics import GatewayMetrics
from cloud._settings import GatewaySettings
from cloud.backends import Backend, OnnxRuntimeBackend
from cloud.batching import BatcherConfig
from cloud.core import (
    ByteBudget,
    DataPlane,
    IdempotencyStore,
    MemoryIdempotencyStore,
    MetadataSink,
    ModelRepository,
    SessionLimits,
    discard_record,
    scan_models_dir,
)
from cloud.grpc._inference import InferenceServicer
from cloud.grpc._session import SERVICE as SESSION_SERVICE
from cloud.grpc._session import SessionServicer
from common.errors import InvalidArgument

log = logging.getLogger(__name__)

INFERENCE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def server_credentials(tls_dir: Path) -> grpc.ServerCredentials:
    """mTLS credentials from ``tls_dir`` (ca.pem, server.pem, server.key): clients must present a
    certificate signed by the CA."""
    try:
        ca = (tls_dir / "ca.pem").read_bytes()
        cert = (tls_dir / "server.pem").read_bytes()
        key = (tls_dir / "server.key").read_bytes()
    except FileNotFoundError as exc:
        raise InvalidArgument(
            f"tls_dir {tls_dir}: {exc.filename} missing; create certificates with "
            "`aiml021 certs` or pass --insecure for development"
        ) from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


class Gateway:
    """Builds and runs the gateway from settings (``async with`` or start/stop)."""

    def __init__(
        self,
        settings: GatewaySettings,
        backend: Backend | None = None,
        repository: ModelRepository | None = None,
        idempotency: IdempotencyStore | None = None,
        metadata_sink: MetadataSink = discard_record,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = s = settings
        self.metrics = metrics or GatewayMetrics()
        backend = backend or OnnxRuntimeBackend(
            s.intra_op_threads, s.inter_op_threads, s.backend_workers
        )
        if repository is None:
            repository = ModelRepository(scan_models_dir(s.models_dir, s.max_batch_size))
        if idempotency is None and s.idempotency_entries > 0:
            idempotency = MemoryIdempotencyStore(s.idempotency_entries, s.idempotency_ttl_s)
        self.dataplane = DataPlane(
            repository,
            backend,
            BatcherConfig(
                max_batch_size=s.max_batch_size,
                max_queue_delay_s=s.max_queue_delay_ms / 1000,
                max_queue_size=s.max_queue_size,
                workers=s.backend_workers,
            ),
            self.metrics,
            idempotency,
            metadata_sink,
        )
        self.limits = SessionLimits(
            max_request_bytes=s.max_request_bytes,
            max_chunk_bytes=s.max_chunk_bytes,
            max_inflight_requests=s.max_inflight_per_session,
            max_session_buffer_bytes=s.session_buffer_bytes,
            reassembly_timeout_s=s.reassembly_timeout_s,
            ping_interval_s=s.ping_interval_s,
        )
        budget = ByteBudget(s.global_buffer_bytes)
        self.metrics.buffered_bytes.set_function(lambda: budget.used)
        self.sessions = SessionServicer(self.dataplane, self.limits, budget, s.insecure)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Load models, bind the port(s) and start serving."""
        s = self.settings
        await self.dataplane.start()
        options = [
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((self.sessions.handler(),))
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = (SESSION_SERVICE, INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        _ = session_pb2  # descriptors must be in the pool for reflection
        address = f"{s.host}:{s.port}"
        if s.insecure:
            log.warning("serving WITHOUT TLS on %s (--insecure): development only", address)
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, server_credentials(s.tls_dir))
        await server.start()
        for name in ("", SESSION_SERVICE, INFERENCE_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health = health_servicer
        self._server = server
        if s.metrics_port is not None:
            self.metrics_port = _start_metrics(self.metrics, s.host, s.metrics_port)
        if s.port_file is not None:
            s.port_file.write_text(
                json.dumps({"port": self.port, "metrics_port": self.metrics_port})
            )
        log.info(
            "gateway serving %d model(s) on %s:%d (%s), metrics on %s",
            len(self.dataplane.repository.specs()),
            s.host,
            self.port,
            "insecure" if s.insecure else "mTLS",
            self.metrics_port,
        )

    async def stop(self, reason: str = "gateway shutting down") -> None:
        """Drain every session, finish in-flight work, stop the server and the backend."""
        if self._server is None:
            return
        for name in ("", SESSION_SERVICE, INFERENCE_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.sessions.drain(reason, self.settings.drain_grace_s)
        await self._server.stop(grace=self.settings.drain_grace_s)
        self._server = None
        await self.dataplane.close()
        self._stopped.set()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then stop gracefully."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()


def _start_metrics(metrics: GatewayMetrics, host: str, port: int) -> int:
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)


__all__ = ["INFERENCE_SERVICE", "Gateway", "server_credentials"]
