"""Cascades between different models (FR-004): a small model on the device answers, a larger one
in the cloud refines what it is unsure of, from the original input.

:class:`Cascade` runs a pipeline locally (PP-OCRv4 on the edge); every line whose calibrated
confidence is below the description's ``cascade.threshold`` is cut out of the original frame by
its box (``crop_line``: the region, not the edge model's features), resized to the cloud
recogniser's input height and handed to ``refine`` — an async function that gets the region
tensor ``[1, 3, H, W]`` to the cloud model and returns its outputs
(``edge_agent.session_refiner`` sends it over the device's session to the gateway). The cloud
model answers its best path (``best_path_model``: the class and its probability per step, 12
bytes a step) or its full step probabilities; either is decoded with the cloud model's own
character list and scored like a local line.
Each answer says where it came from (``route``: ``edge`` or ``cloud``); a line the cloud could
not refine (an error, a deadline) keeps the edge's reading with route ``edge_fallback``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from common.errors import AimlError, BundleError, InvalidArgument
from common.pipeline._confidence import Line, apply_calibration, line_score
from common.pipeline._ctc import (
    BEST,
    BEST_PROB,
    Decoded,
    charset_from_metadata,
    ctc_best_path,
    ctc_greedy,
)
from common.pipeline._recognize import crop_line
from common.pipeline._runner import Pipeline
from common.pipeline._spec import CascadeSpec

log = logging.getLogger(__name__)

Refine = Callable[[npt.NDArray[np.float32]], Awaitable[Mapping[str, npt.NDArray[Any]]]]
"""Region tensor ``[1, 3, H, W]`` -> the cloud recogniser's outputs by name: ``best`` and
``best_prob`` (``[1, T]``, cascade ``cloud_output: best_path``) or one ``[1, T, classes]``
matrix (``probs``)."""


@dataclass(frozen=True)
class RoutedLine:
    """One line of a cascade's answer and where it was read."""

    line: Line
    route: str
    """``edge`` (confident enough), ``cloud`` (refined) or ``edge_fallback`` (refining failed)."""
    edge: Line
    """The edge's own reading of the line."""
    error: str = ""
    """Why refining failed (route ``edge_fallback``)."""


def region_input(
    bgr: npt.NDArray[np.uint8], box: Any, height: int, min_width: int, max_width: int
) -> npt.NDArray[np.float32]:
    """``[1, 3, height, W]``: the box's region of the frame, upright, resized to ``height``
    keeping its aspect ratio (``W`` within [min_width, max_width]), scaled to [-1, 1]."""
    crop = crop_line(bgr, np.asarray(box, np.float32))
    h, w = crop.shape[:2]
    width = min(max_width, max(min_width, math.ceil(height * w / max(h, 1))))
    x = cv2.resize(crop, (width, height)).astype(np.float32).transpose(2, 0, 1) / 255
    return np.ascontiguousarray(((x - 0.5) / 0.5)[None])


def stack_regions(
    regions: Sequence[npt.NDArray[np.float32]],
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """The regions of one frame (each ``[1, C, H, W_i]``) as one batch ``[N, C, H, max W_i]``,
    so that they travel in one request and run through the recogniser in one call: each is
    padded on the right with 0 (mid-grey in [-1, 1], what PP-OCR's batched recognition pads
    with). Returns the batch and each region's own width."""
    if not regions:
        raise InvalidArgument("stack_regions: no regions")
    shapes = {(r.ndim, r.shape[0], *r.shape[1:3]) for r in regions}
    if len(shapes) != 1 or next(iter(shapes))[:2] != (4, 1):
        raise InvalidArgument(
            f"stack_regions: regions must be [1, C, H, W] of one C and H, got "
            f"{sorted({r.shape for r in regions})}"
        )
    widths = [int(r.shape[3]) for r in regions]
    _, c, h, _ = regions[0].shape
    batch = np.zeros((len(regions), c, h, max(widths)), np.float32)
    for i, r in enumerate(regions):
        batch[i, :, :, : widths[i]] = r[0]
    return batch, widths


class Cascade:
    """A pipeline with a ``cascade`` section, its doubtful lines refined through ``refine``."""

    def __init__(self, pipeline: Pipeline, refine: Refine, threshold: float | None = None) -> None:
        spec = pipeline.spec.cascade
        if spec is None:
            raise BundleError(f"pipeline {pipeline.name} has no cascade section")
        self.pipeline = pipeline
        self.spec: CascadeSpec = spec
        self.refine = refine
        self.threshold = spec.threshold if threshold is None else threshold
        self._charset: list[str] | None = None

    @property
    def charset(self) -> list[str]:
        """The cloud recogniser's classes (blank, its characters, space), from its metadata."""
        if self._charset is None:
            import onnx

            path = self.pipeline.model_path(self.spec.charset)
            model = onnx.load(str(path), load_external_data=False)
            meta = {p.key: p.value for p in model.metadata_props}
            self._charset = charset_from_metadata(meta, self.spec.charset_key)
        return self._charset

    async def __call__(self, bgr: npt.NDArray[np.uint8]) -> list[RoutedLine]:
        """The lines of one BGR frame; the local pipeline runs off the event loop."""
        lines: list[Line] = (await asyncio.to_thread(self.pipeline, bgr))["lines"]
        doubtful = [i for i, ln in enumerate(lines) if ln.confidence < self.threshold]
        refined = await asyncio.gather(*(self._refine(bgr, lines[i]) for i in doubtful))
        out = [RoutedLine(ln, "edge", ln) for ln in lines]
        for i, routed in zip(doubtful, refined, strict=True):
            out[i] = routed
        return out

    async def _refine(self, bgr: npt.NDArray[np.uint8], edge: Line) -> RoutedLine:
        s = self.spec
        x = region_input(bgr, edge.box, s.height, s.min_width, s.max_width)
        try:
            outputs = await self.refine(x)
            decoded = self._decode(outputs)
        except (AimlError, BundleError) as exc:
            log.info("cascade: keeping the edge's line %r: %s", edge.text, exc)
            return RoutedLine(edge, "edge_fallback", edge, error=str(exc))
        raw = line_score(decoded, "min")
        confidence = float(apply_calibration([raw], s.calibration)[0])
        line = Line(decoded.text, confidence, line_score(decoded, "mean"), edge.box)
        return RoutedLine(line, "cloud", edge)

    def _decode(self, outputs: Mapping[str, npt.NDArray[Any]]) -> Decoded:
        if self.spec.cloud_output == "probs":
            if not outputs:
                raise BundleError("the cloud model answered no output")
            return ctc_greedy(np.asarray(next(iter(outputs.values())))[0], self.charset)
        missing = [n for n in (BEST, BEST_PROB) if n not in outputs]
        if missing:
            raise BundleError(
                f"the cloud model answered {sorted(outputs)}, not {missing} (serve the "
                "recogniser with its best-path head: aiml021 ctc-head)"
            )
        return ctc_best_path(outputs[BEST][0], outputs[BEST_PROB][0], self.charset)


__all__ = ["Cascade", "Refine", "RoutedLine", "region_input", "stack_regions"]
