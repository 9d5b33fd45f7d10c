"""The data plane: model lookup, input validation, rollouts, idempotency, result cache and
batching over a backend.

Every transport (ModelInfer, ModelStreamInfer, session streams, the REST bridge) converts its
messages to :class:`InferenceRequest` and calls :meth:`DataPlane.submit` or
:meth:`DataPlane.infer`; this module never imports grpc. Order of a request: a rollout router
picks the version of requests that name none; an idempotency key is claimed atomically in the
store (a stored result is returned); the result cache answers full-model requests by content
hash; otherwise the batcher computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cloud._metrics import GatewayMetrics
from cloud.core._accounting import (
    content_hash,
    log_request,
    record_telemetry,
    request_record,
    trace_request,
)
from cloud.core._backend import Backend
from cloud.core._batching import Batcher, BatcherFactory
from cloud.core._decoding import PayloadDecoder
from cloud.core._fleet import DeviceFleet, DeviceReport
from cloud.core._hooks import (
    CacheEntry,
    IdempotencyStore,
    MetadataSink,
    RequestRouter,
    ResultCache,
    TelemetrySink,
    discard_record,
    discard_telemetry,
)
from cloud.core._principal import current_principal, refused_model
from cloud.core._repository import ModelRepository
from cloud.core._statistics import InferenceStatistics
from cloud.core._tenancy import idempotency_key
from cloud.core._types import InferenceRequest, InferenceResult, ModelKey, ModelSpec, TelemetryEvent
from cloud.core._validate import check_outputs, validate_inputs
from common.errors import AimlError, Unavailable

log = logging.getLogger(__name__)

RequestObserver = Callable[[InferenceRequest, str, InferenceResult | None], None]
"""Called with every finished request (status code, result when answered): drift, costs."""
TelemetryObserver = Callable[[Sequence[TelemetryEvent]], None]
"""Called with every batch of device telemetry events: drift."""


class DataPlane:
    """Serves the models of a repository through a backend, one batcher per model version
    (built by ``batchers``, e.g. ``cloud.batching.DynamicBatching``).

    ``result_cache`` answers repeated inputs of full models (and of tail segments with
    ``cache_tail_segments``) keyed by served model, version and content hash; ``router`` (e.g.
    ``cloud.core.RolloutRouter``) picks the version of requests that name none.
    """

    def __init__(
        self,
        repository: ModelRepository,
        backend: Backend,
        batchers: BatcherFactory,
        metrics: GatewayMetrics | None = None,
        idempotency: IdempotencyStore | None = None,
        metadata_sink: MetadataSink = discard_record,
        result_cache: ResultCache | None = None,
        *,
        cache_full_models: bool = True,
        cache_tail_segments: bool = False,
        cache_kserve: bool = False,
        router: RequestRouter | None = None,
        telemetry_sink: TelemetrySink = discard_telemetry,
        decoder: PayloadDecoder | None = None,
    ) -> None:
        self.repository = repository
        self.backend = backend
        self.metrics = metrics or GatewayMetrics()
        self.idempotency = idempotency
        self.metadata_sink = metadata_sink
        self.result_cache = result_cache
        self.cache_full_models = cache_full_models
        self.cache_tail_segments = cache_tail_segments
        self.cache_kserve = cache_kserve
        self.router = router
        self.telemetry_sink = telemetry_sink
        self.decoder = decoder or PayloadDecoder()
        """Decodes session payloads (codec frames on its threads)."""
        self.statistics = InferenceStatistics()
        """Triton-style per model version statistics (front doors report finished requests)."""
        self._new_batcher = batchers
        self._batchers: dict[ModelKey, Batcher] = {}
        self._inflight_keys: dict[str, asyncio.Future[InferenceResult]] = {}
        self._queued_keys: dict[str, tuple[ModelKey, asyncio.Future[InferenceResult]]] = {}
        self._owned: set[asyncio.Task[Any]] = set()
        self._entropy: dict[Path, Any] = {}
        self._unloaded: dict[ModelKey, ModelSpec] = {}
        self._started = False
        self.observers: list[RequestObserver] = []
        """Called with every finished request (the composition root adds drift and costs)."""
        self.telemetry_observers: list[TelemetryObserver] = []
        """Called with every telemetry batch's events."""
        self.fleet = DeviceFleet(self.metrics)
        """What devices report about themselves (replay backlog)."""
        self._restarts: dict[ModelKey, int] = {}

    @property
    def model_orgs(self) -> dict[str, frozenset[str]]:
        """Scopes each model is served to (a model not listed: everyone), ``authz.models``: the
        repository's :attr:`~cloud.core.ModelRepository.scopes`, which every lookup applies."""
        return self.repository.scopes

    @model_orgs.setter
    def model_orgs(self, scopes: Mapping[str, frozenset[str]]) -> None:
        self.repository.scopes = dict(scopes)

    async def start(self) -> None:
        """Load every repository model into the backend and start its batcher."""
        for spec in self.repository.specs():
            await self.load(spec)
        self._started = True

    async def load(self, spec: ModelSpec) -> None:
        """Serve ``spec`` (load into the backend, start a batcher)."""
        await self.backend.load(spec)
        self.repository.add(spec)
        self.metrics.add_model(spec.name)
        self._unloaded.pop(spec.key, None)
        if spec.entropy_model is not None:
            self.entropy_models(spec)  # a broken model file fails the load, not the requests
        if spec.key not in self._batchers:
            outputs = tuple(t.name for t in spec.outputs)
            key = spec.key

            async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return await self.backend.infer(key, feeds, outputs)

            batcher = self._new_batcher(spec, run, self._observe_batch)
            batcher.start()
            self._batchers[key] = batcher

    def entropy_models(self, spec: ModelSpec) -> Any:
        """The ``common.codecs.EntropyModel`` of ``spec``'s cut point (None when it has none),
        loaded once per file."""
        path = spec.entropy_model
        if path is None:
            return None
        model = self._entropy.get(path)
        if model is None:
            from common import codecs

            model = self._entropy[path] = codecs.EntropyModel.load(path)
        return model

    async def unload(self, key: ModelKey) -> None:
        """Stop serving ``key``; its queued requests fail with UNAVAILABLE. It stays known as
        unloaded (:meth:`unloaded`) until :meth:`reload` serves it again (Triton's explicit model
        control)."""
        for spec in self.repository.specs():
            if spec.key == key:
                self._unloaded[key] = spec
        self.repository.remove(key)
        batcher = self._batchers.pop(key, None)
        self._restarts.pop(key, None)  # a reload starts a new batcher, counting from 0
        if batcher is not None:
            await batcher.close()
        await self.backend.unload(key)

    def unloaded(self, name: str = "") -> list[ModelSpec]:
        """Model versions unloaded and not loaded again (all, or those of ``name``) that the
        current principal may see."""
        return [
            s
            for s in self._unloaded.values()
            if (not name or s.name == name) and self.repository.visible_spec(s)
        ]

    async def reload(self, name: str) -> list[ModelSpec]:
        """Serve the unloaded versions of ``name`` again; returns them (empty when ``name`` is
        served already); NotFound for a name this gateway never served."""
        specs = self.unloaded(name)
        if not specs:
            if any(s.name == name for s in self._unloaded.values()):
                refused_model(name)  # unloaded, but another tenant's: unknown to this caller
            self.repository.resolve(name)  # NotFound unless served (and visible)
        for spec in specs:
            await self.load(spec)
        return specs

    async def close(self) -> None:
        """Stop every batcher, finish owned store writes and close the backend."""
        for batcher in list(self._batchers.values()):
            await batcher.close()
        self._batchers.clear()
        if self._owned:
            await asyncio.gather(*list(self._owned), return_exceptions=True)
        await self.backend.close()
        self.decoder.close()
        self._started = False

    async def ready(self) -> bool:
        """True when started and the backend is ready."""
        return self._started and await self.backend.ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        """True when ``name`` (at ``version``) is served and its batcher can compute (false while
        a crashed batch worker restarts)."""
        try:
            spec = self.repository.resolve(name, version)
        except AimlError:
            return False
        batcher = self._batchers.get(spec.key)
        return batcher is not None and batcher.ready

    def models_down(self) -> list[ModelKey]:
        """Loaded model versions that cannot compute now (a batch worker restarting)."""
        return [key for key, batcher in self._batchers.items() if not batcher.ready]

    def batcher(self, key: ModelKey) -> Batcher:
        """The batcher of ``key`` (Unavailable when not serving)."""
        batcher = self._batchers.get(key)
        if batcher is None:
            raise Unavailable(f"model {key} is not loaded")
        return batcher

    def _observe_batch(
        self, key: ModelKey, rows: int, compute_s: float, input_s: float, output_s: float
    ) -> None:
        self.statistics.batch(key, rows, compute_s, input_s, output_s)
        m = self.metrics
        m.child(m.batch_size, key.name).observe(rows)
        m.child(m.compute_seconds, key.name).observe(compute_s)

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None, rows: int | None = None
    ) -> asyncio.Future[InferenceResult]:
        """Validate and queue ``request``; the future resolves to its result.

        A request that names no version goes through the router (rollouts) first. Bad input
        raises at once (InvalidArgument, NotFound, ResourceExhausted, DeadlineExceeded);
        cancelling the future withdraws the request. ``rows``: the batch size when the inputs
        were already validated against ``spec`` (a session request, checked from its header);
        they are validated again only if another version serves them.
        """
        if self.router is not None and not request.model_version:
            routed = self.router.submit(request, spec)
            if routed is not None:
                return routed
        return self.submit_direct(request, spec, rows)

    def submit_direct(
        self, request: InferenceRequest, spec: ModelSpec | None = None, rows: int | None = None
    ) -> asyncio.Future[InferenceResult]:
        """:meth:`submit` without the router (the router itself calls this)."""
        if spec is None or (request.model_version and request.model_version != spec.version):
            spec = self.repository.resolve(request.model_name, request.model_version)
            rows = None
        if rows is None:
            rows = validate_inputs(spec, request.inputs)
        if request.outputs:
            check_outputs(spec, request.outputs)
        self.repository.check_visible(spec)  # resolved already, unless the caller passed it
        principal = current_principal()
        self.backend.admit(spec.key, request.inputs)  # e.g. an image's header, before queueing
        if not request.device_id and principal.authenticated_by not in ("internal", "insecure"):
            request.device_id = principal.subject  # records name the real caller
        if request.idempotency_key and self.idempotency is not None:
            # Keys are the caller's own (another device's key is another key); the digest is the
            # device's payload digest (sessions) or the gateway's own hash of the inputs.
            key = idempotency_key(principal, request.idempotency_key)
            digest = request.payload_digest or bytes.fromhex(
                content_hash(request.inputs, request.outputs)
            )
            return asyncio.ensure_future(self._infer_idempotent(request, spec, rows, key, digest))
        if self._cache_applies(spec, request):
            return asyncio.ensure_future(self._infer_cached(request, spec, rows))
        return self._enqueue(request, spec, rows)

    def _enqueue(
        self, request: InferenceRequest, spec: ModelSpec, rows: int
    ) -> asyncio.Future[InferenceResult]:
        fut = self.batcher(spec.key).submit(
            request.inputs,
            rows,
            request.outputs,
            request.deadline,
            int(request.priority),
            flow=request.device_id,
        )
        fut.add_done_callback(self._observe_queue)
        return fut

    def _observe_queue(self, fut: asyncio.Future[InferenceResult]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            r = fut.result()
            m = self.metrics
            m.child(m.queue_seconds, r.model_name).observe(r.queue_s)

    # -- result cache ------------------------------------------------------------------------

    def _cache_applies(self, spec: ModelSpec, request: InferenceRequest) -> bool:
        if self.result_cache is None or (request.kserve and not self.cache_kserve):
            return False
        return self.cache_tail_segments if spec.cut_point else self.cache_full_models

    async def _infer_cached(
        self, request: InferenceRequest, spec: ModelSpec, rows: int, key: str = ""
    ) -> InferenceResult:
        assert self.result_cache is not None
        model = f"{spec.name}:{spec.version}"
        digest = content_hash(request.inputs, request.outputs)
        m = self.metrics
        try:
            hit = await self.result_cache.get(model, digest)
        except Exception as exc:  # a cache fault is a miss
            log.warning("result cache get failed: %s", exc)
            hit = None
        if hit is not None:
            m.child(m.cache_requests, spec.name, "hit").inc()
            return _as_cached(hit.result(spec.name, spec.version))
        m.child(m.cache_requests, spec.name, "miss").inc()
        self.statistics.cache_missed(spec.key)
        fut = self._enqueue(request, spec, rows)
        if key:
            self._queued_keys[key] = (spec.key, fut)
        try:
            result = await fut
        finally:
            if key:
                self._queued_keys.pop(key, None)
        try:
            await self.result_cache.put(model, digest, CacheEntry.of(result))
        except Exception as exc:
            log.warning("result cache put failed: %s", exc)
        return result

    # -- idempotency -------------------------------------------------------------------------

    async def _infer_idempotent(
        self, request: InferenceRequest, spec: ModelSpec, rows: int, key: str, digest: bytes
    ) -> InferenceResult:
        """Claim the key in the store (atomic across replicas), compute once, complete.

        Duplicates inside this process share the owner's computation; the store makes
        duplicates on other replicas wait for it. A client that goes away withdraws the
        computation only while it is still queued; once computing it finishes and is stored,
        so a retry never computes the key again.
        """
        assert self.idempotency is not None
        while (running := self._inflight_keys.get(key)) is not None:
            try:
                return _as_cached(await asyncio.shield(running))
            except asyncio.CancelledError:
                if running.cancelled():
                    continue  # the owner was withdrawn before computing: claim it here
                raise
        work = asyncio.ensure_future(self._claim_and_compute(request, spec, rows, key, digest))
        self._inflight_keys[key] = work
        self._owned.add(work)
        work.add_done_callback(lambda f: self._settled(key, f))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            queued = self._queued_keys.get(key)
            if queued is not None:
                batcher = self._batchers.get(queued[0])
                if batcher is not None:
                    batcher.withdraw(queued[1])  # only while still queued
            raise

    def _settled(self, key: str, work: asyncio.Future[InferenceResult]) -> None:
        if self._inflight_keys.get(key) is work:
            del self._inflight_keys[key]
        self._owned.discard(work)  # type: ignore[arg-type]
        if not work.cancelled():
            work.exception()  # retrieved: waiters and the owner re-raise it themselves

    async def _claim_and_compute(
        self, request: InferenceRequest, spec: ModelSpec, rows: int, key: str, digest: bytes
    ) -> InferenceResult:
        assert self.idempotency is not None
        stored = await self.idempotency.reserve(key, digest)
        m = self.metrics
        if stored is not None:
            m.child(m.idempotency, "stored").inc()
            return _as_cached(stored)
        try:
            if self._cache_applies(spec, request):
                result = await self._infer_cached(request, spec, rows, key)
            else:
                fut = self._enqueue(request, spec, rows)
                self._queued_keys[key] = (spec.key, fut)
                try:
                    result = await fut
                finally:
                    self._queued_keys.pop(key, None)
        except BaseException:
            await asyncio.shield(self.idempotency.release(key))
            raise
        m.child(m.idempotency, "cached" if result.cached else "computed").inc()
        await self.idempotency.complete(key, digest, result)
        return result

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Run ``request`` to completion (submit and await)."""
        return await self.submit(request)

    # -- records -----------------------------------------------------------------------------

    def record(
        self,
        request: InferenceRequest,
        status: str,
        result: InferenceResult | None = None,
        bytes_in: int = 0,
    ) -> None:
        """Count a finished request and hand its record to the metadata sink (never raises)."""
        m = self.metrics
        m.child(m.requests, request.model_name, request.api, status).inc()
        if status != "OK" and result is None:
            m.child(m.rejections, status).inc()
        end = time.monotonic()
        region = m.region(request.region)
        m.child(
            m.request_duration, request.model_name, request.api, region, request.device_class
        ).observe(end - request.received_at)
        try:
            ids = trace_request(request, status, result, end)
            log_request(request, status, result, region, end - request.received_at, ids)
        except Exception:
            log.exception("tracing or access log failed")
        for observe in self.observers:
            try:
                observe(request, status, result)
            except Exception:  # an observer fault must never fail inference
                log.exception("request observer failed")
        if self.metadata_sink is discard_record:
            return
        try:
            rec = request_record(self.repository, request, status, result, bytes_in)
            rec.region = region
            self.metadata_sink(rec)
        except Exception:  # a sink fault must never fail inference
            log.exception("metadata sink failed")

    def record_telemetry(self, events: Sequence[TelemetryEvent], dropped: int = 0) -> int:
        """Count device telemetry (route, device-side latency, bytes) and hand each event to the
        telemetry sink; never blocks or raises. Returns the events accepted."""
        n = record_telemetry(self.metrics, self.telemetry_sink, events, dropped)
        for observe in self.telemetry_observers:
            try:
                observe(events)
            except Exception:
                log.exception("telemetry observer failed")
        return n

    def report_device(self, report: DeviceReport) -> None:
        """Take what a telemetry batch says about its device (replay backlog)."""
        self.fleet.report(report)

    def upkeep(self) -> None:
        """Periodic bookkeeping (the gateway's model-health watcher calls it): count batch
        worker restarts, forget devices that stopped reporting."""
        m = self.metrics
        for key, batcher in self._batchers.items():
            restarts = int(getattr(batcher, "restarts", 0))
            seen = self._restarts.get(key, 0)
            if restarts > seen:
                m.child(m.batch_worker_restarts, key.name).inc(restarts - seen)
            self._restarts[key] = restarts
        self.fleet.expire()


def _as_cached(result: InferenceResult) -> InferenceResult:
    return InferenceResult(
        result.model_name,
        result.model_version,
        result.outputs,
        cached=True,
        batch_size=result.batch_size,
    )


def monotonic_deadline(seconds_left: float | None) -> float | None:
    """A monotonic deadline ``seconds_left`` from now (None stays None)."""
    return None if seconds_left is None else time.monotonic() + seconds_left


__all__ = ["DataPlane", "content_hash", "monotonic_deadline"]
