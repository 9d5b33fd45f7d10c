"""Write a rendered frame set to a directory (images + one ground-truth JSON) and read it back.

Layout, one directory per variant::

    OUT/<variant>/frames.json                  ground truth (schema aiml021.frames/1)
    OUT/<variant>/<split>/<id>.png|.jpg        the frames
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import BundleError, InvalidArgument
from common.frames._render import HEIGHT, SPLITS, VARIANTS, WIDTH, Frame, render_frame

__all__ = [
    "GROUND_TRUTH",
    "SCHEMA",
    "frame_record",
    "iter_frames",
    "load_frame_set",
    "write_frame_set",
]

log = logging.getLogger(__name__)

SCHEMA = "aiml021.frames/1"
GROUND_TRUTH = "frames.json"
_SUFFIX = {"png": ".png", "jpeg": ".jpg"}


def iter_frames(seed: int, variant: str, counts: Mapping[str, int]) -> Iterator[Frame]:
    """Frames of ``variant`` for each split in ``counts`` (split -> number of frames)."""
    for split, n in counts.items():
        if n < 0:
            raise InvalidArgument(f"frame count for {split!r} must be >= 0, got {n}")
        for index in range(n):
            yield render_frame(seed, variant, split, index)


def frame_record(frame: Frame, file: str) -> dict[str, Any]:
    """The JSON ground truth of one frame."""
    return {
        "id": frame.id,
        "split": frame.split,
        "file": file,
        "lines": [
            {
                "text": line.text,
                "kind": line.kind,
                "box": [[round(x, 2), round(y, 2)] for x, y in line.box],
                "font": line.font,
                "size": line.size,
                "angle": line.angle,
            }
            for line in frame.lines
        ],
    }


def write_frame_set(
    out_dir: str | Path, seed: int, variant: str, counts: Mapping[str, int]
) -> Path:
    """Render and write one variant's frames; returns the path of its ``frames.json``."""
    if variant not in VARIANTS:
        raise InvalidArgument(f"unknown frame variant {variant!r} (known: {', '.join(VARIANTS)})")
    root = Path(out_dir) / variant
    records = []
    for frame in iter_frames(seed, variant, counts):
        rel = f"{frame.split}/{frame.id}{_SUFFIX[frame.format]}"
        (root / frame.split).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(frame.encoded)
        records.append(frame_record(frame, rel))
    doc = {
        "schema": SCHEMA,
        "variant": variant,
        "seed": seed,
        "width": WIDTH,
        "height": HEIGHT,
        "splits": {s: int(counts.get(s, 0)) for s in SPLITS},
        "frames": records,
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / GROUND_TRUTH
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %d %s frames to %s", len(records), variant, root)
    return path


def load_frame_set(
    path: str | Path, split: str | None = None
) -> tuple[dict[str, Any], list[tuple[np.ndarray, dict[str, Any]]]]:
    """Read ``frames.json`` (or its directory): the document and (RGB image, record) pairs."""
    from PIL import Image

    p = Path(path)
    p = p / GROUND_TRUTH if p.is_dir() else p
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{p}: cannot read the frame set: {exc}") from None
    if doc.get("schema") != SCHEMA:
        raise BundleError(f"{p}: schema {doc.get('schema')!r} is not {SCHEMA!r}")
    frames = []
    for rec in doc["frames"]:
        if split is not None and rec["split"] != split:
            continue
        with Image.open(p.parent / rec["file"]) as img:
            frames.append((np.asarray(img.convert("RGB")), rec))
    return doc, frames
