"""One request's answer, whichever way it came: the open request's bookkeeping and the
:class:`EdgeResult` built from a local exit, a cache hit or the cloud's answer (with its timing),
keeping the result cache current on the way."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from edge_agent import _convert as conv
from edge_agent._cache import CachedAnswer, ResultCache
from edge_agent._features import EncodedFeatures
from edge_agent._runtime import EdgeRuntime, HeadState
from edge_agent._types import EdgeResult, ExitOutput, Route, Timing


@dataclasses.dataclass
class OpenRequest:
    """A request between ``EdgeAgent.infer`` and its answer."""

    request_id: str
    key: str
    """Idempotency key (the request id unless the caller gave one)."""
    t0: float
    """``time.perf_counter()`` when the request was opened."""
    deadline: float
    """``time.time()`` instant the answer is due."""
    state: HeadState
    cache_key: str | None
    """Content hash of the prepared input, when the result cache is on."""


class Answers:
    """Builds the :class:`EdgeResult` of a request and puts what it answered in the cache."""

    def __init__(
        self, runtime: EdgeRuntime, cache: ResultCache, embedding_tensor: str | None
    ) -> None:
        self._runtime = runtime
        self._cache = cache
        self._embedding_tensor = embedding_tensor
        self.caching = True
        """False once this bundle was swapped out: answers of requests still finishing on it
        no longer go into the cache the new bundle answers from."""

    def label(self, top: int) -> str | None:
        """The class name of ``top`` (None when the bundle names no such class)."""
        classes = self._runtime.classes
        return classes[top] if 0 <= top < len(classes) else None

    def timing(self, req: OpenRequest, **parts: float) -> Timing:
        """Head compute and total time so far, plus the given parts."""
        total = (time.perf_counter() - req.t0) * 1e3
        return Timing(edge_compute_ms=req.state.compute_s * 1e3, total_ms=total, **parts)

    def embedding(self, req: OpenRequest) -> np.ndarray | None:
        """The request's embedding for the similarity cache (None when that is off)."""
        if self._cache.similarity is None or self._embedding_tensor is None:
            return None
        return self._runtime.embedding(req.state, self._embedding_tensor)

    def from_cache(self, req: OpenRequest, hit: CachedAnswer) -> EdgeResult:
        """The answer of a cache hit (exact or similar)."""
        return EdgeResult(
            request_id=req.request_id,
            idempotency_key=req.key,
            top_class=hit.top_class,
            confidence=hit.confidence,
            route=Route.CACHE,
            exit_index=hit.exit_index,
            exit_name=hit.exit_name,
            label=self.label(hit.top_class),
            timing=self.timing(req),
            cache_hit=True,
        )

    def local(self, req: OpenRequest, ex: ExitOutput, route: Route, **kw: Any) -> EdgeResult:
        """The answer of exit ``ex`` on the device; an ``edge`` answer is cached. ``encode_ms``
        and ``network_ms`` go into the timing, other keywords into the result."""
        if route is Route.EDGE and req.cache_key is not None and self.caching:
            self._cache.put(req.cache_key, _cached(ex), self.embedding(req))
        parts = {k: kw.pop(k) for k in ("encode_ms", "network_ms") if k in kw}
        return EdgeResult(
            request_id=req.request_id,
            idempotency_key=req.key,
            top_class=ex.top_class,
            confidence=ex.confidence,
            route=route,
            exit_index=ex.index,
            exit_name=ex.name,
            label=self.label(ex.top_class),
            timing=self.timing(req, **parts),
            exit_confidences=tuple(e.confidence for e in req.state.exits),
            **kw,
        )

    def cloud(
        self,
        req: OpenRequest,
        answer: conv.CloudAnswer,
        cut: str,
        feats: EncodedFeatures,
        encode_ms: float,
        rtt_ms: float,
    ) -> EdgeResult:
        """The gateway's answer to features coded at ``cut``, ``rtt_ms`` after sending them
        (the network share is what the gateway's own timing does not account for); cached."""
        server_ms = answer.queue_ms + answer.cloud_compute_ms + answer.decode_ms
        if req.cache_key is not None and self.caching:
            hit = CachedAnswer(answer.top_class, answer.confidence, -1, "cloud", "cloud")
            self._cache.put(req.cache_key, hit, self.embedding(req))
        return EdgeResult(
            request_id=req.request_id,
            idempotency_key=req.key,
            top_class=answer.top_class,
            confidence=answer.confidence,
            route=Route.CLOUD,
            exit_index=-1,
            exit_name="cloud",
            label=self.label(answer.top_class),
            timing=self.timing(
                req,
                encode_ms=encode_ms,
                network_ms=max(rtt_ms - server_ms, 0.0),
                cloud_compute_ms=answer.cloud_compute_ms,
                queue_ms=answer.queue_ms,
                decode_ms=answer.decode_ms,
            ),
            bytes_sent=len(feats.payload),
            cut_point=cut,
            codec=feats.codec,
            exit_confidences=tuple(e.confidence for e in req.state.exits),
        )


def _cached(ex: ExitOutput) -> CachedAnswer:
    return CachedAnswer(ex.top_class, ex.confidence, ex.index, ex.name, "edge")


__all__ = ["Answers", "OpenRequest"]
