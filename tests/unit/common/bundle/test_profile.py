"""profile: the aiml021.profile/1 JSON document (schema, not timings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.bundle._profile import SCHEMA, format_table, profile
from common.cli import main

from .conftest import BRANCHY

STATS = {"median", "p10", "p90"}


def _check_schema(doc: dict[str, Any]) -> None:
    assert doc["schema"] == SCHEMA
    assert {"model", "kind", "batch", "repeats", "warmup", "threads", "machine"} <= doc.keys()
    assert {"platform", "cpu_count", "python", "onnxruntime"} <= doc["machine"].keys()
    assert set(doc["full_ms"]) == STATS and doc["full_ms"]["median"] > 0
    assert isinstance(doc["input_bytes"]["float32"], int)
    for cut in doc["cut_points"]:
        assert set(cut) == {
            "name", "shape", "float32_bytes", "tensors", "codec_bytes", "head_ms", "tail_ms"
        }  # fmt: skip
        assert all(isinstance(s, list) and all(d > 0 for d in s) for s in cut["tensors"].values())
        assert set(cut["head_ms"]) == STATS and set(cut["tail_ms"]) == STATS
        assert cut["head_ms"]["p10"] <= cut["head_ms"]["median"] <= cut["head_ms"]["p90"]
        assert isinstance(cut["codec_bytes"], dict)
    json.dumps(doc)  # serialisable as is


def test_profile_bundle_reports_every_manifest_cut_point() -> None:
    doc = profile(BRANCHY, repeats=3, warmup=1, progress=False)
    _check_schema(doc)
    assert doc["kind"] == "bundle" and doc["input_bytes"] == {"raw_uint8": 784, "float32": 3136}
    assert [(c["name"], c["float32_bytes"]) for c in doc["cut_points"]] == [
        ("cut1", 25088),
        ("cut2", 12544),
    ]
    assert doc["cut_points"][0]["shape"] == [None, 32, 14, 14]
    assert "cut1" in format_table(doc)


def test_profile_bare_model_reports_every_candidate(foreign_path: Path) -> None:
    doc = profile(foreign_path, batch=2, repeats=2, warmup=1, progress=False)
    _check_schema(doc)
    assert doc["kind"] == "onnx" and doc["batch"] == 2
    assert [c["name"] for c in doc["cut_points"]][:3] == ["stem", "stem_r", "res1"]


def test_cli_profile_writes_json(
    foreign_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.json"
    args = ["profile", str(foreign_path), "--repeats", "2", "--warmup", "1", "--json", str(out)]
    assert main([*args, "--no-progress"]) == 0
    _check_schema(json.loads(out.read_text()))
    assert "pool1" in capsys.readouterr().out


def test_profile_reports_codec_bytes_for_a_cut_with_a_default_codec(
    branchy_bundle_dir: Path,
) -> None:
    from common.bundle import load_bundle

    load_bundle(branchy_bundle_dir).update_cut_codec("cut2", "q8")
    doc = profile(branchy_bundle_dir, repeats=2, warmup=1, progress=False)
    cut1, cut2 = doc["cut_points"]
    # cut1 keeps the default codec written by codec-sweep (one coded size reported).
    assert len(cut1["codec_bytes"]) == 1
    # int8 values: about a quarter of float32 plus a small self-describing header.
    assert 12544 // 4 <= cut2["codec_bytes"]["q8"] < 12544 // 2


def test_profile_with_explicit_dims_reports_real_bytes_and_multi_tensor_cuts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from ._foreign import build_foreign

    path = tmp_path / "dyn.onnx"
    onnx.save(build_foreign(dynamic=True), str(path))
    out = tmp_path / "p.json"
    args = ["profile", str(path), "--shape", "x=1x3x8x8", "--multi", "--repeats", "1"]
    assert main([*args, "--warmup", "0", "--json", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    _check_schema(doc)
    assert doc["input_shapes"] == {"x": [1, 3, 8, 8]}
    cuts = {c["name"]: c for c in doc["cut_points"]}
    assert all(c["float32_bytes"] for c in cuts.values())  # no '?' with real dims
    assert cuts["br_a,br_b"]["tensors"] == {"br_a": [1, 6, 4, 4], "br_b": [1, 6, 4, 4]}
    assert cuts["br_a,br_b"]["float32_bytes"] == 768
    assert "1x6x4x4 + 1x6x4x4" in capsys.readouterr().out
    args = ["profile", str(path), "--shape", "x=1x3x8x8", "--cut", "br_a,br_b", "--cut", "pool1"]
    assert (
        main([*args, "--repeats", "1", "--warmup", "0", "--json", str(out), "--no-progress"]) == 0
    )
    assert [c["name"] for c in json.loads(out.read_text())["cut_points"]] == ["br_a,br_b", "pool1"]


def test_profile_bundle_on_raw_images_of_your_own(tmp_path: Path) -> None:
    import numpy as np

    from common.data import load_slice

    from .conftest import SLICE

    images, _ = load_slice(SLICE)
    np.save(tmp_path / "raw.npy", images[:3])
    doc = profile(BRANCHY, batch=2, repeats=1, warmup=0, progress=False, raw=tmp_path / "raw.npy")
    _check_schema(doc)
    assert doc["cut_points"][0]["tensors"] == {"cut1": [2, 32, 14, 14]}
