"""Render one labelled 1280×720 frame: label-like text lines with exact quadrilaterals.

Each line is drawn on its own transparent layer, rotated about the layer's centre and pasted; its
box is the tight ink box of the layer before rotation, rotated with the same transform, so it
contains every inked pixel (up to resampling). The *hard* variant uses small text (11–22 px),
rotation up to ±6°, lower contrast, blur, sensor noise and JPEG; the *easy* one large, upright,
sharp, high-contrast text stored losslessly.
"""

from __future__ import annotations

import io
import math
import os
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from common.errors import InvalidArgument, NotFound
from common.frames._text import label_text

__all__ = [
    "FONTS",
    "FONT_DIR_ENV",
    "SPLITS",
    "VARIANTS",
    "Frame",
    "TextLine",
    "VariantSpec",
    "font_dir",
    "frame_seed",
    "render_frame",
]

WIDTH, HEIGHT = 1280, 720
FONT_DIR_ENV = "AIML021_FONT_DIR"
DEFAULT_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSerif.ttf",
)
SPLITS = ("calibration", "validation", "test")


@dataclass(frozen=True)
class VariantSpec:
    """How one variant draws and degrades its frames."""

    sizes: tuple[int, int]
    """Font size range in pixels (inclusive)."""
    max_angle: float
    """Rotation drawn uniformly from [-max_angle, max_angle] degrees."""
    lines: tuple[int, int]
    """Number of text lines per frame (inclusive)."""
    contrast: tuple[int, int]
    """Range of the absolute grey-level difference between text and background."""
    blur: tuple[float, float]
    """Gaussian blur radius range (0 = sharp)."""
    noise: tuple[float, float]
    """Additive Gaussian noise sigma range in grey levels."""
    jpeg_quality: tuple[int, int] | None
    """JPEG quality range; None stores PNG."""


VARIANTS: dict[str, VariantSpec] = {
    "easy": VariantSpec((24, 40), 0.0, (6, 10), (140, 220), (0.0, 0.0), (0.0, 0.0), None),
    "hard": VariantSpec((11, 22), 6.0, (8, 14), (70, 150), (0.3, 1.0), (3.0, 8.0), (55, 85)),
}


@dataclass(frozen=True)
class TextLine:
    """One rendered line and its ground truth."""

    text: str
    kind: str
    box: tuple[tuple[float, float], ...]
    """Four corners (x, y) in frame pixels: top-left, top-right, bottom-right, bottom-left of the
    text as written (so the first edge runs along the baseline direction)."""
    font: str
    size: int
    angle: float
    """Counter-clockwise rotation in degrees."""


@dataclass(frozen=True)
class Frame:
    """A rendered frame: pixels, their encoded file and the ground truth lines."""

    id: str
    variant: str
    split: str
    index: int
    image: np.ndarray = field(repr=False)
    """uint8 HxWx3 RGB, exactly what ``encoded`` decodes to."""
    encoded: bytes = field(repr=False)
    format: str
    """``png`` or ``jpeg``."""
    lines: tuple[TextLine, ...]
    ink: tuple[tuple[int, int, np.ndarray], ...] = field(default=(), repr=False)
    """Per line (x0, y0, alpha mask) before blur/noise/JPEG, only with ``with_ink=True``."""


