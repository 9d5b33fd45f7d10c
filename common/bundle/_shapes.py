"""Real inputs and concrete tensor shapes for models with dynamic dimensions.

A model such as PP-OCR's detector declares ``x[N,3,H,W]`` with every dimension dynamic, so shape
inference alone gives ``Nx16xNxN`` and no byte counts. Given a real input (``.npy``, ``.npz`` or an
image) or explicit dimensions (``x=1x3x736x1312``), :func:`tensor_shapes` runs the model once
with the wanted tensors exposed as outputs and returns their exact shapes and dtypes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from common.errors import BundleError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImagePreprocessing",
    "check_feeds",
    "image_input",
    "input_dims",
    "load_feeds",
    "load_labelled",
    "make_feeds",
    "parse_shape",
    "run_session",
    "session",
    "tensor_shapes",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_NP_TYPES: dict[int, Any] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


class ImagePreprocessing:
    """How an image file becomes a model input (defaults: PP-OCR's detector and recognizer).

    Dynamic height and width: the shorter side is scaled up to ``short_side`` (never down) and
    both sides rounded to a multiple of ``multiple``; a fixed height (e.g. a recognizer's 48) keeps
    the aspect ratio for the width (``height`` imposes one where the model leaves it dynamic, as
    PP-OCRv4's recognizer does). Pixels become ``(v / 255 - mean) / std`` in ``channel_order``.
    """

    def __init__(
        self,
        short_side: int = 736,
        multiple: int = 32,
        mean: float = 0.5,
        std: float = 0.5,
        channel_order: str = "bgr",
        height: int | None = None,
    ) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise BundleError(f"channel order must be rgb or bgr, got {channel_order!r}")
        if std <= 0 or short_side <= 0 or multiple <= 0:
            raise BundleError("image preprocessing: std, short side and multiple must be > 0")
        self.short_side, self.multiple = short_side, multiple
        self.mean, self.std, self.channel_order = mean, std, channel_order
        self.height = height

    def target_size(self, h: int, w: int, dims: Sequence[int | None]) -> tuple[int, int]:
        """(height, width) for an ``h``×``w`` image and NCHW ``dims`` (None = dynamic)."""
        fixed_h, fixed_w = dims[2] or self.height, dims[3]
        if fixed_h and fixed_w:
            return fixed_h, fixed_w
        if fixed_h:
            return fixed_h, max(1, math.ceil(w * fixed_h / h))
        if fixed_w:
            return max(1, math.ceil(h * fixed_w / w)), fixed_w
        ratio = max(1.0, self.short_side / min(h, w))
        m = self.multiple
        return max(m, round(h * ratio / m) * m), max(m, round(w * ratio / m) * m)


def input_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Graph inputs (initializers excluded) and their dims, None where dynamic."""
    inits = {i.name for i in model.graph.initializer}
    return {
        vi.name: [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in vi.type.tensor_type.shape.dim
        ]
        for vi in model.graph.input
        if vi.name not in inits
    }


def _input_types(model: onnx.ModelProto) -> dict[str, Any]:
    return {vi.name: _NP_TYPES.get(vi.type.tensor_type.elem_type) for vi in model.graph.input}


def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1x3x736x1312`` -> ``("NAME", (1, 3, 736, 1312))``."""
    name, sep, dims = spec.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise BundleError(
            f"--shape {spec!r}: expected NAME=DxDx... with positive integers, e.g. x=1x3x736x1312"
        ) from None
    return name, shape


def image_input(
    path: str | Path, dims: Sequence[int | None], prep: ImagePreprocessing | None = None
) -> np.ndarray:
    """A 1×C×H×W float32 input from an image file (see :class:`ImagePreprocessing`)."""
    from PIL import Image

    prep = prep or ImagePreprocessing()
    if len(dims) != 4:
        raise BundleError(f"{path}: an image input needs an NCHW model input, not rank {len(dims)}")
    channels = dims[1] or 3
    try:
        with Image.open(path) as img:
            pixels = img.convert("L" if channels == 1 else "RGB")
        h, w = prep.target_size(pixels.height, pixels.width, dims)
        arr = np.asarray(pixels.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the image: {exc}") from None
    arr = arr[..., None] if arr.ndim == 2 else arr
    if prep.channel_order == "bgr" and channels == 3:
        arr = arr[..., ::-1]
    x = (arr / 255.0 - prep.mean) / prep.std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def load_feeds(
    model: onnx.ModelProto, path: str | Path, prep: ImagePreprocessing | None = None
) -> dict[str, np.ndarray]:
    """Feeds for every graph input from ``.npy`` (one input), ``.npz`` (by name) or an image."""
    p = Path(path)
    dims = input_dims(model)
    if not p.is_file():
        raise BundleError(f"{p}: input file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            if len(dims) != 1:
                raise BundleError(f"{p}: the model has inputs {sorted(dims)}; give an .npz")
            feeds = {next(iter(dims)): np.load(p, allow_pickle=False)}
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if len(dims) == 1 and len(arrays) == 1:
                feeds = {next(iter(dims)): next(iter(arrays.values()))}
            else:
                missing = sorted(set(dims) - set(arrays))
                if missing:
                    raise BundleError(
                        f"{p}: no array for input(s) {missing} (has {sorted(arrays)})"
                    )
                feeds = {k: arrays[k] for k in dims}
        elif suffix in IMAGE_SUFFIXES:
            if len(dims) != 1:
                raise BundleError(f"{p}: an image feeds one input; the model has {sorted(dims)}")
            name, d = next(iter(dims.items()))
            feeds = {name: image_input(p, d, prep)}
        else:
            raise BundleError(f"{p}: unknown input format (use .npy, .npz or an image)")
    except (OSError, ValueError) as exc:
        raise BundleError(f"{p}: cannot read the input: {exc}") from None
    check_feeds(model, feeds)
    return feeds


def make_feeds(
    model: onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int = 2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random feeds: ``shapes`` where given, else dynamic dims = ``batch`` first and 1 elsewhere."""
    rng = np.random.default_rng(seed)
    shapes = dict(shapes or {})
    dims = input_dims(model)
    unknown = sorted(set(shapes) - set(dims))
    if unknown:
        raise BundleError(f"--shape names {unknown} are not model inputs (inputs: {sorted(dims)})")
    types = _input_types(model)
    feeds: dict[str, np.ndarray] = {}
    for name, ds in dims.items():
        shape = shapes.get(name) or [
            d if d is not None else (batch if i == 0 else 1) for i, d in enumerate(ds)
        ]
        dtype = types.get(name)
        if dtype is None:
            raise BundleError(f"input {name!r}: unsupported element type for verification")
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(dtype)
    check_feeds(model, feeds)
    return feeds


def check_feeds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> None:
    """:class:`BundleError` naming the input when a feed's rank, fixed dims or dtype is wrong."""
    types = _input_types(model)
    for name, ds in input_dims(model).items():
        if name not in feeds:
            raise BundleError(f"input {name!r}: no value given")
        arr = feeds[name]
        bad_dims = len(arr.shape) != len(ds) or any(
            d is not None and d != a for d, a in zip(ds, arr.shape, strict=False)
        )
        if bad_dims:
            want = "x".join("?" if d is None else str(d) for d in ds)
            got = "x".join(str(a) for a in arr.shape)
            raise BundleError(f"input {name!r}: shape {got} does not fit the model's {want}")
        if types.get(name) is not None and arr.dtype != types[name]:
            raise BundleError(
                f"input {name!r}: dtype {arr.dtype} but the model wants {np.dtype(types[name])}"
            )


def session(model: onnx.ModelProto, threads: int = 1, optimize: bool = True) -> Any:
    """onnxruntime CPU session of an in-memory model; :class:`BundleError` when it is refused.

    ``optimize=False`` runs the graph exactly as written (no fusions), so a head and a tail compute
    the same float operations as the full model: verification of a split is then exact.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BundleError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def run_session(
    sess: Any, outputs: list[str] | None, feeds: Mapping[str, np.ndarray], what: str
) -> list[np.ndarray]:
    """``sess.run`` with onnxruntime failures turned into a :class:`BundleError` about ``what``."""
    try:
        return list(sess.run(outputs, dict(feeds)))
    except Exception as exc:
        raise BundleError(f"{what}: onnxruntime failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def tensor_shapes(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    names: Iterable[str],
    chunk: int = 16,
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Exact shape and dtype of each named tensor on ``feeds`` (runs the model ``chunk`` at a time
    with those tensors exposed as graph outputs, so memory stays bounded)."""
    wanted = list(dict.fromkeys(names))
    existing = {o.name for o in model.graph.output}
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.extend(
            helper.make_empty_tensor_value_info(n) for n in part if n not in existing
        )
        probe.graph.output.extend(o for o in model.graph.output if o.name in part)
        try:
            values = run_session(session(probe), part, feeds, "")
        except BundleError as exc:
            given = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())
            raise BundleError(
                f"the model cannot run on the given input ({given}){exc.message}"
            ) from None
        out.update(
            {
                n: (tuple(int(d) for d in v.shape), v.dtype)
                for n, v in zip(part, values, strict=True)
            }
        )
    return out


def load_labelled(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` and ``labels`` from an ``.npz`` (calibration data for a bundle of your own)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = sorted({"images", "labels"} - set(z.files))
            if missing:
                raise BundleError(f"{p}: no array(s) {missing} (has {sorted(z.files)})")
            images, labels = z["images"], z["labels"].astype(np.int64)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{p}: cannot read calibration data: {exc}") from None
    if images.shape[0] != labels.shape[0]:
        raise BundleError(f"{p}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels
