"""The edge agent: early exit on the device, offload over the session stream, result cache,
deadline fallback and offline replay, behind one ``async with EdgeAgent(...)`` object."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from common.bundle import Bundle, load_bundle
from common.errors import FailedPrecondition, InvalidArgument
from common.telemetry import configure_tracing, shutdown_tracing, tracer
from edge_agent import _convert as conv
from edge_agent._answer import OpenRequest
from edge_agent._cache import ResultCache, content_key
from edge_agent._enrollment import DeviceCertificate
from edge_agent._follow import BundleFollower, bundle_updater
from edge_agent._load import EdgeLoad
from edge_agent._loaded import LoadedBundle
from edge_agent._loaded import load as load_bundle_graph
from edge_agent._offload import Offloader
from edge_agent._policy_engine import guarded_decide
from edge_agent._privacy import FeaturePrivacy
from edge_agent._replay import ReplayQueue, load_key
from edge_agent._replay_worker import ReplayWorker
from edge_agent._runtime import EdgeRuntime
from edge_agent._settings import EdgeSettings
from edge_agent._stream import Credentials, SessionClient
from edge_agent._telemetry import (
    AgentStats,
    TelemetryBuffer,
    event_of,
    log_answer,
    telemetry_loop,
)
from edge_agent._types import EdgeResult, ExitOutput, Reconciliation, Route
from policy import Action, DecisionContext, Policy, PolicySnapshot

if TYPE_CHECKING:
    from edge_agent._prometheus import MetricsEndpoint

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


class EdgeAgent:
    """Embeddable edge agent. ``async with EdgeAgent(settings) as agent: await agent.infer(x)``.

    ``policy`` decides after each non-confident exit (default: the policy engine's heuristic
    on this device's measured profile; a fault or an answer the device cannot carry out falls back
    to :class:`policy.FallbackPolicy`); ``on_reconcile`` is called for every replay
    entry that is delivered, expires, is lost (tampered/corrupted) or dropped.
    """

    def __init__(
        self,
        settings: EdgeSettings | None = None,
        *,
        bundle: Bundle | str | Path | None = None,
        policy: Policy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        on_reconcile: Callable[[Reconciliation], None] | None = None,
    ) -> None:
        self.settings = settings or EdgeSettings()
        st = self.settings
        self._updater = bundle_updater(st)
        installed = self._updater.current if self._updater is not None else None
        src = installed or (bundle if bundle is not None else st.bundle)
        if src is None:
            raise InvalidArgument(
                "no bundle: pass bundle=, set bundle (AIML021_EDGE_BUNDLE) or follow an "
                "assignment (artifacts.bucket) with one installed in artifacts.root"
            )
        self._load = EdgeLoad()
        self._policy_cut: str | None = None
        self._policy_codec: str | None = None
        self._app_policy = policy
        self._applied_policy: tuple[str, int] | None = None
        self._thresholds: dict[str, float] = {}
        """Thresholds pushed by the gateway, applied again to a bundle swapped in."""
        st_cache = st.cache
        self.cache = ResultCache(st_cache.entries, st_cache.ttl_s, st_cache.similarity)
        first = src if isinstance(src, Bundle) else load_bundle(src)
        self._model = self._build(first, installed)
        self._follower: BundleFollower | None = None
        self._credentials = credentials
        self.certificate: DeviceCertificate | None = None
        """The device certificate (enrollment, renewal) when the agent reads it from tls.dir."""
        self._on_reconcile = on_reconcile
        self.stats = AgentStats()
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.metrics_port: int | None = None
        """Port of the Prometheus endpoint once started (``metrics.port``; None: none)."""
        self.telemetry = TelemetryBuffer(st.telemetry.buffer)
        self.client: SessionClient | None = None
        self.replay: ReplayQueue | None = None
        self._replay_backlog = 0
        self._replay_exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker: ReplayWorker | None = None
        self._model.offload = self._offloader(self._model)
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False

    # -- the bundle it runs ------------------------------------------------------------------
    @property
    def bundle(self) -> Bundle:
        """The bundle new requests start on."""
        return self._model.bundle

    @property
    def runtime(self) -> EdgeRuntime:
        return self._model.runtime

    @property
    def policy(self) -> Policy:
        return self._model.policy

    @property
    def privacy(self) -> FeaturePrivacy | None:
        return self._model.privacy

    @property
    def model_name(self) -> str:
        return self._model.model_name

    @property
    def model_version(self) -> str:
        """The bundle version declared to the gateway (empty: its rollout chooses)."""
        return self._model.model_version

    def _build(
        self, bundle: Bundle, path: Path | None, previous: LoadedBundle | None = None
    ) -> LoadedBundle:
        loaded = load_bundle_graph(
            bundle,
            self.settings,
            self.cache,
            self._cut_codec,
            policy=self._app_policy,
            follows_assignment=self._updater is not None,
            accountant_from=previous.privacy if previous is not None else None,
            path=path,
        )
        if self._thresholds:
            loaded.runtime.set_thresholds(self._thresholds)
            loaded.fallback.set_thresholds(self._thresholds)
            if self._app_policy is None:
                loaded.policy.set_thresholds(self._thresholds)
        return loaded

    def _build_installed(self, path: Path) -> LoadedBundle:
        return self._build(load_bundle(path), path, self._model)

    def _swap(self, loaded: LoadedBundle) -> None:
        """New requests start on ``loaded``; those running finish on the bundle they started
        on, whose compute thread stops after them."""
        old = self._model
        loaded.offload = self._offloader(loaded)
        if self._started:
            loaded.head.start()
        self._model = loaded
        self.cache.clear()  # answers of the old bundle are not the new one's
        old.retire()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> EdgeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the replay queue and the session stream (in the background)."""
        if self._started:
            return
        self._started = True
        metrics = self.settings.metrics
        if metrics.port is not None:
            from edge_agent._prometheus import MetricsEndpoint

            self._metrics_endpoint = MetricsEndpoint(
                self, asyncio.get_running_loop(), metrics.host, metrics.port
            )
            self.metrics_port = self._metrics_endpoint.port
        tel = self.settings.telemetry
        if tel.otlp_endpoint:
            configure_tracing(
                "aiml021-edge", tel.otlp_endpoint, sample_ratio=tel.trace_sample_ratio
            )
        st = self.settings
        self._model.head.start()
        if self._updater is not None:
            self._follower = BundleFollower(
                self._updater,
                st.artifacts,
                current=lambda: self._model,
                build=self._build_installed,
                swap=self._swap,
            )
            try:  # before the session opens: it declares what the device runs from the start
                await self._follower.check()
            except Exception as exc:
                log.error("bundle assignment not checked at start (running %s): %s",
                          self._model.label, exc)  # fmt: skip
        if st.replay.path is not None:
            key = load_key(st.replay.path, st.replay.key, st.replay.key_file, st.device_id)
            self._replay_exec = concurrent.futures.ThreadPoolExecutor(1, "aiml021-replay")
            self.replay = await self._in_replay(
                lambda: ReplayQueue(
                    st.replay.path,  # type: ignore[arg-type]
                    key,
                    st.replay.retention_s,
                    st.replay.max_entries,
                    st.replay.max_bytes,
                    st.replay.full_policy,
                )
            )
            for report in self.replay.lost_reports:
                self.reconcile(report)
        if st.gateway:
            creds: Credentials | None = self._credentials
            if creds is None and not st.tls.insecure and st.tls.dir is not None:
                self.certificate = DeviceCertificate(st)
                await self.certificate.ensure_enrolled()
                self.certificate.credentials()  # a bad key file fails start(), precisely
                creds = self.certificate.credentials
                if self.certificate.managed:
                    self._tasks.append(asyncio.create_task(self.certificate.run()))
            self.client = SessionClient(
                st.gateway,
                st,
                credentials=creds,
                on_policy=self._apply_policy,
                agent_version=AGENT_VERSION,
                bundles=self._declared(),
                on_refused=self._follower.refused if self._follower is not None else None,
            )
            self.client.start()
            if self.replay is not None:
                self._worker = ReplayWorker(self, self.client, self.replay)
        self._model.offload = self._offloader(self._model)
        if self._follower is not None:
            self._follower.client = self.client
            # start() checked once already
            first = st.artifacts.check_interval_s
            self._tasks.append(asyncio.create_task(self._follower.run(first)))
        if self.client is not None:
            self._tasks.append(
                asyncio.create_task(
                    telemetry_loop(
                        self.telemetry,
                        self._send_telemetry,
                        st.telemetry.batch,
                        st.telemetry.interval_s,
                    )
                )
            )
        if self._worker is not None:
            self._tasks.append(asyncio.create_task(self._worker.run()))

    def _declared(self) -> list[tuple[str, str]]:
        m = self._model
        return [(m.model_name, m.model_version)] if m.model_version else []

    def _offloader(self, m: LoadedBundle) -> Offloader:
        # Built again by start() with the stream and queue it opened, and for each new bundle.
        return Offloader(
            settings=self.settings,
            model_name=m.model_name,
            model_version=m.model_version,
            head=m.head,
            answers=m.answers,
            load=self._load,
            client=self.client,
            replay=self.replay,
            in_replay=self._in_replay,
            reconcile=self.reconcile,
            wake=self._worker.wake if self._worker is not None else None,
        )

    async def close(self) -> None:
        """Stop background work, close the stream and the queue."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.client is not None:
            await self.client.close()
        if self.replay is not None:
            await self._in_replay(self.replay.close)
        if self._replay_exec is not None:
            self._replay_exec.shutdown(wait=True)
        self._model.head.close()
        if self.settings.telemetry.otlp_endpoint:  # the last spans reach the collector
            await asyncio.to_thread(shutdown_tracing)
        if self._metrics_endpoint is not None:
            await asyncio.to_thread(self._metrics_endpoint.close)
            self._metrics_endpoint = None
        self._started = False

    async def _in_replay(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._replay_exec, fn)

    def reconcile(self, report: Reconciliation) -> None:
        """Hand one replay outcome to the application's callback (errors are logged)."""
        if self._on_reconcile is None:
            return
        try:
            self._on_reconcile(report)
        except Exception:
            log.exception("reconciliation callback failed for entry %s", report.entry_id)

    @property
    def connected(self) -> bool:
        """True while the session stream is open."""
        return self.client is not None and self.client.connected

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - like asyncio.wait_for
        """Wait for the session stream (False without a gateway or on timeout)."""
        return self.client is not None and await self.client.wait_connected(timeout)

    def set_thresholds(self, by_exit: dict[str, float]) -> None:
        """Replace per-exit confidence thresholds (by exit name) in the runtime, the policy and
        the fallback rule; unknown exit names are ignored."""
        self._thresholds.update(by_exit)
        m = self._model
        m.runtime.set_thresholds(by_exit)
        m.policy.set_thresholds(by_exit)
        m.fallback.set_thresholds(by_exit)

    def _apply_policy(self, p: PolicySnapshot) -> None:
        # Welcome repeats the current policy on every reconnect: apply each version once, so a
        # reconnect does not undo what was applied since.
        if self._applied_policy == (p.policy_id, p.policy_version):
            return
        self._applied_policy = (p.policy_id, p.policy_version)
        self.set_thresholds(p.exit_thresholds)
        self._policy_cut = p.cut_point or None
        self._policy_codec = p.codec or None
        log.info("policy %s v%s applied", p.policy_id, p.policy_version)

    def _send_telemetry(self, events: list[dict[str, object]], dropped: int) -> bool:
        if self.client is None or not self.client.connected:
            return False
        st = self.settings
        frame = conv.telemetry(
            st.device_id,
            events,
            dropped,
            region=st.region,
            device_class=st.device_class,
            replay_backlog=self._replay_backlog,
        )
        if self.replay is not None and self._replay_exec is not None:
            # counted on the replay thread (its database's only user); the next batch carries it
            fut = asyncio.get_running_loop().run_in_executor(self._replay_exec, len, self.replay)
            fut.add_done_callback(self._set_backlog)
        return self.client.send_telemetry(frame)

    async def metrics_snapshot(self) -> dict[str, Any]:
        """:meth:`metrics` plus the replay backlog (counted now), the latency histogram and
        whether the stream is open: what the Prometheus endpoint exports."""
        replay = self.replay
        if replay is not None and self._replay_exec is not None:
            self._replay_backlog = await self._in_replay(replay.__len__)
        out = self.metrics()
        out["replay_backlog"] = self._replay_backlog
        out["latency"] = self.stats.latency.snapshot()
        out["connected"] = self.connected
        return out

    def _set_backlog(self, fut: asyncio.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._replay_backlog = fut.result()

    # -- inference ---------------------------------------------------------------------------
    async def infer(
        self,
        sample: np.ndarray,
        *,
        deadline_ms: float | None = None,
        idempotency_key: str | None = None,
    ) -> EdgeResult:
        """Answer one input (uint8 image or preprocessed float32): locally when an exit is
        confident, else as the policy decides; never later than the deadline."""
        if not self._started:
            raise FailedPrecondition("EdgeAgent.infer before start(); use 'async with'")
        with tracer("aiml021.edge").start_as_current_span("aiml021.edge.infer") as span:
            result = await self._infer(sample, deadline_ms, idempotency_key)
            span.set_attribute("aiml021.route", result.route.value)
            span.set_attribute("aiml021.request_id", result.request_id)
            log_answer(result, self.model_name)
            return result

    async def _infer(
        self, sample: np.ndarray, deadline_ms: float | None, idempotency_key: str | None
    ) -> EdgeResult:
        t0 = time.perf_counter()
        sla = (deadline_ms if deadline_ms is not None else self.settings.routing.sla_ms) / 1e3
        rid = uuid.uuid4().hex
        key, deadline = idempotency_key or rid, time.time() + sla
        m = self._model
        try:
            result = await self._answer(m, sample, rid, key, t0, deadline)
        except Exception as exc:
            # A bundle that fails in service is rolled back; the last known good one answers.
            if self._follower is None or not await self._follower.failed_in_service(m, exc):
                raise
            m = self._model
            result = await self._answer(m, sample, uuid.uuid4().hex, key, t0, deadline)
        self.stats.add(result)
        self.telemetry.record(event_of(result, m.model_name))
        return result

    async def _answer(
        self, m: LoadedBundle, sample: np.ndarray, rid: str, key: str, t0: float, deadline: float
    ) -> EdgeResult:
        """Answer on bundle ``m`` from start to end, even when another is swapped in meanwhile."""
        m.enter()
        try:
            x = m.runtime.prepare(sample)
            req = OpenRequest(rid, key, t0, deadline, m.runtime.start(x), None)
            result = self._lookup_exact(m, req, x) or await self._route(m, req)
        finally:
            m.leave()
        return dataclasses.replace(result, bundle_version=m.bundle.manifest.version)

    def _lookup_exact(self, m: LoadedBundle, req: OpenRequest, x: np.ndarray) -> EdgeResult | None:
        if not self.cache.enabled:
            return None
        req.cache_key = f"{m.bundle.name}/{m.bundle.manifest.version}/{content_key(x)}"
        hit = self.cache.get(req.cache_key)
        return None if hit is None else m.answers.from_cache(req, hit)

    async def _route(self, m: LoadedBundle, req: OpenRequest) -> EdgeResult:
        rt, state = m.runtime, req.state
        assert m.offload is not None
        checked_similar = self.cache.similarity is None or not self.cache.enabled
        while True:
            exits = await m.head.step(state)
            if not checked_similar and m.embedding_tensor in state.tensors:
                checked_similar = True
                emb = rt.embedding(state, m.embedding_tensor)
                hit = self.cache.get_similar(emb) if emb is not None else None
                if hit is not None:
                    return m.answers.from_cache(req, hit)
            if not exits:
                continue
            ex = exits[-1]
            if rt.done(state):
                return m.answers.local(req, ex, Route.EDGE)
            ctx = self._context(m, req, ex)
            decision = guarded_decide(m.policy, m.fallback, ctx)
            action = decision.action
            if (
                action is Action.CONTINUE_LOCAL
                and not ctx.link_up
                and ctx.replay_available
                and ctx.cut_points
                and not ex.confident
            ):
                # Offline with a replay queue: the rest of the chain still gives the local
                # answer, and the features are queued so the cloud refines it later.
                action = Action.DEFER
            if action is Action.EXIT_LOCAL:
                return m.answers.local(req, ex, Route.EDGE)
            if action is Action.CONTINUE_LOCAL:
                continue
            if action is Action.DEFER:
                return await m.offload.defer(req, decision.cut_point)
            return await m.offload.offload(req, decision.cut_point, decision.codec)

    def _cut_codec(self, bundle: Bundle, cut: str, override: str | None = None) -> str:
        if override:
            return override
        if self.settings.routing.codec:
            return self.settings.routing.codec
        if self._policy_codec:
            return self._policy_codec
        spec = bundle.cut_point(cut).codec
        return spec.default if spec is not None else "raw"

    def _context(self, m: LoadedBundle, req: OpenRequest, ex: ExitOutput) -> DecisionContext:
        state = req.state
        wanted = self.settings.routing.cut_point or self._policy_cut
        client = self.client
        connected = client is not None and client.connected
        elapsed_ms = (time.perf_counter() - req.t0) * 1e3
        return DecisionContext(
            exit_index=ex.index,
            confidences=tuple(e.confidence for e in state.exits),
            entropy=ex.entropy,
            rtt_ms=client.net.rtt_s * 1e3 if client else 0.0,
            bandwidth_mbps=client.net.bandwidth_bps / 1e6 if client and connected else 0.0,
            edge_load=self._load.value(),
            deadline_ms=elapsed_ms + (req.deadline - time.time()) * 1e3,
            elapsed_ms=elapsed_ms,
            device_class=self.settings.device_class,
            device_id=self.settings.device_id,
            request_id=req.request_id,
            cut_points=tuple(
                c.name
                for c in m.runtime.available_cuts(state)
                if wanted is None or c.name == wanted
            ),
            replay_available=self.replay is not None,
        )

    @property
    def outbound(self) -> Callable[..., conv.OutboundRequest]:
        """The stream request for coded features (``Offloader.outbound``; also used by the
        replay worker)."""
        assert self._model.offload is not None
        return self._model.offload.outbound

    # -- metrics -----------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Everything the agent counts, as plain data."""
        out: dict[str, Any] = {
            "requests": self.stats.requests,
            "routes": dict(self.stats.routes),
            "exits": dict(self.stats.exits),
            "bytes_sent": self.stats.bytes_sent,
            "latency_ms": self.stats.percentiles(),
            "cache": {
                **dataclasses.asdict(self.cache.metrics),
                "hit_rate": self.cache.metrics.hit_rate,
            },
            "telemetry": {"sent": self.telemetry.sent, "dropped": self.telemetry.dropped},
        }
        if self.client is not None:
            out["stream"] = dataclasses.asdict(self.client.metrics)
            out["network"] = {
                "rtt_ms": self.client.net.rtt_s * 1e3,
                "bandwidth_bps": self.client.net.bandwidth_bps,
            }
        if self.replay is not None:
            out["replay"] = dataclasses.asdict(self.replay.metrics)
        out["bundle"] = {"name": self.bundle.name, "version": self.bundle.manifest.version}
        if self._follower is not None:
            out["bundle"].update(dataclasses.asdict(self._follower.metrics))
        return out


__all__ = ["AGENT_VERSION", "EdgeAgent"]
