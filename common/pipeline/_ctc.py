"""CTC greedy decoding with the recogniser's own character list.

A CTC recogniser emits, at each of T steps, a distribution over ``blank`` + the characters.
Greedy decoding takes the best class per step, merges consecutive repeats and drops blanks; a
character is thus emitted at the first step of each run. The PaddleOCR exports store their
character list in the ONNX metadata (key ``character``, one per line) — both PP-OCRv4's
recogniser (6,623 characters) and PP-OCRv6's (18,708): class 0 is the blank and the last class
is a space, which the list itself does not contain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import BundleError
from common.pipeline._registry import Models, step

BLANK = 0


def charset_from_metadata(metadata: dict[str, str], key: str = "character") -> list[str]:
    """``blank`` + the characters listed under ``key`` + a space: index = CTC class."""
    if key not in metadata:
        raise BundleError(f"recogniser has no {key!r} metadata (keys: {sorted(metadata)})")
    return ["<blank>", *metadata[key].splitlines(), " "]


@dataclass(frozen=True)
class Decoded:
    """One line: its text and the probability of the best class at its steps."""

    text: str
    step_probs: npt.NDArray[np.float32]
    """One per character of ``text`` (the first step of its run), in order."""
    path_probs: npt.NDArray[np.float32] | None = None
    """One per step of the greedy path, blanks included (``None``: not recorded)."""


def ctc_greedy(probs: npt.NDArray[np.float32], charset: list[str]) -> Decoded:
    """Decode one T x classes matrix of step probabilities (or scores: only argmax and max are
    used). Classes outside ``charset`` are an error naming both sizes."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(charset):
        raise BundleError(
            f"recogniser output {probs.shape} does not fit its character list "
            f"({len(charset)} classes with blank and space)"
        )
    return ctc_best_path(probs.argmax(axis=1), probs.max(axis=1), charset)


def ctc_best_path(
    best: npt.NDArray[np.integer], best_probs: npt.NDArray[np.floating], charset: list[str]
) -> Decoded:
    """Greedy CTC decoding from the best class and its probability at each step (what a
    recogniser with :func:`best_path_model`'s head returns: ``T`` ids and ``T`` floats instead of
    ``T x classes``)."""
    best = np.asarray(best).reshape(-1)
    best_probs = np.asarray(best_probs, np.float32).reshape(-1)
    if best.shape != best_probs.shape:
        raise BundleError(
            f"best path: {best.shape[0]} classes but {best_probs.shape[0]} probabilities"
        )
    if best.size and (best.min() < 0 or best.max() >= len(charset)):
        raise BundleError(
            f"best path holds class {int(best.max())}, outside the character list "
            f"({len(charset)} classes with blank and space)"
        )
    keep = best != BLANK
    keep[1:] &= best[1:] != best[:-1]
    text = "".join(charset[int(c)] for c in best[keep])
    return Decoded(text, best_probs[keep], best_probs)


BEST = "best"
BEST_PROB = "best_prob"


def best_path_model(model: Any, output: str | None = None) -> Any:
    """``model`` (an ``onnx.ModelProto`` of a CTC recogniser, ``[N, T, classes]``) with ArgMax
    and ReduceMax appended over the classes: outputs ``best`` ``[N, T]`` int64 and ``best_prob``
    ``[N, T]`` float32. A cloud recogniser served this way answers a line in ``12·T`` bytes
    instead of ``4·T·classes`` (PP-OCRv6: 18,710 classes, 5.4 MB for a 572-pixel line, more than
    gRPC's default 4 MiB message)."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    name = output or graph.output[0].name
    if name not in [o.name for o in graph.output]:
        raise BundleError(f"recogniser has no output {name!r}")
    graph.node.extend(
        [
            helper.make_node("ArgMax", [name], [BEST], axis=-1, keepdims=0),
            helper.make_node("ReduceMax", [name], [BEST_PROB], axes=[-1], keepdims=0),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(BEST, TensorProto.INT64, ["N", "T"]),
            helper.make_tensor_value_info(BEST_PROB, TensorProto.FLOAT, ["N", "T"]),
        ]
    )
    onnx.checker.check_model(out)
    return out


@step("ctc_decode")
def ctc_decode(
    models: Models, step_probs: list[npt.NDArray[np.float32]], model: str, key: str = "character"
) -> list[Decoded]:
    """Greedy CTC decoding of every line with ``model``'s character list (its metadata)."""
    charset = charset_from_metadata(models.metadata(model), key)
    return [ctc_greedy(p, charset) for p in step_probs]


__all__ = [
    "BEST",
    "BEST_PROB",
    "BLANK",
    "Decoded",
    "best_path_model",
    "charset_from_metadata",
    "ctc_best_path",
    "ctc_decode",
    "ctc_greedy",
]
