"""CTC greedy decoding with a model's character list."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import BundleError
from common.pipeline._ctc import charset_from_metadata, ctc_greedy

CHARSET = ["<blank>", "a", "b", " "]


def _steps(classes: list[int], probs: list[float]) -> np.ndarray:
    m = np.full((len(classes), len(CHARSET)), 0.0, np.float32)
    for t, (c, p) in enumerate(zip(classes, probs, strict=True)):
        m[t] = (1 - p) / (len(CHARSET) - 1)
        m[t, c] = p
    return m


def test_repeats_merge_and_blanks_separate_and_vanish() -> None:
    # a a _ a b b _ _ ' ' b  ->  "aab b"
    classes = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]
    probs = [0.9, 0.5, 0.99, 0.8, 0.7, 0.95, 0.99, 0.99, 0.6, 0.85]
    decoded = ctc_greedy(_steps(classes, probs), CHARSET)
    assert decoded.text == "aab b"
    # one probability per character: the first step of each run
    assert decoded.step_probs.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.85])
    assert decoded.path_probs is not None and decoded.path_probs.tolist() == pytest.approx(probs)


def test_all_blank_decodes_to_empty_text() -> None:
    decoded = ctc_greedy(_steps([0, 0, 0], [0.9, 0.9, 0.9]), CHARSET)
    assert decoded.text == "" and decoded.step_probs.size == 0


def test_a_matrix_that_does_not_fit_the_character_list_is_rejected() -> None:
    with pytest.raises(BundleError, match="does not fit its character list"):
        ctc_greedy(np.zeros((5, 7), np.float32), CHARSET)


def test_character_list_from_metadata_adds_blank_first_and_space_last() -> None:
    assert charset_from_metadata({"character": "x\ny\nz"}) == ["<blank>", "x", "y", "z", " "]
    with pytest.raises(BundleError, match="no 'character' metadata"):
        charset_from_metadata({"other": ""})
