"""The gateway process: one grpc.aio server with the session and inference services, health,
reflection, keepalive and message limits, mTLS by default, and graceful drain on shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from aiml021.session.v1 import session_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from inference import grpc_service_pb2, grpc_service_pb2_grpc

from cloud._metrics import GatewayMetrics
from cloud._settings import GatewaySettings
from cloud.backends import Backend, OnnxRuntimeBackend
from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    ByteBudget,
    DataPlane,
    IdempotencyStore,
    MetadataSink,
    ModelRepository,
    RegistryView,
    ResultCache,
    RolloutManager,
    RolloutRouter,
    SessionLimits,
    TelemetrySink,
    discard_record,
    discard_telemetry,
    scan_models_dir,
)
from cloud.grpc._cache import add_cache_service
from cloud.grpc._deploy import add_deploy_service
from cloud.grpc._inference import InferenceServicer
from cloud.grpc._registry import add_registry_service
from cloud.grpc._session import SERVICE as SESSION_SERVICE
from cloud.grpc._session import SessionServicer
from cloud.grpc._telemetry import SERVICE as TELEMETRY_SERVICE
from cloud.grpc._telemetry import TelemetryServicer
from common.errors import InvalidArgument

if TYPE_CHECKING:
    from cloud.stores import Stores

ServiceRegistration = Callable[[grpc.aio.Server], object]
"""Registers one or more servicers on the server (e.g. ``lambda s: add_to_server(s, policy)``)."""

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
    """Builds and runs the gateway from settings (``async with`` or start/stop).

    ``stores`` (``cloud.stores.build_stores``), when given, supplies the idempotency store, the
    result cache and the metadata writer (unless passed explicitly); the gateway starts and
    closes it. With ``settings.control_services`` the registry, deploy, cache, telemetry and
    policy services are served on the same port; :meth:`add_service` registers more.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        backend: Backend | None = None,
        repository: ModelRepository | None = None,
        idempotency: IdempotencyStore | None = None,
        metadata_sink: MetadataSink = discard_record,
        metrics: GatewayMetrics | None = None,
        *,
        stores: Stores | None = None,
        result_cache: ResultCache | None = None,
        telemetry_sink: TelemetrySink = discard_telemetry,
        policy: Any = None,
    ) -> None:
        self.settings = s = settings
        if s.rest.port is not None:
            raise InvalidArgument("rest.port is set but this gateway does not serve REST yet")
        self.metrics = metrics or GatewayMetrics()
        self.stores = stores
        if backend is None:
            backend = _backend(s)
        if repository is None:
            repository = ModelRepository(scan_models_dir(s.models_dir, s.batching.max_batch_size))
        self.cache_store = _cache_store(s, stores)
        if stores is not None:
            if idempotency is None:
                idempotency = stores.idempotency
            if stores.metadata is not None and metadata_sink is discard_record:
                metadata_sink = stores.metadata
            if stores.metadata is not None and telemetry_sink is discard_telemetry:
                telemetry_sink = stores.metadata
        if idempotency is None:
            from cloud.stores import MemoryIdempotencyStore

            idempotency = MemoryIdempotencyStore(
                ttl_s=s.idempotency.ttl_s,
                pending_ttl_s=s.idempotency.pending_ttl_s,
                max_keys=s.idempotency.entries,
            )
        if result_cache is None and (s.cache.full_models or s.cache.tail_segments):
            result_cache = self.cache_store
        self.dataplane = DataPlane(
            repository,
            backend,
            DynamicBatching(
                BatcherConfig(
                    max_batch_size=s.batching.max_batch_size,
                    max_queue_delay_s=s.batching.max_queue_delay_ms / 1000,
                    max_queue_size=s.batching.max_queue_size,
                    workers=s.batching.workers,
                )
            ),
            self.metrics,
            idempotency,
            metadata_sink,
            result_cache,
            cache_full_models=s.cache.full_models,
            cache_tail_segments=s.cache.tail_segments,
            telemetry_sink=telemetry_sink,
        )
        self.rollouts = RolloutManager(self.dataplane.model_ready)
        self.router = RolloutRouter(self.dataplane, self.rollouts)
        self.dataplane.router = self.router
        self.limits = SessionLimits(
            max_request_bytes=s.session.max_request_bytes,
            max_chunk_bytes=s.session.max_chunk_bytes,
            max_inflight_requests=s.session.max_inflight,
            max_session_buffer_bytes=s.session.buffer_bytes,
            reassembly_timeout_s=s.session.reassembly_timeout_s,
            ping_interval_s=s.session.ping_interval_s,
        )
        budget = ByteBudget(s.session.global_buffer_bytes)
        self.metrics.buffered_bytes.set_function(lambda: budget.used)
        self.sessions = SessionServicer(self.dataplane, self.limits, budget, s.tls.insecure)
        self.policy = policy
        self._extra: list[tuple[ServiceRegistration, tuple[str, ...]]] = []
        self.service_names: list[str] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._stopped = asyncio.Event()

    def add_service(self, register: ServiceRegistration, *names: str) -> None:
        """Serve more gRPC services on the gateway's port: ``register(server)`` is called at
        start; ``names`` (full service names) are listed in reflection and health."""
        if self._server is not None:
            raise InvalidArgument("add_service must be called before start")
        self._extra.append((register, names))

    def _register_control_services(self, server: grpc.aio.Server) -> list[str]:
        dp = self.dataplane
        view = RegistryView(dp.repository, dp.model_ready, rollouts=self.rollouts)
        names = [
            add_registry_service(server, view),
            add_deploy_service(server, self.rollouts),
            add_cache_service(server, self.cache_store),
        ]
        from aiml021.telemetry.v1 import telemetry_pb2_grpc

        telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(
            TelemetryServicer(self.dataplane, self.settings.tls.insecure), server
        )
        names.append(TELEMETRY_SERVICE)
        if self.policy is None:
            from cloud._policy import gateway_policy

            st = self.settings
            self.policy = gateway_policy(st.models_dir, st.policy.bundle)
        if self.policy is not None:
            from aiml021.policy.v1 import policy_pb2

            from policy.service import add_to_server

            add_to_server(server, self.policy)
            names.append(policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name)
        return names

    async def start(self) -> None:
        """Load models, bind the port(s) and start serving."""
        s = self.settings
        if self.stores is not None:
            await self.stores.start()
        await self.dataplane.start()
        options = [
            ("grpc.max_send_message_length", s.server.max_message_bytes),
            ("grpc.max_receive_message_length", s.server.max_message_bytes),
            ("grpc.keepalive_time_ms", int(s.server.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(s.server.keepalive_timeout_s * 1000)),
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
        served = [SESSION_SERVICE, INFERENCE_SERVICE]
        if s.control_services:
            served += self._register_control_services(server)
        for register, names in self._extra:
            register(server)
            served += names
        self.service_names = served
        reflection.enable_server_reflection(
            (*served, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        _ = session_pb2  # descriptors must be in the pool for reflection
        address = f"{s.server.host}:{s.server.port}"
        if s.tls.insecure:
            log.warning("serving WITHOUT TLS on %s (--insecure): development only", address)
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, server_credentials(s.tls.dir))
        await server.start()
        for name in ("", *served):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._health = health_servicer
        self._server = server
        if s.metrics.port is not None:
            self.metrics_port = _start_metrics(self.metrics, s.server.host, s.metrics.port)
        if s.server.port_file is not None:
            s.server.port_file.write_text(
                json.dumps({"port": self.port, "metrics_port": self.metrics_port})
            )
        log.info(
            "gateway serving %d model(s) on %s:%d (%s), metrics on %s; services: %s",
            len(self.dataplane.repository.specs()),
            s.server.host,
            self.port,
            "insecure" if s.tls.insecure else "mTLS",
            self.metrics_port,
            ", ".join(served),
        )

    async def stop(self, reason: str = "gateway shutting down") -> None:
        """Drain every session, finish in-flight work, stop the server and the backend."""
        if self._server is None:
            return
        for name in ("", *self.service_names):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.sessions.drain(reason, self.settings.drain_grace_s)
        await self._server.stop(grace=self.settings.drain_grace_s)
        self._server = None
        await self.router.close()
        await self.dataplane.close()
        if self.stores is not None:
            await self.stores.close()
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


def _backend(s: GatewaySettings) -> Backend:
    if s.backend == "triton":
        from cloud.backends import TritonBackend

        return TritonBackend(s.triton)
    ort = s.onnxruntime
    return OnnxRuntimeBackend(ort.intra_op_threads, ort.inter_op_threads, s.batching.workers)


def _cache_store(s: GatewaySettings, stores: Stores | None) -> ResultCache:
    """The ``cloud.stores`` result cache CacheService serves and the data plane consults."""
    if stores is not None:
        return stores.cache
    from cloud.stores import MemoryResultCache

    return MemoryResultCache(default_ttl_s=s.cache.ttl_s, max_entries=s.cache.entries)


def _start_metrics(metrics: GatewayMetrics, host: str, port: int) -> int:
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)


__all__ = ["INFERENCE_SERVICE", "Gateway", "ServiceRegistration", "server_credentials"]
