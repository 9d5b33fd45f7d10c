"""The composition root: builds the gateway's object graph from settings and mounts every
front door.

:class:`Gateway` is the only place that reads :class:`cloud._settings.GatewaySettings` to wire
parts together: the backend and model repository, the stores (idempotency, result cache,
metadata writer), the data plane with its batchers, rollouts and their router, the registry view,
session limits and the policy; then the front doors on top of that core: one grpc.aio server
(session, inference, registry, deploy, cache, telemetry and policy services, health and
reflection), the REST bridge (:attr:`Gateway.rest`) and the Prometheus endpoint. Everything else
is plain constructors and functions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal

import grpc
from aiml021.policy.v1 import policy_pb2_grpc
from aiml021.telemetry.v1 import telemetry_pb2_grpc
from grpc_health.v1 import health, health_pb2
from inference import grpc_service_pb2_grpc

from cloud._health import ModelHealth
from cloud._memory import HeapTrimmer, freeze_start_up_objects
from cloud._metrics import GatewayMetrics
from cloud._observability import observe_gateway, policy_outcome_metrics
from cloud._privacy import PrivacySink, PseudonymousAudit
from cloud._settings import GatewaySettings
from cloud._shared_quotas import RedisQuotas
from cloud._transport import TransportSecurity
from cloud._workers_queue import QueueDepth
from cloud._workers_rollouts import SharedRollouts
from cloud.artifacts import sync_models
from cloud.authz import Authenticator, AuthzInterceptor, authz_middleware, read_audit_key
from cloud.backends import Backend, OnnxRuntimeBackend, PipelineBackend
from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    AuditSink,
    ByteBudget,
    DataPlane,
    DeviceQuota,
    DeviceQuotas,
    IdempotencyStore,
    MetadataSink,
    ModelKey,
    ModelRepository,
    OrgScopedCache,
    PayloadDecoder,
    RegistryView,
    ResultCache,
    RolloutManager,
    RolloutRouter,
    SessionLimits,
    TelemetrySink,
    discard_audit,
    discard_record,
    discard_telemetry,
    largest_request_bytes,
    scan_models_dir,
)
from cloud.grpc import (
    INFERENCE_SERVICE,
    SESSION_SERVICE,
    TELEMETRY_SERVICE,
    InferenceServicer,
    ServiceRegistration,
    SessionServicer,
    StreamGuards,
    TelemetryServicer,
    add_cache_service,
    add_deploy_service,
    add_registry_service,
    bind,
    enable_health_and_reflection,
    grpc_server,
)
from cloud.grpc._guard import StatusGuard
from cloud.grpc._policy import SERVICE as POLICY_SERVICE
from cloud.grpc._policy import PolicyServicer
from cloud.rest import PrivacyStatus, RestBridge, RestServer
from cloud.stores import (
    AuditLog,
    MemoryIdempotencyStore,
    MemoryResultCache,
    Stores,
    audit_log,
    build_stores,
)
from common.auth import JwksVerifier
from common.errors import InvalidArgument
from common.privacy import configure as configure_pseudonymiser
from common.privacy import configure_export_redaction
from common.telemetry import shutdown_tracing
from policy import OnlineLearner, Policy, PolicyAdmin, PolicyPublisher

log = logging.getLogger(__name__)


def _private_sinks(
    s: GatewaySettings, metadata: MetadataSink, telemetry: TelemetrySink
) -> tuple[MetadataSink, TelemetrySink]:
    """The sinks with device ids pseudonymised and PII redacted (``privacy`` section); the
    pseudonymiser is also installed for logs and exporters (``common.privacy.configure``), and
    so is the redactor (``common.privacy.configure_export_redaction``)."""
    s.privacy.check_keys()  # privacy.required: key files exist, parse, owner-only
    pseudonymiser = s.privacy.pseudonymiser()
    if pseudonymiser is not None:
        configure_pseudonymiser(pseudonymiser)
    redactor = s.privacy.redactor()
    configure_export_redaction(redactor)  # exported log lines and spans: DLP too
    if metadata is not discard_record:
        for missing in s.privacy.unprotected():
            log.warning("privacy: %s (privacy.required=true refuses to start so)", missing)
    if pseudonymiser is None and redactor is None:
        return metadata, telemetry
    if metadata is not discard_record:
        metadata = PrivacySink(metadata, pseudonymiser, redactor)
    if telemetry is not discard_telemetry:
        telemetry = PrivacySink(telemetry, pseudonymiser, redactor)
    return metadata, telemetry


class Gateway:
    """Builds and runs the gateway from settings (``async with`` or start/stop).

    ``stores`` (``cloud.stores.build_stores``; :meth:`from_settings` builds them), when given,
    supplies the idempotency store, the result cache and the metadata writer (unless passed
    explicitly); the gateway starts and closes it. With ``settings.control_services`` the
    registry, deploy, cache, telemetry and policy services are served on the same port;
    :meth:`add_service` registers more.
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
        policy: Policy | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.settings = s = settings
        self.metrics = metrics or GatewayMetrics()
        self.stores = stores
        if backend is None:
            backend = _backend(s)
        if repository is None:
            repository = ModelRepository(scan_models_dir(s.models_dir, s.batching.max_batch_size))
        # Entries are keyed by the caller's org, whoever reads them (data plane, CacheService, REST)
        self.cache_store: ResultCache = OrgScopedCache(
            _cache_store(s, stores), per_principal=s.authz.private_results
        )
        if stores is not None:
            if idempotency is None:
                idempotency = stores.idempotency
            if stores.metadata is not None and metadata_sink is discard_record:
                metadata_sink = stores.metadata
            if stores.metadata is not None and telemetry_sink is discard_telemetry:
                telemetry_sink = stores.metadata
        metadata_sink, telemetry_sink = _private_sinks(s, metadata_sink, telemetry_sink)
        if idempotency is None:
            idempotency = MemoryIdempotencyStore(
                ttl_s=s.idempotency.ttl_s,
                pending_ttl_s=s.idempotency.pending_ttl_s,
                max_keys=s.idempotency.entries,
            )
        if result_cache is None and (s.cache.full_models or s.cache.tail_segments):
            result_cache = self.cache_store
        self.queue_depth = QueueDepth(
            DynamicBatching(
                BatcherConfig(
                    max_batch_size=s.batching.max_batch_size,
                    max_queue_delay_s=s.batching.max_queue_delay_ms / 1000,
                    max_queue_size=s.batching.max_queue_size,
                    workers=s.batching.workers,
                    contended_batch_s=(
                        None
                        if s.batching.contended_batch_ms is None
                        else s.batching.contended_batch_ms / 1000
                    ),
                )
            )
        )
        self.metrics.queued_requests.set_function(self.queue_depth.queued)
        self.dataplane = DataPlane(
            repository,
            backend,
            self.queue_depth,
            self.metrics,
            idempotency,
            metadata_sink,
            result_cache,
            cache_full_models=s.cache.full_models,
            cache_tail_segments=s.cache.tail_segments,
            cache_kserve=s.cache.kserve,
            telemetry_sink=telemetry_sink,
            decoder=PayloadDecoder(
                s.session.decode_threads,
                s.session.max_waiting_decodes,
                s.session.max_request_bytes * 64,
            ),
        )
        self.authn = _authenticator(s)
        self.observers = observe_gateway(
            self.dataplane,
            self.metrics,
            s.observability,
            s.accounting,
            None if s.tls.insecure else s.tls.dir / "server.pem",
            org_resolver=self.authn.org_of_device,
        )
        """Drift detection and cost accounting hooked onto the data plane."""
        self.dataplane.model_orgs = {m: frozenset(o) for m, o in s.authz.models.items()}
        """Who is calling (certificates, tokens); the table in ``cloud.authz`` says what they may."""
        self.audit_log: AuditLog | None = None
        if audit is None and stores is not None and s.stores.metadata_url != "none":
            audit = self.audit_log = audit_log(
                s.stores.metadata_url, read_audit_key(s.authz.audit_key_file), s.authz.audit_buffer
            )
        self.audit: AuditSink = audit or discard_audit
        """Where refused calls and management actions are written (the hash-chained audit log)."""
        pseudonymiser, redactor = s.privacy.pseudonymiser(), s.privacy.redactor()
        if pseudonymiser is not None or redactor is not None:
            self.audit = PseudonymousAudit(self.audit, pseudonymiser, redactor)
        self.transport = TransportSecurity(s, uses_stores=stores is not None, audit=self.audit)
        """Server TLS material (rotates without restart), revocation deny-list, device checks."""
        self.rollouts = RolloutManager(
            self.dataplane.model_ready, visible=self.dataplane.repository.visible
        )
        self.router = RolloutRouter(self.dataplane, self.rollouts)
        self.dataplane.router = self.router
        self.registry = RegistryView(
            self.dataplane.repository, self.dataplane.model_ready, rollouts=self.rollouts
        )
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
        self.policies = PolicyPublisher()
        """What devices run, pushed as PolicyUpdate on their session streams."""
        lim = s.limits
        quota = DeviceQuota(
            max_sessions=lim.max_sessions_per_device,
            max_inflight=lim.max_inflight_per_device,
            max_buffered_bytes=lim.max_buffered_bytes_per_device,
            requests_per_s=lim.requests_per_s,
            burst=lim.burst,
            fair_share=lim.fair_share,
        )
        self.shared_quotas = RedisQuotas(quota, s.stores.redis_url) if lim.shared else None
        """Rate and sessions counted over all gateway processes (``limits.shared``)."""
        self.quotas = DeviceQuotas(quota, budget, shared=self.shared_quotas)
        """Per-device quotas every session and every inference call (gRPC and REST) draws on."""
        guards = StreamGuards(
            hello_timeout_s=s.session.hello_timeout_s,
            idle_timeout_s=s.session.idle_timeout_s,
            max_outbound_bytes=s.session.max_outbound_bytes,
            outbound_stall_s=s.session.outbound_stall_s,
            max_result_bytes=s.session.max_result_bytes,
        )
        self.sessions = SessionServicer(
            self.dataplane,
            self.limits,
            budget,
            s.tls.insecure,
            self.policies,
            quotas=self.quotas,
            guards=guards,
            max_request_id_bytes=s.server.max_request_id_bytes,
            # a spent budget refuses the org's offloads: its devices answer locally
            budget_exhausted=(
                self.observers.costs.exhausted if s.accounting.steer_offload else None
            ),
        )
        self.policy = policy
        """The policy PolicyService and REST decide with, and devices are pushed (control
        services only; by default built from the ``policy`` settings section)."""
        self.learner: OnlineLearner | None = None
        if s.control_services:
            if self.policy is None:
                from cloud._policy import gateway_policy

                self.policy = gateway_policy(s.models_dir, s.policy.bundle, s.policy)
            if self.policy is not None:
                # decisions follow what each device runs: its class's policy, its experiment arm
                self.learner = OnlineLearner(
                    self.policy,
                    route=lambda ctx: self.policies.policy(ctx.device_class, ctx.device_id),
                )
                self.policies.publish(self.policy)
        self.policy_admin = PolicyAdmin(self.policies)
        """Operators' policy changes and A/B experiments (REST ``/v1/policies``)."""
        if self.learner is not None:  # reported outcomes fill the experiments' per-arm results
            self.learner.observers.append(self.policy_admin.observe)
            self.learner.observers.append(policy_outcome_metrics(self.metrics))
        one_process = s.server.workers == 1
        several = (
            f"this gateway runs {s.server.workers} worker processes and a change would reach "
            "only one; set accounting.budgets in the settings file"
        )
        self.rest = RestBridge(
            self.dataplane,
            self.registry,
            self.rollouts,
            self.cache_store,
            self.learner,
            policies=self.policy_admin,
            # the console's budget write changes this process only: refused with several workers
            costs=self.observers.costs if one_process else None,
            privacy=PrivacyStatus(
                pseudonyms=bool(s.privacy.pseudonym_key or s.privacy.pseudonym_key_file),
                dlp=s.privacy.dlp,
                dlp_kinds=tuple(s.privacy.dlp_kinds),
                sealed_at_rest=s.privacy.at_rest_key_file is not None,
            ),
            budget_note="" if one_process else several,
            quotas=self.quotas,
        )
        """The REST front door over the same core (``self.rest.app()`` is its ASGI app)."""
        self.rest.middleware = authz_middleware(self.authn, self.audit)
        self._extra: list[tuple[ServiceRegistration, tuple[str, ...]]] = []
        self.service_names: list[str] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._model_health: ModelHealth | None = None
        self._trimmer: HeapTrimmer | None = None
        self._shared_rollouts: SharedRollouts | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.rest_port: int | None = None
        self._rest_server: RestServer | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Gateway:
        """The gateway ``aiml021 serve`` runs: stores built from the settings too."""
        if settings.artifacts.bucket:  # signed bundles from object storage, before the scan
            sync_models(settings.artifacts, settings.models_dir)
        settings.privacy.check_keys()  # before the stores open anything
        return cls(
            settings,
            stores=build_stores(
                settings.stores,
                settings.idempotency,
                settings.cache,
                keyring=settings.privacy.keyring(),
            ),
        )

    def add_service(self, register: ServiceRegistration, *names: str) -> None:
        """Serve more gRPC services on the gateway's port: ``register(server)`` is called at
        start; ``names`` (full service names) are listed in reflection and health."""
        if self._server is not None:
            raise InvalidArgument("add_service must be called before start")
        self._extra.append((register, names))

    def _mount_control_services(self, server: grpc.aio.Server) -> list[str]:
        names = [
            add_registry_service(server, self.registry),
            add_deploy_service(server, self.rollouts),
            add_cache_service(server, self.cache_store),
        ]
        telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(
            TelemetryServicer(self.dataplane, self.settings.tls.insecure), server
        )
        names.append(TELEMETRY_SERVICE)
        if self.learner is not None:
            steer = (
                self.observers.costs.exhausted if self.settings.accounting.steer_offload else None
            )
            policy_pb2_grpc.add_PolicyServiceServicer_to_server(
                PolicyServicer(self.learner, self.policies, budget_exhausted=steer), server
            )
            names.append(POLICY_SERVICE)
        return names

    def _mount_grpc(self, server: grpc.aio.Server) -> list[str]:
        """Every gRPC service on ``server``; returns their full names."""
        server.add_generic_rpc_handlers((self.sessions.handler(),))
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                self.dataplane, self.settings.server.max_request_id_bytes, quotas=self.quotas
            ),
            server,
        )
        served = [SESSION_SERVICE, INFERENCE_SERVICE]
        if self.settings.control_services:
            served += self._mount_control_services(server)
        for register, names in self._extra:
            register(server)
            served += names
        return served

    async def start(self) -> None:
        """Load models, bind the port(s) and start serving."""
        s = self.settings
        if self.stores is not None:
            await self.stores.start()
        if self.audit_log is not None:
            await self.audit_log.start()
        await self.dataplane.start()
        if s.stores.backend == "redis":  # workers and replicas route every request alike
            self._shared_rollouts = SharedRollouts(self.rollouts, s.stores.redis_url)
            await self._shared_rollouts.start()
        if self.shared_quotas is not None:
            await self.shared_quotas.start()
        await self.transport.start()
        server = grpc_server(
            s.server,
            [StatusGuard(), self.transport.authenticator, AuthzInterceptor(self.authn, self.audit)],
            self._receive_limit(),
        )
        served = self._mount_grpc(server)
        self.service_names = served
        self._health = enable_health_and_reflection(server, served)
        self.port = bind(server, s.server.host, s.server.port, s.tls, self.transport.material)
        await server.start()
        await self.transport.check_listener(s.server.host, self.port, "gRPC")
        for name in ("", *served):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self._model_health = ModelHealth(self._health, self._watch_models, ("", INFERENCE_SERVICE))
        self._model_health.start()
        if s.server.heap_trim_interval_s is not None:
            self._trimmer = HeapTrimmer(s.server.heap_trim_interval_s)
            self._trimmer.start()
        if s.metrics.port is not None:
            self.metrics_port = _start_metrics(self.metrics, s.metrics.host, s.metrics.port)
        if s.rest.port is not None:
            self._rest_server = RestServer(
                self.transport.rest_guard(self.rest.app()),
                s.server.host,
                s.rest.port,
                s.tls,
                reuse_port=s.server.reuse_port,
                material=self.transport.material,
            )
            await self._rest_server.start()
            self.rest_port = self._rest_server.port
            await self.transport.check_listener(s.server.host, self.rest_port, "REST")
        if s.server.port_file is not None:
            s.server.port_file.write_text(
                json.dumps(
                    {
                        "port": self.port,
                        "metrics_port": self.metrics_port,
                        "rest_port": self.rest_port,
                    }
                )
            )
        log.info(
            "gateway serving %d model(s) on %s:%d (%s), metrics on %s, REST on %s; services: %s",
            len(self.dataplane.repository.specs()),
            s.server.host,
            self.port,
            "insecure" if s.tls.insecure else "mTLS",
            self.metrics_port,
            self.rest_port,
            ", ".join(served),
        )

    def _watch_models(self) -> list[ModelKey]:
        """Models that cannot compute (polled by the health watcher, which also runs the data
        plane's bookkeeping: worker-restart counts, devices that stopped reporting)."""
        self.dataplane.upkeep()
        return self.dataplane.models_down()

    def _receive_limit(self) -> int:
        """The largest gRPC message received (see ``server.fit_message_limit_to_models``)."""
        s = self.settings
        ceiling = s.server.max_message_bytes
        need = largest_request_bytes(self.dataplane.repository.specs())
        if not s.server.fit_message_limit_to_models or need is None:
            return ceiling
        return min(ceiling, max(need, s.session.max_chunk_bytes) + 64 * 1024)

    async def stop(self, reason: str = "gateway shutting down") -> None:
        """Drain every session, finish in-flight work, stop the server and the backend."""
        if self._server is None:
            return
        for upkeep in (self._model_health, self._trimmer):
            if upkeep is not None:
                await upkeep.close()
        if self._health is not None:
            for name in ("", *self.service_names):
                await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._rest_server is not None:
            await self._rest_server.close()
            self._rest_server = None
        await self.sessions.drain(reason, self.settings.drain_grace_s)
        await self._server.stop(grace=self.settings.drain_grace_s)
        self._server = None
        if self._shared_rollouts is not None:
            await self._shared_rollouts.close()
            self._shared_rollouts = None
        if self.shared_quotas is not None:
            await self.shared_quotas.close()
        await self.router.close()
        await self.dataplane.close()
        if self.observers.tracing:  # the last spans reach the collector before the exit
            await asyncio.to_thread(shutdown_tracing)
        if self.stores is not None:
            await self.stores.close()
        await self.transport.close()
        if self.audit_log is not None:
            await self.audit_log.stop()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then stop gracefully (the process's server: ``aiml021
        serve`` and each of its workers)."""
        await self.start()
        # What start-up loaded lives as long as the process: out of the collector's reach, a full
        # collection under load no longer stops the event loop for tens of milliseconds.
        log.info("start-up objects frozen for the garbage collector: %d", freeze_start_up_objects())
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()


def _backend(s: GatewaySettings) -> Backend:
    inner: Backend
    if s.backend == "triton":
        from cloud.backends import TritonBackend

        inner = TritonBackend(s.triton)
    else:
        ort = s.onnxruntime
        inner = OnnxRuntimeBackend(ort.intra_op_threads, ort.inter_op_threads, s.batching.workers)
    p = s.pipelines  # pipeline.json entries run here, their ONNX stages on onnxruntime
    return PipelineBackend(
        inner,
        max_image_bytes=p.max_image_bytes,
        max_image_pixels=p.max_image_pixels,
        workers=s.batching.workers,
    )


def _authenticator(s: GatewaySettings) -> Authenticator:
    a = s.authz
    verifier = None
    if a.jwks_file is not None:
        verifier = JwksVerifier(a.jwks_file, issuer=a.issuer, audience=a.audience)
    return Authenticator(verifier, default_org=a.default_org, insecure=s.tls.insecure)


def _cache_store(s: GatewaySettings, stores: Stores | None) -> ResultCache:
    """The result cache CacheService serves and the data plane consults."""
    if stores is not None:
        return stores.cache
    return MemoryResultCache(default_ttl_s=s.cache.ttl_s, max_entries=s.cache.entries)


def _start_metrics(metrics: GatewayMetrics, host: str, port: int) -> int:
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)


__all__ = ["Gateway"]
