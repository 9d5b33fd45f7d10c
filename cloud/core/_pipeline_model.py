"""Pipelines as served models: a models-directory entry ``DIR/<name>/pipeline.json``.

A pipeline (``common.pipeline``: ONNX models with Python steps between them, e.g. PP-OCRv6's
detector, DB post-processing, line crops, recogniser, CTC and calibration) is served under the
directory's name, version ``1``, with one tensor interface whatever the description holds, so
every API (ModelInfer, KServe-v2 REST, the session stream) reaches it unchanged:

========== ======= ================ ==========================================================
tensor     type    shape            meaning
========== ======= ================ ==========================================================
image      UINT8   [1, bytes]       the encoded image (JPEG, PNG, BMP, PPM: a raw frame goes
                                    as PPM/BMP at the cost of a copy); a KServe BYTES tensor of
                                    one element is accepted for it (its bytes)
lines      UINT8   [1, bytes]       UTF-8 JSON ``[{"text", "confidence", "score", "box"}]``
boxes      FP32    [1, L, 4, 2]     each line's four corners in image pixels
confidence FP32    [1, L]           each line's calibrated confidence
text       UINT8   [1, L, chars]    each line's UTF-8 text, zero-padded to the longest
cpu_ms     FP32    [1, 1]           CPU time the image took (decode, steps, ONNX stages) on
                                    its worker thread: compute without the host's contention
========== ======= ================ ==========================================================

Each request is one image (``max_batch_size`` 1: frames differ in size; the recogniser batches
the frame's line crops itself). The description is checked when the directory is scanned: its
steps, its models' files (an uninstalled package names its extra) and a ``lines`` output.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cloud.core._types import ModelSpec, TensorSpec
from common.errors import BundleError, InvalidArgument

PIPELINE_FILE = "pipeline.json"
PIPELINE_VERSION = "1"
IMAGE_INPUT = TensorSpec("image", "uint8", (-1, -1))
PIPELINE_OUTPUTS = (
    TensorSpec("lines", "uint8", (-1, -1)),
    TensorSpec("boxes", "float32", (-1, -1, 4, 2)),
    TensorSpec("confidence", "float32", (-1, -1)),
    TensorSpec("text", "uint8", (-1, -1, -1)),
    TensorSpec("cpu_ms", "float32", (-1, 1)),
)


def bytes_input(name: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """A KServe-v2 BYTES tensor of one element (shape ``[1]`` or ``[1, 1]``; raw contents: a
    4-byte little-endian length and the bytes, as tritonclient sends
    ``np.array([jpeg], dtype=object)``) as the ``UINT8 [1, n]`` vector of its bytes, the form
    the gateway's tensors carry; other BYTES tensors are INVALID_ARGUMENT."""
    if [int(d) for d in shape] not in ([1], [1, 1]):
        raise InvalidArgument(
            f"input {name!r}: a BYTES tensor must hold one element (shape [1] or [1, 1]), "
            f"not {list(shape)}"
        )
    if len(raw) < 4:
        raise InvalidArgument(f"input {name!r}: BYTES contents need a 4-byte length first")
    (n,) = struct.unpack_from("<I", raw)
    if n != len(raw) - 4:
        raise InvalidArgument(
            f"input {name!r}: BYTES element declares {n} bytes but {len(raw) - 4} follow"
        )
    return np.frombuffer(raw, np.uint8, offset=4)[None]


def is_pipeline_model(entry: Path) -> bool:
    """True for a directory holding ``pipeline.json`` (and no bundle manifest)."""
    return (
        entry.is_dir()
        and (entry / PIPELINE_FILE).is_file()
        and not (entry / "manifest.json").is_file()
    )


def spec_from_pipeline(root: Path) -> ModelSpec:
    """The served model of one pipeline directory; BundleError naming the file otherwise."""
    from common.pipeline import load_pipeline

    path = root / PIPELINE_FILE
    pipeline = load_pipeline(path)  # BundleError naming the file and the step
    for model in pipeline.spec.models:
        try:
            pipeline.model_path(model)
        except Exception as exc:
            raise BundleError(f"{path}: model {model!r}: {exc}") from exc
    if "lines" not in pipeline.spec.outputs:
        raise BundleError(
            f"{path}: a served pipeline must output 'lines' (outputs: {pipeline.spec.outputs})"
        )
    return ModelSpec(
        name=root.name,
        version=PIPELINE_VERSION,
        onnx_path=path,
        inputs=(IMAGE_INPUT,),
        outputs=PIPELINE_OUTPUTS,
        max_batch_size=1,
        segment="pipeline",
        pipeline=path,
    )


__all__ = [
    "IMAGE_INPUT",
    "PIPELINE_FILE",
    "PIPELINE_OUTPUTS",
    "bytes_input",
    "is_pipeline_model",
    "spec_from_pipeline",
]