def font_dir() -> Path:
    """The DejaVu font directory (``AIML021_FONT_DIR`` or Debian's fonts-dejavu-core)."""
    d = Path(os.environ.get(FONT_DIR_ENV) or DEFAULT_FONT_DIR)
    if not (d / FONTS[0]).is_file():
        raise NotFound(
            f"DejaVu fonts not found in {d} (install the Debian package fonts-dejavu-core, "
            f"or set {FONT_DIR_ENV})"
        )
    return d


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def frame_seed(seed: int, variant: str, split: str, index: int) -> int:
    """Seed of one frame: independent streams per variant, split and index."""
    if variant not in VARIANTS:
        raise InvalidArgument(f"unknown frame variant {variant!r} (known: {', '.join(VARIANTS)})")
    if split not in SPLITS:
        raise InvalidArgument(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    words = [seed, list(VARIANTS).index(variant), SPLITS.index(split), index]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def _rotate_point(
    x: float, y: float, size: tuple[int, int], new: tuple[int, int], angle: float
) -> tuple[float, float]:
    # PIL's rotate(expand=True) turns counter-clockwise about the centre (y grows downwards).
    t = math.radians(angle)
    dx, dy = x - size[0] / 2, y - size[1] / 2
    return (
        new[0] / 2 + dx * math.cos(t) + dy * math.sin(t),
        new[1] / 2 - dx * math.sin(t) + dy * math.cos(t),
    )


def _background(rng: random.Random, spec: VariantSpec) -> tuple[Image.Image, int]:
    base = rng.randint(150, 235) if spec.jpeg_quality else rng.randint(200, 245)
    tint = [max(0, min(255, base + rng.randint(-12, 12))) for _ in range(3)]
    img = Image.new("RGB", (WIDTH, HEIGHT), tuple(tint))
    draw = ImageDraw.Draw(img)
    # Clutter that is not text: label patches, rules and a few blobs.
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(WIDTH), rng.randrange(HEIGHT)
        x1, y1 = x0 + rng.randint(80, 420), y0 + rng.randint(40, 220)
        shade = max(0, min(255, base + rng.randint(-25, 18)))
        draw.rectangle((x0, y0, x1, y1), fill=(shade, shade, shade))
    for _ in range(rng.randint(2, 5)):
        y = rng.randrange(HEIGHT)
        draw.line((0, y, WIDTH, y + rng.randint(-30, 30)), fill=(base - 40,) * 3, width=1)
    return img, base


def _line_layer(
    text: str, font: ImageFont.FreeTypeFont, angle: float
) -> tuple[Image.Image, list[tuple[float, float]]]:
    """Alpha layer of ``text`` rotated by ``angle`` and its ink quadrilateral in layer pixels."""
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    pad = 4
    layer = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(layer).text((pad - left, pad - top), text, font=font, fill=255)
    x0, y0, x1, y1 = layer.getbbox() or (0, 0, layer.width, layer.height)
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if not angle:
        return layer, [(float(x), float(y)) for x, y in corners]
    rotated = layer.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    size, new = (layer.width, layer.height), (rotated.width, rotated.height)
    return rotated, [_rotate_point(x, y, size, new, angle) for x, y in corners]


def _overlaps(box: tuple[float, float, float, float], taken: list[tuple[float, ...]]) -> bool:
    gap = 6
    return any(
        box[0] < t[2] + gap and t[0] < box[2] + gap and box[1] < t[3] + gap and t[1] < box[3] + gap
        for t in taken
    )


def render_frame(
    seed: int,
    variant: str = "easy",
    split: str = "test",
    index: int = 0,
    with_ink: bool = False,
) -> Frame:
    """Render frame ``index`` of ``split`` for ``variant``; the same arguments give the same bytes."""
    rng = random.Random(frame_seed(seed, variant, split, index))
    spec = VARIANTS[variant]
    fonts = font_dir()
    img, base = _background(rng, spec)
    lines: list[TextLine] = []
    ink: list[tuple[int, int, np.ndarray]] = []
    taken: list[tuple[float, ...]] = []
    for _ in range(rng.randint(*spec.lines)):
        kind, text = label_text(rng)
        font_name = rng.choice(FONTS)
        size = rng.randint(*spec.sizes)
        angle = round(rng.uniform(-spec.max_angle, spec.max_angle), 2) if spec.max_angle else 0.0
        layer, quad = _line_layer(text, _font(str(fonts / font_name), size), angle)
        margin = 8
        for _attempt in range(40):
            x = rng.randint(margin, max(margin, WIDTH - layer.width - margin))
            y = rng.randint(margin, max(margin, HEIGHT - layer.height - margin))
            box = [(px + x, py + y) for px, py in quad]
            aabb = (
                min(p[0] for p in box),
                min(p[1] for p in box),
                max(p[0] for p in box),
                max(p[1] for p in box),
            )
            if not _overlaps(aabb, taken):
                break
        else:
            continue  # the frame is full; fewer lines is fine
        taken.append(aabb)
        contrast = rng.randint(*spec.contrast)
        grey = max(0, base - contrast)
        colour = (grey + rng.randint(0, 20), grey, grey + rng.randint(0, 20))
        img.paste(colour, (x, y), mask=layer)
        lines.append(TextLine(text, kind, tuple(box), font_name[:-4], size, angle))
        if with_ink:
            ink.append((x, y, np.asarray(layer)))
    blur = rng.uniform(*spec.blur)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(img, dtype=np.float64)
    sigma = rng.uniform(*spec.noise)
    if sigma > 0:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, sigma, pixels.shape)
        pixels = pixels + noise
    out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if spec.jpeg_quality:
        fmt = "jpeg"
        out.save(buf, format="JPEG", quality=rng.randint(*spec.jpeg_quality))
    else:
        fmt = "png"
        out.save(buf, format="PNG", compress_level=6)
    encoded = buf.getvalue()
    image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    frame_id = f"{variant}-{split}-{index:05d}"
    return Frame(frame_id, variant, split, index, image, encoded, fmt, tuple(lines), tuple(ink))
