"""In-process onnxruntime backend (CPU): one InferenceSession per model version.

Sessions run in a small thread pool so the event loop keeps reading streams while a batch
computes; onnxruntime releases the GIL inside ``run``. Models load (session creation and the
warm-up batch) on a thread of their own, so that loading one never queues another model's
batches behind it: with one compute thread, an administrator's unload-and-load of one model
raised the p99 of a device using another model 3.75x (median of 6, BENCHMARKS issue 13 wave 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from cloud.core import Backend, ModelKey, ModelSpec
from common.errors import InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)


class OnnxRuntimeBackend(Backend):
    """Runs ONNX models with onnxruntime on the CPU.

    ``intra_op_threads`` and ``inter_op_threads`` configure each session; ``workers`` is how many
    batches may compute at the same time (threads of the pool). With ``warmup`` each model
    computes one batch of ``max_batch_size`` zeros at load (:func:`_warm_up`).
    """

    def __init__(
        self,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        workers: int = 1,
        warmup: bool = True,
    ):
        self._intra = intra_op_threads
        self._inter = inter_op_threads
        self._warmup = warmup
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ort")
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-load")
        self._sessions: dict[ModelKey, ort.InferenceSession] = {}
        self._closed = False

    async def load(self, model: ModelSpec) -> None:
        if model.key in self._sessions:
            return
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._intra
        opts.inter_op_num_threads = self._inter
        loop = asyncio.get_running_loop()
        try:
            session = await loop.run_in_executor(
                self._loader,
                lambda: ort.InferenceSession(
                    str(model.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
                ),
            )
        except Exception as exc:  # onnxruntime raises its own types; name the file
            raise InvalidArgument(f"{model.onnx_path}: cannot load ONNX model: {exc}") from exc
        if self._warmup:
            await loop.run_in_executor(self._loader, _warm_up, session, model)
        self._sessions[model.key] = session
        log.info("loaded %s from %s", model.key, model.onnx_path)

    async def unload(self, key: ModelKey) -> None:
        self._sessions.pop(key, None)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise Unavailable("onnxruntime backend is closed")
        session = self._sessions.get(key)
        if session is None:
            raise NotFound(f"model {key} is not loaded")
        names = list(outputs) or [o.name for o in session.get_outputs()]
        feeds = dict(inputs)
        loop = asyncio.get_running_loop()
        try:
            values = await loop.run_in_executor(self._pool, session.run, names, feeds)
        except Exception as exc:
            raise InvalidArgument(f"model {key} rejected the input: {exc}") from exc
        return dict(zip(names, values, strict=True))

    def infer_sync(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Blocking variant of :meth:`infer` (reference runs in tests and tools)."""
        session = self._sessions[key]
        names = list(outputs) or [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(inputs)), strict=True))

    async def ready(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        self._sessions.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._loader.shutdown(wait=True, cancel_futures=True)


def _warm_up(session: ort.InferenceSession, model: ModelSpec) -> None:
    """Compute one batch of ``model.max_batch_size`` zeros, so that the session's memory arena
    grows at load to what the largest batch needs. Otherwise it grows under traffic each time a
    batch larger than any before arrives, and never shrinks: the reference model's RSS rose by
    10 MB over its first 2,000 batches of random sizes, then stayed flat; after this warm-up it
    stays flat from the first (issue 13: a bounded growth that looked like a slow leak for the
    first hour of a gateway). Models with a variable dimension besides the batch are not
    warmed (no one shape stands for their largest batch); a model that refuses zeros is served
    anyway."""
    shapes = [i.sample_shape() for i in model.inputs]
    if not shapes or any(d < 0 for shape in shapes for d in shape):
        return
    feeds = {
        i.name: np.zeros((model.max_batch_size, *shape), i.dtype)
        for i, shape in zip(model.inputs, shapes, strict=True)
    }
    try:
        session.run(None, feeds)
    except Exception as exc:
        log.info("%s: no warm-up batch (%s)", model.key, exc)


__all__ = ["OnnxRuntimeBackend"]
