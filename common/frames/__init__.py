"""Labelled text frames rendered with PIL and DejaVu fonts: OCR data that needs no download.

Deterministic from a seed; two variants (``easy``, ``hard``); three splits (``calibration``,
``validation``, ``test``) drawn from independent seed streams::

    frame = render_frame(seed=0, variant="hard", split="test", index=3)
    frame.image, frame.lines[0].text, frame.lines[0].box
    write_frame_set("frames/", seed=0, variant="hard", counts={"test": 100})
"""

from common.frames._io import (
    GROUND_TRUTH,
    SCHEMA,
    frame_record,
    iter_frames,
    load_frame_set,
    write_frame_set,
)
from common.frames._render import (
    FONT_DIR_ENV,
    FONTS,
    SPLITS,
    VARIANTS,
    Frame,
    TextLine,
    VariantSpec,
    font_dir,
    frame_seed,
    render_frame,
)
from common.frames._text import KINDS, label_text

__all__ = [
    "FONTS",
    "FONT_DIR_ENV",
    "GROUND_TRUTH",
    "KINDS",
    "SCHEMA",
    "SPLITS",
    "VARIANTS",
    "Frame",
    "TextLine",
    "VariantSpec",
    "font_dir",
    "frame_record",
    "frame_seed",
    "iter_frames",
    "label_text",
    "load_frame_set",
    "render_frame",
    "write_frame_set",
]
