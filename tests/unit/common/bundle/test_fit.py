"""Calibrating a real bundle end to end (small data: the committed test slice)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from common.bundle import load_bundle
from common.bundle._fit import calibrate_bundle, evaluate_bundle
from common.bundle._runner import run_exits, run_segment
from common.cli import main
from common.data import load_slice

from .conftest import SLICE


def _idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_calibrate_bundle_writes_temperature_and_record(edge_bundle_dir: Path) -> None:
    images, labels = load_slice(SLICE)
    bundle = load_bundle(edge_bundle_dir)
    record = calibrate_bundle(bundle, images[:1000], labels[:1000], budget=0.01, split="slice")
    again = load_bundle(edge_bundle_dir)
    final = record["exits"]["final"]
    assert again.exits[0].temperature == pytest.approx(final["temperature"])
    assert again.manifest.calibration is not None and again.manifest.calibration["split"] == "slice"
    assert final["nll_after"] <= final["nll_before"] + 1e-9
    assert final["accuracy"] > 0.85  # the reference edge model on real test images
    evaluated = evaluate_bundle(again, images[1000:], labels[1000:])
    assert evaluated["cascade"]["exit_share"] == {"final": 1.0}


def test_branchy_exits_agree_with_tails_on_real_images() -> None:
    from .conftest import BRANCHY

    images, labels = load_slice(SLICE)
    bundle = load_bundle(BRANCHY)
    x = bundle.preprocess(images[:64])
    exits = run_exits(bundle, x)
    assert [e.shape for e in exits] == [(64, 10)] * 3
    assert np.mean(exits[-1].argmax(1) == labels[:64]) > 0.85
    cut1 = run_segment(bundle, "stage1", {"input": x})["cut1"]
    tail = run_segment(bundle, "tail_cut1", {"cut1": cut1})["logits"]
    full = run_segment(bundle, "full", {"input": x})["logits"]
    np.testing.assert_allclose(tail, exits[-1], atol=1e-5)
    np.testing.assert_allclose(full, exits[-1], atol=1e-5)


def test_cli_calibrate_on_a_synthetic_idx_directory(
    edge_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = load_slice(SLICE)
    data = tmp_path / "fmnist"
    data.mkdir()
    # 6,000 "training" images built from the slice -> a 5,000-image validation split.
    _idx(data / "train-images-idx3-ubyte.gz", np.tile(images, (3, 1, 1)))
    _idx(data / "train-labels-idx1-ubyte.gz", np.tile(labels, 3))
    curves = tmp_path / "rc.json"
    args = [
        "calibrate",
        str(edge_bundle_dir),
        "--data",
        str(data),
        "--dry-run",
        "--curves",
        str(curves),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "calibrated on validation (n=5000)" in out and "manifest not changed" in out
    rows = json.loads(curves.read_text())["final"]
    assert [r["coverage"] for r in rows][-1] == 1.0
    assert [r["risk"] for r in rows] == sorted(r["risk"] for r in rows)  # risk grows with coverage
    assert main(["calibrate", str(edge_bundle_dir), "--data", str(data)]) == 0
    assert load_bundle(edge_bundle_dir).manifest.calibration["n"] == 5000  # type: ignore[index]


def test_cli_calibrate_on_labelled_data_of_your_own(
    edge_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = load_slice(SLICE)
    data = tmp_path / "mine.npz"
    np.savez(data, images=images[:600], labels=labels[:600])
    assert main(["calibrate", str(edge_bundle_dir), "--input", str(data), "--dry-run"]) == 0
    assert f"calibrated on {data} (n=600)" in capsys.readouterr().out
    np.savez(tmp_path / "bad.npz", images=images[:5], labels=labels[:4])
    assert main(["calibrate", str(edge_bundle_dir), "--input", str(tmp_path / "bad.npz")]) == 1
    assert "5 images but 4 labels" in capsys.readouterr().err
