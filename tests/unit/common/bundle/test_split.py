"""split: candidate cut points and exact head/tail extraction on reference and foreign graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from common.bundle._split import (
    candidate_cuts,
    load_model,
    random_inputs,
    split_model,
    verify_split,
    write_split,
)
from common.cli import main
from common.errors import BundleError, InvalidArgument, NotFound

from ._foreign import CONCAT_OUT, INSIDE_RESIDUAL, RESIDUAL_OUT, build_foreign
from .conftest import BRANCHY


def test_reference_full_model_cuts_at_stage_boundaries_exactly() -> None:
    model = load_model(BRANCHY / "full.onnx")
    names = [c.name for c in candidate_cuts(model)]
    assert "cut1" in names and "cut2" in names
    assert names.index("cut1") < names.index("cut2")
    for cut in ("cut1", "cut2"):
        result = split_model(model, cut)
        assert result.cut.tail_outputs == ["logits"]
        assert verify_split(model, result, random_inputs(model, batch=3)) <= 1e-5


def test_reference_stage_graph_with_two_outputs_splits_exactly() -> None:
    model = load_model(BRANCHY / "stage1.onnx")  # outputs exit1_logits and cut1
    cands = {c.name: c for c in candidate_cuts(model)}
    # cut1 is both an output and the input of the exit head: the head returns it, the tail
    # computes exit1_logits from it.
    assert cands["cut1"].head_outputs == ["cut1"] and cands["cut1"].tail_outputs == ["exit1_logits"]
    before = next(n for n in cands if n.endswith("Relu_1_output_0"))  # before the pool/exit fork
    assert sorted(cands[before].tail_outputs) == ["cut1", "exit1_logits"]
    for name in ("cut1", before):
        assert verify_split(model, split_model(model, name)) <= 1e-5


def test_foreign_architecture_candidates_skip_residual_and_concat_branches() -> None:
    model = build_foreign()
    cands = {c.name: c for c in candidate_cuts(model)}
    assert INSIDE_RESIDUAL not in cands  # inside the residual branch: the skip path bypasses it
    assert "br_a" not in cands and "br_b" not in cands  # one concat branch alone is not a cut
    assert RESIDUAL_OUT in cands and CONCAT_OUT in cands
    assert cands["pool1"].shape == [None, 8, 8, 8] and cands["pool1"].float32_bytes == 2048
    for name in cands:
        result = split_model(model, name)
        assert verify_split(model, result) <= 1e-5


def test_bad_cut_names_give_precise_errors() -> None:
    model = build_foreign()
    with pytest.raises(
        NotFound, match=r"tensor 'nope' is not in the model; candidate cut points: stem"
    ):
        split_model(model, "nope")
    with pytest.raises(InvalidArgument, match=rf"tensor '{INSIDE_RESIDUAL}' does not separate"):
        split_model(model, INSIDE_RESIDUAL)


def test_verify_split_rejects_a_tail_that_differs() -> None:
    model = build_foreign()
    result = split_model(model, "pool1")
    for init in result.tail.graph.initializer:
        if init.name == "b_fc":
            init.CopyFrom(onnx.numpy_helper.from_array(np.ones(5, np.float32), "b_fc"))
    with pytest.raises(InvalidArgument, match="differs from the full model"):
        verify_split(model, result)


def test_write_split_produces_runnable_head_and_tail(tmp_path: Path) -> None:
    model = build_foreign()
    head, tail = write_split(split_model(model, "cat_r"), tmp_path)
    x = random_inputs(model, batch=5)
    act = ort.InferenceSession(str(head)).run(None, x)[0]
    assert act.shape == (5, 12, 8, 8)  # dynamic batch survives extraction
    out = ort.InferenceSession(str(tail)).run(None, {"cat_r": act})[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, x)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="ONNX model not found"):
        load_model(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(BundleError, match=r"bad\.onnx: not a readable ONNX model"):
        load_model(bad)


def test_cli_lists_candidates_and_splits(
    foreign_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["split", str(foreign_path)]) == 0
    out = capsys.readouterr().out
    assert "10 candidate cut points" in out and "res1_r" in out and "dw1 " not in out
    assert main(["split", str(foreign_path), "--cut", "pool1", "-o", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and (tmp_path / "s" / "head.onnx").is_file()
    assert main(["split", str(foreign_path), "--cut", "dw1"]) == 1
    assert "INVALID_ARGUMENT: tensor 'dw1' does not separate" in capsys.readouterr().err
