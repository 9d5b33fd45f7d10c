"""The offload path of a started agent: code the features at a cut point, send them on the
session stream with the request's deadline, fall back to the best local exit when the answer
cannot arrive in time (or fails), and defer features to the replay queue."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common.errors import AimlError, ResourceExhausted
from common.telemetry import traceparent, tracer
from edge_agent import _convert as conv
from edge_agent._answer import Answers, OpenRequest
from edge_agent._features import EncodedFeatures
from edge_agent._head import Head
from edge_agent._load import EdgeLoad
from edge_agent._replay import ReplayQueue
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient
from edge_agent._types import EdgeResult, ExitOutput, Reconciliation, Route


class Offloader:
    """Sends one agent's requests to the gateway (``client``, None without one) and defers them
    to its replay queue (``replay``, None without one). ``in_replay`` runs a call on the
    queue's thread, ``reconcile`` reports an entry dropped to make room, ``wake`` tells the
    replay worker something was queued."""

    def __init__(
        self,
        *,
        settings: EdgeSettings,
        model_name: str,
        model_version: str,
        head: Head,
        answers: Answers,
        load: EdgeLoad,
        client: SessionClient | None,
        replay: ReplayQueue | None,
        in_replay: Callable[[Callable[[], Any]], Awaitable[Any]],
        reconcile: Callable[[Reconciliation], None],
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._model_name = model_name
        self._model_version = model_version
        self._head = head
        self._answers = answers
        self._load = load
        self._client = client
        self._replay = replay
        self._in_replay = in_replay
        self._reconcile = reconcile
        self._wake = wake

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
        net = self._client.net if self._client else None
        return conv.OutboundRequest(
            request_id=req_id,
            idempotency_key=key,
            model_name=self._model_name,
            model_version=self._model_version,
            cut_point=cut,
            features=feats,
            deadline=deadline,
            digest=hashlib.sha256(feats.payload).digest(),
            deferred=deferred,
            rtt_s=net.rtt_s if net else 0.0,
            bandwidth_bps=net.bandwidth_bps if net else 0.0,
            exit_confidences=confidences,
            entropy=entropy,
            device_class=self._settings.device_class,
            edge_load=self._load.value(),
            region=self._settings.region,
            traceparent=traceparent(),
        )

    async def offload(self, req: OpenRequest, cut: str, codec: str) -> EdgeResult:
        """Send the features at ``cut`` (coded with ``codec``; empty strings: the defaults) and
        answer with the cloud's result, or with the best local exit (route ``edge_fallback``)
        when it cannot arrive ``fallback_margin_ms`` before the deadline or fails."""
        with tracer("aiml021.edge").start_as_current_span(
            "aiml021.edge.offload", attributes={"aiml021.cut_point": cut, "aiml021.codec": codec}
        ):
            return await self._offload(req, cut, codec)

    async def _offload(self, req: OpenRequest, cut: str, codec: str) -> EdgeResult:
        assert self._client is not None
        try:
            name, feats, encode_ms = await self._head.features(
                req.state, cut or None, codec or None
            )
        except ResourceExhausted as exc:  # the device's privacy budget is spent
            return await self._keep_local(req, exc)
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
        fut = self._client.submit(out)
        budget = req.deadline - time.time() - self._settings.routing.fallback_margin_ms / 1e3
        error: str
        try:
            answer = await asyncio.wait_for(asyncio.shield(fut), max(budget, 0.0))
        except TimeoutError:
            self._client.cancel(req.request_id)
            error = "deadline: the cloud answer could not arrive in time"
        except AimlError as exc:
            self._client.cancel(req.request_id)
            error = f"{exc.code.value}: {exc.message}"
        else:
            rtt_ms = (time.perf_counter() - t_send) * 1e3
            return self._answers.cloud(req, answer, name, feats, encode_ms, rtt_ms)
        await self._head.run_to_end(state)
        best = state.best_exit()
        assert best is not None
        queued = False
        if self._settings.routing.defer_on_fallback and self._replay is not None:
            queued = await self._enqueue(req, name, feats, best)
        return self._answers.local(
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

    async def defer(self, req: OpenRequest, cut: str) -> EdgeResult:
        """Answer with the best local exit and queue the features at ``cut`` for the cloud to
        refine later (route ``deferred``; ``edge`` when there is no queue or it refused)."""
        try:
            name, feats, encode_ms = await self._head.features(req.state, cut or None, None)
        except ResourceExhausted as exc:
            return await self._keep_local(req, exc)
        await self._head.run_to_end(req.state)
        best = req.state.best_exit()
        assert best is not None
        if self._replay is None:
            return self._answers.local(req, best, Route.EDGE)
        queued = await self._enqueue(req, name, feats, best)
        return self._answers.local(
            req,
            best,
            Route.DEFERRED if queued else Route.EDGE,
            encode_ms=encode_ms,
            cut_point=name,
            codec=feats.codec,
            queued=queued,
        )

    async def _keep_local(self, req: OpenRequest, exc: ResourceExhausted) -> EdgeResult:
        """Answer on the device when its features may not leave it (privacy budget spent)."""
        await self._head.run_to_end(req.state)
        best = req.state.best_exit()
        assert best is not None
        return self._answers.local(req, best, Route.EDGE, error=f"{exc.code.value}: {exc.message}")

    async def _enqueue(
        self, req: OpenRequest, cut: str, feats: EncodedFeatures, best: ExitOutput
    ) -> bool:
        assert self._replay is not None
        meta: dict[str, object] = {
            "request_id": req.request_id,
            "model_name": self._model_name,
            "model_version": self._model_version,
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
        replay = self._replay
        outcome = await self._in_replay(lambda: replay.enqueue(req.key, meta, feats.payload))
        for report in outcome.dropped:
            self._reconcile(report)
        if self._wake is not None:
            self._wake()
        return bool(outcome.queued or outcome.duplicate)


__all__ = ["Offloader"]
