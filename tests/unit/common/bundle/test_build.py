"""Building a bundle from a foreign graph with an early exit: segments exact, manifest valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from common.bundle import Preprocessing, load_bundle
from common.bundle._build import build_bundle
from common.bundle._profile import profile
from common.bundle._runner import run_exits, run_segment
from common.errors import BundleError

from ._foreign import build_foreign

PRE = Preprocessing(
    source_layout="NHWC", scale=1 / 255, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]
)


@pytest.fixture
def foreign_bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src.onnx"
    onnx.save(build_foreign(early_exit=True), str(src))
    build_bundle(
        src, tmp_path / "b", name="foreign", version="0.1", classes=list("abcde"),
        preprocessing=PRE, exits=[("exit1", "exit1_logits"), ("final", "logits")], cuts=["pool1"],
    )  # fmt: skip
    return tmp_path / "b"


def test_build_bundle_from_foreign_graph(foreign_bundle: Path) -> None:
    b = load_bundle(foreign_bundle)
    assert [s.name for s in b.manifest.segments] == ["stage1", "stage2", "tail_pool1", "full"]
    cut = b.cut_point("pool1")
    assert (
        cut.head == ["stage1"] and cut.tail == "tail_pool1" and cut.float32_bytes == 8 * 8 * 8 * 4
    )
    assert [e.threshold for e in b.exits] == [None, 0.0]
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    x = b.preprocess(images)
    assert x.shape == (4, 3, 16, 16)
    early, final = run_exits(b, x, batch=3)
    act = run_segment(b, "stage1", {"x": x})["pool1"]
    np.testing.assert_allclose(
        run_segment(b, "tail_pool1", {"pool1": act})["logits"], final, atol=1e-5
    )
    np.testing.assert_allclose(run_segment(b, "full", {"x": x})["logits"], final, atol=1e-5)
    assert early.shape == (4, 5)
    doc = profile(foreign_bundle, repeats=2, warmup=1, progress=False)
    assert doc["input_bytes"] == {"raw_uint8": 768, "float32": 3072}
    assert [c["name"] for c in doc["cut_points"]] == ["pool1"]


def test_build_bundle_needs_one_cut_between_exits(tmp_path: Path) -> None:
    src = tmp_path / "src.onnx"
    onnx.save(build_foreign(), str(src))
    with pytest.raises(BundleError, match="one cut tensor between consecutive exits"):
        build_bundle(
            src, tmp_path / "b", name="x", version="1", classes=["a"], preprocessing=PRE,
            exits=[("final", "logits")], cuts=["pool1"],
        )  # fmt: skip
