"""The two workloads the privacy benchmarks measure, as (inputs -> features -> answer) pieces:

- Fashion-MNIST with the reference bundle (models/fmnist_branchy): images through the head
  segments to ``cut1`` (32x14x14) or ``cut2`` (64x7x7), the tail segment to the final logits.
- OCR line recognition with PP-OCRv4's recogniser (rapidocr_onnxruntime, the edge model): label
  lines rendered with PIL and DejaVu (exact ground truth, ``common.frames.label_text``), 48x320,
  split with ``common.bundle.split_model`` at the backbone output (480x1x40, the smallest tensor
  before the sequence head) and, for a second point, mid-backbone (128x12x80).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from common.bundle import load_bundle
from common.data import load_fashion_mnist
from common.pipeline._ctc import charset_from_metadata, ctc_greedy

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "fmnist_branchy"
OCR_CUTS = {"backbone": "p2o.AveragePool.1", "mid": "p2o.Mul.63"}
LINE_H, LINE_W = 48, 320


def _session(model: onnx.ModelProto | str | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _batched(sess: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch]})[-1] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


@dataclass
class FmnistSplit:
    """The reference bundle's head to a cut point and the tail from it."""

    cut: str

    def __post_init__(self) -> None:
        self.bundle = load_bundle(BUNDLE)
        spec = self.bundle.cut_point(self.cut)
        self.codec = spec.codec.default if spec.codec else "raw"
        self._heads = [self.bundle.session(name) for name in spec.head]
        self._tail = self.bundle.session(spec.tail)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x 28 x 28 -> the model's normalised N x 1 x 28 x 28."""
        return np.asarray(self.bundle.preprocess(images), np.float32)

    def features(self, images: np.ndarray) -> np.ndarray:
        x = self.prepare(images)
        for sess in self._heads:
            # A head segment outputs an exit's logits and the next tensor; keep the tensor.
            names = [o.name for o in sess.get_outputs()]
            keep = next(i for i, n in enumerate(names) if "logits" not in n)
            name = sess.get_inputs()[0].name
            x = np.concatenate(
                [sess.run(None, {name: x[i : i + 256]})[keep] for i in range(0, len(x), 256)]
            )
        return x

    def logits(self, features: np.ndarray) -> np.ndarray:
        return _batched(self._tail, features.astype(np.float32))


def fmnist(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and labels of a Fashion-MNIST split (a fixed random subset)."""
    images, labels = load_fashion_mnist(split)  # type: ignore[arg-type]
    idx = np.random.default_rng(seed).permutation(len(images))[:n]
    return images[idx], labels[idx]


# -- OCR ------------------------------------------------------------------------------------
def rec_model_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"


def render_lines(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``n`` label lines as the recogniser's input (N x 3 x 48 x 320 in [-1, 1]) and their
    exact text: dark text on a light, slightly varied background, DejaVu Sans (Mono, Bold)."""
    from PIL import Image, ImageDraw, ImageFont

    from common.frames._render import font_dir
    from common.frames._text import label_text
    from common.pipeline._recognize import line_input

    rng = random.Random(seed)
    fonts = [f for f in ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
             if (font_dir() / f).is_file()]  # fmt: skip
    xs: list[np.ndarray] = []
    texts: list[str] = []
    while len(xs) < n:
        _, text = label_text(rng)
        font = ImageFont.truetype(str(font_dir() / rng.choice(fonts)), rng.randint(26, 34))
        left, top, right, bottom = font.getbbox(text)
        pad = rng.randint(4, 10)
        w, h = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
        if w / h > LINE_W / LINE_H:
            continue  # would be squeezed: keep lines the recogniser reads at full width
        bg = rng.randint(200, 255)
        img = Image.new("RGB", (w, h), (bg, bg, bg))
        ink = rng.randint(0, 60)
        ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=(ink, ink, ink))
        crop = np.asarray(img)[:, :, ::-1]  # BGR, as the pipeline crops frames
        xs.append(line_input(np.ascontiguousarray(crop), LINE_H, LINE_W))
        texts.append(text)
    return np.stack(xs).astype(np.float32), texts


class OcrSplit:
    """PP-OCRv4's recogniser split at ``cut`` (a key of :data:`OCR_CUTS`)."""

    def __init__(self, cut: str) -> None:
        from common.bundle._split import split_model

        model = onnx.load(str(rec_model_path()))
        self.charset = charset_from_metadata({p.key: p.value for p in model.metadata_props})
        feeds = {model.graph.input[0].name: np.zeros((1, 3, LINE_H, LINE_W), np.float32)}
        result = split_model(model, OCR_CUTS[cut], feeds)
        self.cut = cut
        self._head = _session(result.head)
        self._tail = _session(result.tail)
        self._full = _session(model)
        self._tensor = OCR_CUTS[cut]

    def features(self, lines: np.ndarray) -> np.ndarray:
        name = self._head.get_inputs()[0].name
        outs = [o.name for o in self._head.get_outputs()]
        idx = outs.index(self._tensor)
        return np.concatenate(
            [self._head.run(None, {name: lines[i : i + 32]})[idx] for i in range(0, len(lines), 32)]
        )

    def _decode(self, probs: np.ndarray) -> list[str]:
        return [ctc_greedy(p, self.charset).text for p in probs]

    def read_features(self, features: np.ndarray) -> list[str]:
        """Text the tail reads from (possibly noised) features."""
        return self._decode(_batched(self._tail, features.astype(np.float32), 32))

    def read_lines(self, lines: np.ndarray) -> list[str]:
        """Text the whole recogniser reads from line images (e.g. reconstructions)."""
        return self._decode(_batched(self._full, lines.astype(np.float32), 32))


def cer(pred: str, truth: str) -> float:
    """Character error rate: Levenshtein distance / length of the truth."""
    prev = list(range(len(truth) + 1))
    for i, a in enumerate(pred, 1):
        cur = [i]
        for j, b in enumerate(truth, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(1, len(truth))


def machine() -> dict[str, object]:
    import os
    import platform

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "load_average_1_5_15": list(os.getloadavg()),
    }
