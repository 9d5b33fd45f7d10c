"""Pipelines with Python steps served as models, beside the ONNX models of another backend.

:class:`PipelineBackend` wraps the gateway's backend: model versions whose spec names a pipeline
(``ModelSpec.pipeline``, a ``pipeline.json`` in the models directory, see
``cloud.core._pipeline_model`` for the tensors) run here, everything else goes to the wrapped
backend. A pipeline's ONNX stages are loaded into the onnxruntime backend (the wrapped one when
it is onnxruntime, else one of its own) as models of their own (``<name>/<model>``) and run by it;
its Python steps (DB post-processing, crops, CTC, calibration) run between them on the backend's
worker threads, never on the event loop.

Images are bounded before anything is decoded: :meth:`PipelineBackend.admit` (called by the data
plane before a request is queued) refuses an encoded image over ``max_image_bytes`` or whose
header declares more than ``max_image_pixels`` (RESOURCE_EXHAUSTED), and data that is no image
of a supported format (INVALID_ARGUMENT); reading a header takes microseconds, so a hostile
device's JPEG bomb or 30000x30000 header is answered at once and costs the other requests
nothing. The same check runs again on the worker thread before the decode itself.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud.backends._onnxruntime import OnnxRuntimeBackend
from cloud.core import Backend, ModelKey, ModelSpec
from common.errors import InvalidArgument, ResourceExhausted, Unavailable
from common.pipeline import Line, Pipeline

log = logging.getLogger(__name__)

IMAGE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "PPM"})
"""Encoded formats a pipeline decodes (what OpenCV reads and Pillow can size from a header)."""


def image_size(data: bytes, max_bytes: int, max_pixels: int) -> tuple[int, int]:
    """Width and height an encoded image's header declares, checked against the limits without
    decoding: ResourceExhausted over ``max_bytes`` or ``max_pixels``, InvalidArgument for data
    that is no image of :data:`IMAGE_FORMATS`."""
    if len(data) > max_bytes:
        raise ResourceExhausted(
            f"image of {len(data)} bytes is over the limit of {max_bytes} "
            "(pipelines.max_image_bytes)"
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=sorted(IMAGE_FORMATS)) as im:
            width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ResourceExhausted(
            f"image is over the limit of {max_pixels} pixels (pipelines.max_image_pixels): {exc}"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(
            f"input 'image' is not an encoded image ({', '.join(sorted(IMAGE_FORMATS))}): {exc}"
        ) from None
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ResourceExhausted(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (pipelines.max_image_pixels)"
        )
    return width, height


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> npt.NDArray[np.uint8]:
    """The BGR image of ``data`` after :func:`image_size` accepted it (blocking: call it on a
    worker thread)."""
    import cv2

    width, height = image_size(data, max_bytes, max_pixels)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] * bgr.shape[1] != width * height:
        raise InvalidArgument(f"input 'image' ({width}x{height}) cannot be decoded")
    return np.asarray(bgr, np.uint8)


def lines_to_tensors(lines: Sequence[Line]) -> dict[str, np.ndarray]:
    """One image's lines as the pipeline model's outputs (batch dimension 1)."""
    doc = [ln.to_json() for ln in lines]
    body = json.dumps(doc, default=float).encode()
    texts = [ln.text.encode() for ln in lines]
    width = max((len(t) for t in texts), default=0)
    text = np.zeros((1, len(texts), width), np.uint8)
    for i, t in enumerate(texts):
        text[0, i, : len(t)] = np.frombuffer(t, np.uint8)
    return {
        "lines": np.frombuffer(body, np.uint8)[None].copy(),
        "boxes": np.asarray([ln.box for ln in lines], np.float32).reshape(1, len(lines), 4, 2),
        "confidence": np.asarray([ln.confidence for ln in lines], np.float32)[None],
        "text": text,
    }


class _ServedPipeline(Pipeline):
    """A pipeline whose ONNX stages run on the gateway's onnxruntime backend."""

    def __init__(self, base: Pipeline, stages: OnnxRuntimeBackend, keys: dict[str, Any]) -> None:
        super().__init__(base.spec, base.path, base.threads)
        self._stages = stages
        self._keys = keys  # model -> (ModelKey, input name, output name, metadata)

    def run(self, model: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        key, inp, out, _ = self._keys[model]
        feeds = {inp: np.ascontiguousarray(x, dtype=np.float32)}
        return np.asarray(self._stages.infer_sync(key, feeds, [out])[out])

    def metadata(self, model: str) -> dict[str, str]:
        return dict(self._keys[model][3])


class PipelineBackend(Backend):
    """Serves pipeline model versions; delegates every other version to ``inner``.

    ``stages`` runs the pipelines' ONNX models (default: ``inner`` when it is an
    :class:`OnnxRuntimeBackend`, else a one-thread onnxruntime backend of its own); ``workers``
    images run at the same time.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        max_image_bytes: int = 8 * 1024 * 1024,
        max_image_pixels: int = 4096 * 4096,
        workers: int = 1,
        stages: OnnxRuntimeBackend | None = None,
    ) -> None:
        self.inner = inner
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._own_stages = stages is None and not isinstance(inner, OnnxRuntimeBackend)
        if stages is None:
            stages = inner if isinstance(inner, OnnxRuntimeBackend) else OnnxRuntimeBackend()
        self.stages = stages
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pipeline")
        self._pipelines: dict[ModelKey, _ServedPipeline] = {}
        self._stage_keys: dict[ModelKey, list[ModelKey]] = {}
        self._closed = False

    async def load(self, model: ModelSpec) -> None:
        if model.pipeline is None:
            await self.inner.load(model)
            return
        if model.key in self._pipelines:
            return
        from common.pipeline import load_pipeline

        base = load_pipeline(model.pipeline, threads=1)
        keys: dict[str, Any] = {}
        for name in base.spec.models:
            path = base.model_path(name)
            # Parsing a stage's ONNX file (twice) held the event loop for up to 50 ms per stage
            # (PP-OCRv6's 20 MB recognizer) while the gateway served others: off the loop.
            stage, meta = await asyncio.to_thread(
                _stage_of, path, model.version, f"{model.name}/{name}"
            )
            await self.stages.load(stage)
            keys[name] = (stage.key, stage.inputs[0].name, stage.outputs[0].name, meta)
        self._stage_keys[model.key] = [k[0] for k in keys.values()]
        self._pipelines[model.key] = _ServedPipeline(base, self.stages, keys)
        log.info(
            "loaded pipeline %s from %s (%d ONNX stages)", model.key, model.pipeline, len(keys)
        )

    async def unload(self, key: ModelKey) -> None:
        if self._pipelines.pop(key, None) is None:
            await self.inner.unload(key)
            return
        for stage in self._stage_keys.pop(key, []):
            await self.stages.unload(stage)

    def admit(self, key: ModelKey, inputs: Mapping[str, np.ndarray]) -> None:
        if key not in self._pipelines:
            self.inner.admit(key, inputs)
            return
        for row in inputs["image"]:
            image_size(row.tobytes(), self.max_image_bytes, self.max_image_pixels)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            return await self.inner.infer(key, inputs, outputs)
        if self._closed:
            raise Unavailable("pipeline backend is closed")
        images = inputs.get("image")
        if images is None or images.ndim != 2 or len(images) != 1:
            raise InvalidArgument(f"model {key} takes one encoded image per request ([1, bytes])")
        data = images[0].tobytes()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, self._run, pipeline, data)
        return {n: result[n] for n in outputs} if outputs else result

    def _run(self, pipeline: _ServedPipeline, data: bytes) -> dict[str, np.ndarray]:
        start = time.thread_time()
        bgr = decode_image(data, self.max_image_bytes, self.max_image_pixels)
        try:
            lines = pipeline(bgr)["lines"]
        except InvalidArgument:
            raise
        except Exception as exc:  # a step that fails on one image fails only that request
            raise InvalidArgument(f"pipeline {pipeline.name} failed on the image: {exc}") from exc
        out = lines_to_tensors(lines)
        out["cpu_ms"] = np.full((1, 1), (time.thread_time() - start) * 1000, np.float32)
        return out

    async def ready(self) -> bool:
        return not self._closed and await self.inner.ready()

    async def close(self) -> None:
        self._closed = True
        self._pipelines.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._own_stages:
            await self.stages.close()
        await self.inner.close()


def _stage_of(path: Path, version: str, name: str) -> tuple[ModelSpec, dict[str, str]]:
    """A pipeline stage's spec and its ONNX metadata (both parse the file: run off the loop)."""
    from cloud.core import spec_from_onnx

    return spec_from_onnx(path, 64, version, name=name), _metadata(path)


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


__all__ = [
    "IMAGE_FORMATS",
    "PipelineBackend",
    "decode_image",
    "image_size",
    "lines_to_tensors",
]
