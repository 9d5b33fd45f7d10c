"""Line steps: crop each box to an upright line image, fix upside-down lines, recognise.

Crops are perspective-warped to the box's own width and height (bicubic, edges replicated), so a
rotated line becomes horizontal; a crop at least 1.5 times taller than wide is turned by 90°.
Recognisers take 3x48xW: a batch of lines (sorted by aspect ratio, so similar widths share a
batch) is resized to height 48 keeping the aspect ratio and right-padded with zeros to the
widest line of the batch (at least 320 px, the width the models were trained on).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from common.pipeline._detect import Boxes
from common.pipeline._registry import Models, step

Image = npt.NDArray[np.uint8]


def crop_line(image: Image, quad: Boxes) -> Image:
    """The quadrilateral's content as an upright rectangle (perspective warp)."""
    quad = np.asarray(quad, np.float32)
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    warp = cv2.getPerspectiveTransform(quad, target)
    crop = cv2.warpPerspective(
        image, warp, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] >= 1.5 * crop.shape[1]:
        crop = np.rot90(crop)
    return np.asarray(crop)


@step("crop_lines")
def crop_lines(models: Models, image: Image, boxes: Boxes) -> list[Image]:
    """One upright crop per box."""
    return [crop_line(image, b) for b in boxes]


def line_input(crop: Image, height: int, width: int) -> npt.NDArray[np.float32]:
    """3 x height x width: the crop resized to ``height`` (aspect kept, at most ``width``),
    scaled to [-1, 1], right-padded with zeros."""
    w = min(width, math.ceil(height * crop.shape[1] / crop.shape[0]))
    x = cv2.resize(crop, (w, height)).astype(np.float32).transpose(2, 0, 1) / 255
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = (x - 0.5) / 0.5
    return out


def batches(crops: list[Image], size: int) -> list[npt.NDArray[np.intp]]:
    """Crop indices in batches of ``size``, narrowest aspect ratio first."""
    order = np.argsort([c.shape[1] / c.shape[0] for c in crops])
    return [order[i : i + size] for i in range(0, len(order), size)]


@step("upright")
def upright(
    models: Models,
    crops: list[Image],
    model: str,
    height: int = 48,
    width: int = 192,
    batch: int = 6,
    thresh: float = 0.9,
    flipped_class: int = 1,
) -> list[Image]:
    """Rotate by 180° the crops the angle classifier calls upside down with probability
    above ``thresh`` (class ``flipped_class``); the others stay as they are."""
    out = list(crops)
    for idx in batches(crops, batch):
        probs = models.run(model, np.stack([line_input(crops[i], height, width) for i in idx]))
        for i, p in zip(idx, probs, strict=True):
            if int(p.argmax()) == flipped_class and float(p.max()) > thresh:
                out[i] = np.ascontiguousarray(np.rot90(crops[i], 2))
    return out


@step("recognize")
def recognize(
    models: Models,
    crops: list[Image],
    model: str,
    height: int = 48,
    min_width: int = 320,
    batch: int = 6,
) -> list[npt.NDArray[np.float32]]:
    """Per crop, the recogniser's CTC step probabilities (T x classes)."""
    out: list[npt.NDArray[np.float32]] = [np.zeros((0, 0), np.float32)] * len(crops)
    for idx in batches(crops, batch):
        ratio = max(min_width / height, *(crops[i].shape[1] / crops[i].shape[0] for i in idx))
        width = int(height * ratio)
        probs = models.run(model, np.stack([line_input(crops[i], height, width) for i in idx]))
        for i, p in zip(idx, probs, strict=True):
            out[i] = p
    return out


__all__ = ["batches", "crop_line", "crop_lines", "line_input", "recognize", "upright"]
