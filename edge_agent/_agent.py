"""The edge agent: early exit on the device, offload over the session stream, result cache,
deadline fallback and offline replay, behind one ``async with EdgeAgent(...)`` object."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from common.bundle import Bundle, load_bundle
from common.errors import AimlError, FailedPrecondition, InvalidArgument
from edge_agent import _convert as conv
from edge_agent._cache import CachedAnswer, ResultCache, content_key
from edge_agent._features import EncodedFeatures, encode_features, entropy_models, model_for
from edge_agent._load import EdgeLoad
from edge_agent._policy_engine import default_policy, device_profile, guarded_decide
from edge_agent._replay import ReplayQueue, load_key
from edge_agent._replay_worker import ReplayWorker
from edge_agent._runtime import EdgeRuntime, HeadState
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient
from edge_agent._telemetry import AgentStats, TelemetryBuffer, event_of, telemetry_loop
from edge_agent._types import EdgeResult, ExitOutput, Reconciliation, Route, Timing
from policy import Action, DecisionContext, FallbackPolicy, Policy, PolicySnapshot

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


def channel_credentials(settings: EdgeSettings) -> grpc.ChannelCredentials | None:
    """mTLS credentials from ``settings.tls.dir`` (None for an insecure channel)."""
    if settings.tls.insecure or settings.tls.dir is None:
        return None
    d = settings.tls.dir
    try:
        ca = (d / settings.tls.ca_file).read_bytes()
        cert = (d / (settings.tls.cert_file or f"{settings.device_id}.pem")).read_bytes()
        key = (d / (settings.tls.key_file or f"{settings.device_id}.key")).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"tls.dir {d}: cannot read {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


@dataclasses.dataclass
class _Request:
    request_id: str
    key: str
    t0: float
    deadline: float  # time.time() instant
    state: HeadState
    cache_key: str | None


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
        src = bundle if bundle is not None else self.settings.bundle
        if src is None:
            raise InvalidArgument("no bundle: pass bundle= or set bundle (AIML021_EDGE_BUNDLE)")
        self.bundle = src if isinstance(src, Bundle) else load_bundle(src)
        self.runtime = EdgeRuntime(self.bundle, threads=self.settings.runtime.intra_op_threads)
        self._entropy_models = entropy_models(self.bundle)
        self._load = EdgeLoad()
        self.model_name = self.settings.model_name or self.bundle.name
        self._policy_cut: str | None = None
        self._policy_codec: str | None = None
        profile = device_profile(
            self.runtime, {c.name: self._cut_codec(c.name) for c in self.bundle.cut_points}
        )
        self.policy: Policy = policy or default_policy(profile)
        self._fallback = FallbackPolicy(profile)
        self._applied_policy: tuple[str, int] | None = None
        self._credentials = credentials
        self._on_reconcile = on_reconcile
        st = self.settings
        self.cache = ResultCache(st.cache.entries, st.cache.ttl_s, st.cache.similarity)
        first_cut = self.bundle.cut_points[0].name if self.bundle.cut_points else None
        self._embedding_tensor = st.cache.embedding or first_cut
        self.stats = AgentStats()
        self.telemetry = TelemetryBuffer(st.telemetry.buffer)
        self.client: SessionClient | None = None
        self.replay: ReplayQueue | None = None
        self._replay_exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._compute_exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker: ReplayWorker | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False

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
        st = self.settings
        if st.runtime.compute_in_thread:
            self._compute_exec = concurrent.futures.ThreadPoolExecutor(1, "aiml021-head")
        if st.replay.path is not None:
            key = load_key(st.replay.path, st.replay.key, st.replay.key_file)
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
            creds = self._credentials or channel_credentials(st)
            self.client = SessionClient(
                st.gateway,
                st,
                credentials=creds,
                on_policy=self._apply_policy,
                agent_version=AGENT_VERSION,
            )
            self.client.start()
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
            if self.replay is not None:
                self._worker = ReplayWorker(self, self.client, self.replay)
                self._tasks.append(asyncio.create_task(self._worker.run()))

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
        if self._compute_exec is not None:
            self._compute_exec.shutdown(wait=True)
            self._compute_exec = None
        self._started = False

    async def _step(self, state: HeadState) -> list[ExitOutput]:
        if self._compute_exec is None:
            return self.runtime.step(state)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._compute_exec, self.runtime.step, state)

    async def _run_to_end(self, state: HeadState) -> None:
        while not self.runtime.done(state):
            await self._step(state)

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
        self.runtime.set_thresholds(by_exit)
        self.policy.set_thresholds(by_exit)
        self._fallback.set_thresholds(by_exit)

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
        return self.client.send_telemetry(conv.telemetry(self.settings.device_id, events, dropped))

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
        t0 = time.perf_counter()
        sla = (deadline_ms if deadline_ms is not None else self.settings.routing.sla_ms) / 1e3
        x = self.runtime.prepare(sample)
        rid = uuid.uuid4().hex
        req = _Request(
            rid, idempotency_key or rid, t0, time.time() + sla, self.runtime.start(x), None
        )
        result = self._lookup_exact(req, x)
        if result is None:
            result = await self._route(req)
        self.stats.add(result)
        self.telemetry.record(event_of(result, self.model_name))
        return result

    def _lookup_exact(self, req: _Request, x: np.ndarray) -> EdgeResult | None:
        if not self.cache.enabled:
            return None
        req.cache_key = content_key(x)
        hit = self.cache.get(req.cache_key)
        return None if hit is None else self._from_cache(req, hit)

    def _from_cache(self, req: _Request, hit: CachedAnswer) -> EdgeResult:
        return EdgeResult(
            request_id=req.request_id,
            idempotency_key=req.key,
            top_class=hit.top_class,
            confidence=hit.confidence,
            route=Route.CACHE,
            exit_index=hit.exit_index,
            exit_name=hit.exit_name,
            label=self._label(hit.top_class),
            timing=self._timing(req),
            cache_hit=True,
        )

    async def _route(self, req: _Request) -> EdgeResult:
        rt, state = self.runtime, req.state
        checked_similar = self.cache.similarity is None or not self.cache.enabled
        while True:
            exits = await self._step(state)
            if not checked_similar and self._embedding_tensor in state.tensors:
                checked_similar = True
                emb = rt.embedding(state, self._embedding_tensor)
                hit = self.cache.get_similar(emb) if emb is not None else None
                if hit is not None:
                    return self._from_cache(req, hit)
            if not exits:
                continue
            ex = exits[-1]
            if rt.done(state):
                return self._local(req, ex, Route.EDGE)
            ctx = self._context(req, ex)
            decision = guarded_decide(self.policy, self._fallback, ctx)
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
                return self._local(req, ex, Route.EDGE)
            if action is Action.CONTINUE_LOCAL:
                continue
            if action is Action.DEFER:
                return await self._defer(req, decision.cut_point)
            return await self._offload(req, decision.cut_point, decision.codec)

    def _cut_codec(self, cut: str, override: str | None = None) -> str:
        if override:
            return override
        if self.settings.routing.codec:
            return self.settings.routing.codec
        if self._policy_codec:
            return self._policy_codec
        spec = self.bundle.cut_point(cut).codec
        return spec.default if spec is not None else "raw"

    def _context(self, req: _Request, ex: ExitOutput) -> DecisionContext:
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
                for c in self.runtime.available_cuts(state)
                if wanted is None or c.name == wanted
            ),
            replay_available=self.replay is not None,
        )

    def _timing(self, req: _Request, **parts: float) -> Timing:
        total = (time.perf_counter() - req.t0) * 1e3
        return Timing(edge_compute_ms=req.state.compute_s * 1e3, total_ms=total, **parts)

    def _label(self, top: int) -> str | None:
        classes = self.runtime.classes
        return classes[top] if 0 <= top < len(classes) else None

    def _local(self, req: _Request, ex: ExitOutput, route: Route, **kw: Any) -> EdgeResult:
        if route is Route.EDGE and req.cache_key is not None:
            self.cache.put(req.cache_key, self._cached(ex), self._embedding(req))
        parts = {k: kw.pop(k) for k in ("encode_ms", "network_ms") if k in kw}
        return EdgeResult(
            request_id=req.request_id,
            idempotency_key=req.key,
            top_class=ex.top_class,
            confidence=ex.confidence,
            route=route,
            exit_index=ex.index,
            exit_name=ex.name,
            label=self._label(ex.top_class),
            timing=self._timing(req, **parts),
            exit_confidences=tuple(e.confidence for e in req.state.exits),
            **kw,
        )

    def _cached(self, ex: ExitOutput, origin: str = "edge") -> CachedAnswer:
        return CachedAnswer(ex.top_class, ex.confidence, ex.index, ex.name, origin)

    def _embedding(self, req: _Request) -> np.ndarray | None:
        if self.cache.similarity is None or self._embedding_tensor is None:
            return None
        return self.runtime.embedding(req.state, self._embedding_tensor)

    async def _features(
        self, req: _Request, cut: str | None, codec: str | None
    ) -> tuple[str, EncodedFeatures, float]:
        state = req.state
        names = [c.name for c in self.bundle.cut_points]
        name = cut or (self.runtime.available_cuts(state) or self.bundle.cut_points)[-1].name
        if name not in names:
            raise InvalidArgument(f"policy chose unknown cut point {name!r} (known: {names})")
        while name not in state.tensors and not self.runtime.done(state):
            await self._step(state)
        t = time.perf_counter()
        spec = self._cut_codec(name, codec)
        feats = encode_features(
            state.tensors[name], spec, model_for(self._entropy_models, name, spec)
        )
        return name, feats, (time.perf_counter() - t) * 1e3

    def outbound(
        self,
        req_id: str,
        key: str,
        cut: str,
        feats: EncodedFeatures,
        deadline: float,
        deferred: bool = False,
        confidences: tuple[float, ...] = (),
        entropy: float = 0.0,
    ) -> conv.OutboundRequest:
        """The stream request for coded features (also used by the replay worker)."""
        net = self.client.net if self.client else None
        return conv.OutboundRequest(
            request_id=req_id,
            idempotency_key=key,
            model_name=self.model_name,
            model_version=self.settings.model_version,
            cut_point=cut,
            features=feats,
            deadline=deadline,
            digest=hashlib.sha256(feats.payload).digest(),
            deferred=deferred,
            rtt_s=net.rtt_s if net else 0.0,
            bandwidth_bps=net.bandwidth_bps if net else 0.0,
            exit_confidences=confidences,
            entropy=entropy,
            device_class=self.settings.device_class,
            edge_load=self._load.value(),
        )

    async def _offload(self, req: _Request, cut: str, codec: str) -> EdgeResult:
        assert self.client is not None
        name, feats, encode_ms = await self._features(req, cut or None, codec or None)
        state = req.state
        out = self.outbound(
            req.request_id,
            req.key,
            name,
            feats,
            req.deadline,
            confidences=tuple(e.confidence for e in state.exits),
            entropy=state.exits[-1].entropy if state.exits else 0.0,
        )
        t_send = time.perf_counter()
        fut = self.client.submit(out)
        budget = req.deadline - time.time() - self.settings.routing.fallback_margin_ms / 1e3
        error: str
        try:
            answer = await asyncio.wait_for(asyncio.shield(fut), max(budget, 0.0))
        except TimeoutError:
            self.client.cancel(req.request_id)
            error = "deadline: the cloud answer could not arrive in time"
        except AimlError as exc:
            self.client.cancel(req.request_id)
            error = f"{exc.code.value}: {exc.message}"
        else:
            rtt_ms = (time.perf_counter() - t_send) * 1e3
            server_ms = answer.queue_ms + answer.cloud_compute_ms + answer.decode_ms
            if req.cache_key is not None:
                hit = CachedAnswer(answer.top_class, answer.confidence, -1, "cloud", "cloud")
                self.cache.put(req.cache_key, hit, self._embedding(req))
            return EdgeResult(
                request_id=req.request_id,
                idempotency_key=req.key,
                top_class=answer.top_class,
                confidence=answer.confidence,
                route=Route.CLOUD,
                exit_index=-1,
                exit_name="cloud",
                label=self._label(answer.top_class),
                timing=self._timing(
                    req,
                    encode_ms=encode_ms,
                    network_ms=max(rtt_ms - server_ms, 0.0),
                    cloud_compute_ms=answer.cloud_compute_ms,
                    queue_ms=answer.queue_ms,
                    decode_ms=answer.decode_ms,
                ),
                bytes_sent=len(feats.payload),
                cut_point=name,
                codec=feats.codec,
                exit_confidences=tuple(e.confidence for e in state.exits),
            )
        await self._run_to_end(state)
        best = state.best_exit()
        assert best is not None
        queued = False
        if self.settings.routing.defer_on_fallback and self.replay is not None:
            queued = await self._enqueue(req, name, feats, best)
        return self._local(
            req,
            best,
            Route.EDGE_FALLBACK,
            encode_ms=encode_ms,
            bytes_sent=len(feats.payload),
            cut_point=name,
            codec=feats.codec,
            error=error,
            queued=queued,
        )

    async def _defer(self, req: _Request, cut: str) -> EdgeResult:
        name, feats, encode_ms = await self._features(req, cut or None, None)
        await self._run_to_end(req.state)
        best = req.state.best_exit()
        assert best is not None
        if self.replay is None:
            return self._local(req, best, Route.EDGE)
        queued = await self._enqueue(req, name, feats, best)
        return self._local(
            req,
            best,
            Route.DEFERRED if queued else Route.EDGE,
            encode_ms=encode_ms,
            cut_point=name,
            codec=feats.codec,
            queued=queued,
        )

    async def _enqueue(
        self, req: _Request, cut: str, feats: EncodedFeatures, best: ExitOutput
    ) -> bool:
        assert self.replay is not None
        meta: dict[str, object] = {
            "request_id": req.request_id,
            "model_name": self.model_name,
            "model_version": self.settings.model_version,
            "cut_point": cut,
            "codec": feats.codec,
            "dtype": feats.dtype,
            "shape": list(feats.shape),
            "original_bytes": feats.original_bytes,
            "crc32c": feats.crc32c,
            "framed": feats.framed,
            "local_top_class": best.top_class,
            "local_confidence": best.confidence,
        }
        replay = self.replay
        outcome = await self._in_replay(lambda: replay.enqueue(req.key, meta, feats.payload))
        for report in outcome.dropped:
            self.reconcile(report)
        if self._worker is not None:
            self._worker.wake()
        return bool(outcome.queued or outcome.duplicate)

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
        return out


__all__ = ["AGENT_VERSION", "EdgeAgent", "channel_credentials"]
