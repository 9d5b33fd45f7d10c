"""Detector steps: image -> DB detector input, and DB probability map -> text boxes.

The DB (Differentiable Binarization) detector outputs, per pixel, the probability that it lies
in the shrunk core of a text region. Its post-processing binarises the map, takes each connected
region's contour, fits a rotated rectangle, scores it by the mean probability inside, expands
("unclips") it by ``area * ratio / perimeter`` with a rounded polygon offset (pyclipper, the
Vatti clipper used by DB's reference implementation), fits a rectangle again and maps it back to
the original image. Parameters and their defaults are PaddleOCR's and rapidocr's.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pyclipper

from common.pipeline._registry import Models, step

Boxes = npt.NDArray[np.float32]
"""Quadrilaterals, shape (N, 4, 2): top-left, top-right, bottom-right, bottom-left (x, y)."""


def target_size(
    h: int, w: int, side: int, limit: str = "min", multiple: int = 32
) -> tuple[int, int]:
    """(height, width) the detector sees: scaled so the short side reaches ``side`` (``limit``
    "min": small images grow) or the long side stays within it ("max": large images shrink),
    each rounded to a multiple of ``multiple`` (the detector downsamples by 32)."""
    if limit == "min":
        ratio = side / min(h, w) if min(h, w) < side else 1.0
    elif limit == "max":
        ratio = side / max(h, w) if max(h, w) > side else 1.0
    else:
        raise ValueError(f"limit must be 'min' or 'max', not {limit!r}")
    rh = max(int(round(int(h * ratio) / multiple) * multiple), multiple)
    rw = max(int(round(int(w * ratio) / multiple) * multiple), multiple)
    return rh, rw


def normalise(
    image: npt.NDArray[np.uint8], mean: list[float], std: list[float]
) -> npt.NDArray[np.float32]:
    """HWC uint8 -> 1xCxHxW float32 of ``(v / 255 - mean) / std`` per channel."""
    x = (image.astype(np.float32) * (1.0 / 255.0) - np.asarray(mean)) / np.asarray(std)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


@step("det_preprocess")
def det_preprocess(
    models: Models,
    image: npt.NDArray[np.uint8],
    short_side: int = 736,
    limit: str = "min",
    multiple: int = 32,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> npt.NDArray[np.float32]:
    """BGR HxWx3 uint8 frame -> the detector's 1x3xH'xW' input (bilinear resize)."""
    h, w = image.shape[:2]
    rh, rw = target_size(h, w, short_side, limit, multiple)
    resized = np.asarray(cv2.resize(image, (rw, rh)), np.uint8)
    return normalise(resized, list(mean), list(std))


@step("onnx")
def onnx_step(models: Models, x: npt.NDArray[np.float32], model: str) -> npt.NDArray[np.float32]:
    """Run ``model`` on one input; its first output."""
    return models.run(model, x)


