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
    best = probs.argmax(axis=1)
    keep = best != BLANK
    keep[1:] &= best[1:] != best[:-1]
    text = "".join(charset[int(c)] for c in best[keep])
    best_probs = probs.max(axis=1).astype(np.float32)
    return Decoded(text, best_probs[keep], best_probs)


@step("ctc_decode")
def ctc_decode(
    models: Models, step_probs: list[npt.NDArray[np.float32]], model: str, key: str = "character"
) -> list[Decoded]:
    """Greedy CTC decoding of every line with ``model``'s character list (its metadata)."""
    charset = charset_from_metadata(models.metadata(model), key)
    return [ctc_greedy(p, charset) for p in step_probs]


__all__ = ["BLANK", "Decoded", "charset_from_metadata", "ctc_decode", "ctc_greedy"]
