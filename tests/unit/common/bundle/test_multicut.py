"""Multi-tensor cuts: tensor sets that together separate a graph with skip connections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from common.bundle._multicut import frontier_cuts
from common.bundle._shapes import make_feeds
from common.bundle._split import split_model, verify_split, write_split
from common.cli import main
from common.errors import BundleError, NotFound

from ._foreign import build_foreign


def test_frontier_finds_the_concat_branches_and_the_residual_pair() -> None:
    model = build_foreign(dynamic=True)
    feeds = make_feeds(model, {"x": (2, 3, 12, 20)})
    cuts = {c.name: c for c in frontier_cuts(model, feeds)}
    # one representative per block: the residual's skip + branch output, the two concat inputs
    assert list(cuts) == ["stem_r,pw1", "pool1,br_a", "br_a,br_b"]
    both = cuts["br_a,br_b"]
    assert both.tensors == ("br_a", "br_b") and both.tail_outputs == ["logits"]
    assert both.concrete == {"br_a": (2, 6, 6, 10), "br_b": (2, 6, 6, 10)}
    assert both.float32_bytes == 2 * 4 * 6 * 6 * 10
    for cut in cuts.values():
        assert verify_split(model, split_model(model, cut, feeds), feeds) == 0.0


def test_a_named_tensor_set_splits_and_the_tail_takes_every_tensor(tmp_path: Path) -> None:
    model = build_foreign(dynamic=True)
    feeds = make_feeds(model, {"x": (1, 3, 16, 8)})
    result = split_model(model, "br_a,br_b", feeds)
    head, tail = write_split(result, tmp_path)
    a, b = ort.InferenceSession(str(head)).run(["br_a", "br_b"], feeds)
    tail_sess = ort.InferenceSession(str(tail))
    assert sorted(i.name for i in tail_sess.get_inputs()) == ["br_a", "br_b"]
    out = tail_sess.run(None, {"br_a": a, "br_b": b})[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(out, ref)


def test_sets_that_do_not_separate_or_name_unknown_tensors_fail_precisely() -> None:
    model = build_foreign()
    with pytest.raises(BundleError, match=r"tensors 'br_a,pw1' do not separate the model"):
        split_model(model, "br_a,pw1")  # br_b still reaches the input through stem_r
    with pytest.raises(NotFound, match=r"tensor 'nope' is not in the model"):
        split_model(model, "br_a,nope")
    with pytest.raises(BundleError, match=r"tensor 'x' is a graph input or a constant"):
        split_model(model, "x,br_a")


def test_cli_lists_multi_tensor_cuts_with_concrete_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    path = tmp_path / "dyn.onnx"
    onnx.save(build_foreign(dynamic=True), str(path))
    assert main(["split", str(path), "--shape", "x=1x3x8x8", "--multi"]) == 0
    out = capsys.readouterr().out
    assert "2 multi-tensor cuts" not in out and "3 multi-tensor cuts" in out
    assert "shapes on x 1x3x8x8" in out and "1x6x4x4 + 1x6x4x4" in out
    args = ["split", str(path), "--shape", "x=1x3x8x8", "--cut", "br_a,br_b", "-o", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cut: 1x6x4x4 + 1x6x4x4 = 768 bytes" in out and "max abs diff" in out