def min_box(points: npt.NDArray[Any]) -> tuple[Boxes, float]:
    """The minimum-area rectangle around ``points`` as (tl, tr, br, bl) and its short side."""
    rect = cv2.minAreaRect(np.asarray(points, np.float32).reshape(-1, 1, 2))
    corners = cv2.boxPoints(rect)
    by_x = corners[np.argsort(corners[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = (left[0], left[1]) if left[1, 1] > left[0, 1] else (left[1], left[0])
    tr, br = (right[0], right[1]) if right[1, 1] > right[0, 1] else (right[1], right[0])
    return np.stack([tl, tr, br, bl]).astype(np.float32), float(min(rect[1]))


def mean_inside(prob: npt.NDArray[np.float32], quad: Boxes) -> float:
    """Mean probability over the pixels of ``quad`` (filled polygon), within its bounding box."""
    h, w = prob.shape
    xs, ys = quad[:, 0], quad[:, 1]
    x0, x1 = int(np.clip(np.floor(xs.min()), 0, w - 1)), int(np.clip(np.ceil(xs.max()), 0, w - 1))
    y0, y1 = int(np.clip(np.floor(ys.min()), 0, h - 1)), int(np.clip(np.ceil(ys.max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = (quad - np.array([x0, y0], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [shifted.reshape(-1, 1, 2)], 1)
    inside = prob[y0 : y1 + 1, x0 : x1 + 1][mask > 0]
    return float(inside.astype(np.float64).mean()) if inside.size else 0.0


def unclip(quad: Boxes, ratio: float) -> npt.NDArray[np.float64]:
    """Grow ``quad`` outwards by ``area * ratio / perimeter`` (rounded joins); its points."""
    x, y = quad[:, 0].astype(np.float64), quad[:, 1].astype(np.float64)
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    perimeter = float(np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1).sum())
    if perimeter == 0:
        return np.zeros((0, 2))
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(quad.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / perimeter)
    return np.asarray([p for poly in grown for p in poly], np.float64).reshape(-1, 2)


def order_corners(quad: Boxes) -> Boxes:
    """Corners as (tl, tr, br, bl): the two leftmost by y, then the two rightmost by y."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.stack([left[0], right[0], right[1], left[1]]).astype(np.float32)


def reading_order(boxes: Boxes, same_line_px: float = 10.0) -> Boxes:
    """Top to bottom by the top-left corner; boxes whose tops differ by less than
    ``same_line_px`` go left to right (one insertion pass, as PaddleOCR orders them)."""
    ordered = sorted(boxes, key=lambda b: (float(b[0, 1]), float(b[0, 0])))
    for i in range(len(ordered) - 1):
        j = i
        while j >= 0:
            a, b = ordered[j], ordered[j + 1]
            if abs(float(b[0, 1]) - float(a[0, 1])) < same_line_px and b[0, 0] < a[0, 0]:
                ordered[j], ordered[j + 1] = b, a
                j -= 1
            else:
                break
    return np.asarray(ordered, np.float32).reshape(-1, 4, 2)


@step("db_boxes")
def db_boxes(
    models: Models,
    prob: npt.NDArray[np.float32],
    image: npt.NDArray[np.uint8],
    thresh: float = 0.3,
    box_thresh: float = 0.5,
    unclip_ratio: float = 1.6,
    dilate: bool = True,
    max_candidates: int = 1000,
    min_size: float = 3.0,
) -> tuple[Boxes, npt.NDArray[np.float64]]:
    """DB probability map (1x1xH'xW') -> boxes in ``image`` pixels (reading order), box scores."""
    ph, pw = int(prob.shape[-2]), int(prob.shape[-1])
    p = np.asarray(prob, np.float32).reshape(ph, pw)
    h, w = image.shape[:2]
    mask = (p > thresh).astype(np.uint8)
    if dilate:
        mask = np.asarray(cv2.dilate(mask, np.ones((2, 2), np.uint8)), np.uint8)
    contours = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[-2]
    found: list[tuple[Boxes, float]] = []
    for contour in contours[:max_candidates]:
        quad, short = min_box(contour)
        if short < min_size:
            continue
        score = mean_inside(p, quad)
        if score < box_thresh:
            continue
        grown = unclip(quad, unclip_ratio)
        if len(grown) < 3:
            continue
        quad, short = min_box(grown)
        if short < min_size + 2:
            continue
        quad[:, 0] = np.clip(np.round(quad[:, 0] / pw * w), 0, w)
        quad[:, 1] = np.clip(np.round(quad[:, 1] / ph * h), 0, h)
        # Clockwise corners, clipped to the last pixel; slivers (<= 3 px) are noise.
        quad = order_corners(quad)
        quad[:, 0] = np.clip(quad[:, 0], 0, w - 1).astype(np.int32)
        quad[:, 1] = np.clip(quad[:, 1], 0, h - 1).astype(np.int32)
        if (
            int(np.linalg.norm(quad[0] - quad[1])) <= 3
            or int(np.linalg.norm(quad[0] - quad[3])) <= 3
        ):
            continue
        found.append((quad, score))
    if not found:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0)
    boxes = reading_order(np.stack([q for q, _ in found]))
    by_corners = {q.tobytes(): s for q, s in found}
    return boxes, np.asarray([by_corners[b.tobytes()] for b in boxes])


__all__ = [
    "Boxes",
    "db_boxes",
    "det_preprocess",
    "mean_inside",
    "min_box",
    "normalise",
    "order_corners",
    "reading_order",
    "target_size",
    "unclip",
]
