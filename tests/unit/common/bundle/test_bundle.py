"""Bundle loading, verification and manifest validation: precise errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.bundle import MANIFEST_NAME, load_bundle, parse_manifest, read_manifest, sha256_file
from common.errors import BundleError, ErrorCode, NotFound

from .conftest import BRANCHY, EDGE


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / MANIFEST_NAME).read_text())


def _write(root: Path, data: dict[str, Any]) -> None:
    (root / MANIFEST_NAME).write_text(json.dumps(data))


def test_reference_bundles_load_and_describe_cuts_and_exits() -> None:
    b = load_bundle(BRANCHY)
    assert [c.name for c in b.cut_points] == ["cut1", "cut2"]
    assert b.cut_point("cut2").head == ["stage1", "stage2"]
    assert b.cut_point("cut1").float32_bytes == 32 * 14 * 14 * 4
    assert [e.name for e in b.exits] == ["exit1", "exit2", "final"]
    assert all(e.temperature > 0 for e in b.exits)
    assert b.exits[-1].threshold == 0.0
    assert b.segment_path("stage1").is_file()
    edge = load_bundle(EDGE / MANIFEST_NAME)
    assert edge.cut_points == [] and edge.manifest.edge_chain == ["full"]


def test_preprocess_scales_and_normalises() -> None:
    b = load_bundle(EDGE)
    images = np.array([[[0, 255], [51, 102]]], np.uint8).repeat(14, 1).repeat(14, 2)
    x = b.preprocess(images)
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx((0 - 0.286) / 0.353, rel=1e-5)
    assert x[0, 0, 0, 27] == pytest.approx((1 - 0.286) / 0.353, rel=1e-5)
    assert b.preprocess(images[0]).shape == (1, 1, 28, 28)
    with pytest.raises(BundleError, match="uint8"):
        b.preprocess(images.astype(np.float32))
    with pytest.raises(BundleError, match="image shape"):
        b.preprocess(np.zeros((2, 27, 28), np.uint8))


def test_wrong_checksum_names_the_file(edge_bundle_dir: Path) -> None:
    path = edge_bundle_dir / "full.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"full\.onnx: sha256 mismatch") as info:
        load_bundle(edge_bundle_dir)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    load_bundle(edge_bundle_dir, verify=False)  # opt-out still parses


def test_missing_segment_names_the_file(branchy_bundle_dir: Path) -> None:
    (branchy_bundle_dir / "stage2.onnx").unlink()
    with pytest.raises(BundleError, match=r"stage2\.onnx: file listed in the manifest is missing"):
        load_bundle(branchy_bundle_dir)


def test_missing_manifest_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle directory not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"manifest\.json: manifest not found"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="must be a JSON object"):
        parse_manifest([1, 2])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m.pop("exits"), "exits: Field required"),
        (
            lambda m: m["exits"][0].update(temperature=-1),
            "exits.0.temperature: Input should be greater than 0",
        ),
        (
            lambda m: m["exits"][0].update(threshold=1.5),
            "exits.0.threshold: Input should be less than or equal to 1",
        ),
        (lambda m: m["exits"][0].update(segment="nope"), "exit 'exit1': unknown segment 'nope'"),
        (lambda m: m["exits"][1].update(index=5), "exits must be ordered with index 0..n-1"),
        (
            lambda m: m["exits"][0].update(logits="logits"),
            "exit 'exit1': 'logits' is not an output of segment 'stage1'",
        ),
        (
            lambda m: m["segments"][0].update(file="other.onnx"),
            "segment 'stage1': file 'other.onnx' is not listed in files",
        ),
        (
            lambda m: m["segments"].append(dict(m["segments"][0])),
            "duplicate segment names: ['stage1']",
        ),
        (
            lambda m: m["cut_points"][0].update(tail="stage3"),
            "cut point 'cut1': not an input of segment 'stage3'",
        ),
        (
            lambda m: m["cut_points"][0].update(head=["ghost"]),
            "cut point 'cut1': unknown segment 'ghost'",
        ),
        (
            lambda m: m["cut_points"][0].update(codec={"default": "q8", "entropy_model": "e.bin"}),
            "entropy model 'e.bin' is not listed in files",
        ),
        (
            lambda m: m["files"]["stage1.onnx"].update(sha256="xyz"),
            "files.stage1.onnx.sha256: String should match pattern",
        ),
        (lambda m: m.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (lambda m: m["input"]["preprocessing"].update(std=[0.0]), "std entries must be > 0"),
        (lambda m: m.update(full="ghost"), "full: unknown segment 'ghost'"),
        (lambda m: m.update(edge_chain=["ghost"]), "edge_chain: unknown segment 'ghost'"),
    ],
)
def test_bad_manifest_fields_give_precise_errors(
    branchy_bundle_dir: Path, mutate: Any, message: str
) -> None:
    data = _manifest(branchy_bundle_dir)
    mutate(data)
    _write(branchy_bundle_dir, data)
    with pytest.raises(BundleError) as info:
        load_bundle(branchy_bundle_dir)
    assert message in info.value.message
    assert "manifest.json" in info.value.message


def test_unknown_cut_point_and_segment() -> None:
    b = load_bundle(BRANCHY)
    with pytest.raises(NotFound, match=r"no cut point 'cut9' \(known: cut1, cut2\)"):
        b.cut_point("cut9")
    with pytest.raises(BundleError, match="no segment named 'ghost'"):
        b.segment_path("ghost")
    with pytest.raises(BundleError, match="not listed in files"):
        b.file_path("ghost.bin")


def test_update_cut_codec_records_spec_and_entropy_model_checksum(branchy_bundle_dir: Path) -> None:
    b = load_bundle(branchy_bundle_dir)
    (branchy_bundle_dir / "cut1.entropy").write_bytes(b"model-bytes")
    b.update_cut_codec("cut1", "q8|ans", "cut1.entropy")
    b.update_cut_codec("cut2", "q4", None)
    again = load_bundle(branchy_bundle_dir)
    codec = again.cut_point("cut1").codec
    assert codec is not None and codec.default == "q8|ans" and codec.entropy_model == "cut1.entropy"
    assert again.manifest.files["cut1.entropy"].sha256 == sha256_file(
        branchy_bundle_dir / "cut1.entropy"
    )
    assert again.cut_point("cut2").codec is not None
    # A changed entropy model is caught like any other file.
    (branchy_bundle_dir / "cut1.entropy").write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"cut1\.entropy: sha256 mismatch"):
        load_bundle(branchy_bundle_dir)


def test_update_cut_codec_rejects_outside_or_missing_files(
    branchy_bundle_dir: Path, tmp_path: Path
) -> None:
    b = load_bundle(branchy_bundle_dir)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    with pytest.raises(BundleError, match="must live inside the bundle directory"):
        b.update_cut_codec("cut1", "q8|ans", outside)
    with pytest.raises(BundleError, match="entropy model file not found"):
        b.update_cut_codec("cut1", "q8|ans", "absent.bin")
    with pytest.raises(NotFound):
        b.update_cut_codec("cut7", "q8")


def test_update_exits_validates_and_persists(edge_bundle_dir: Path) -> None:
    b = load_bundle(edge_bundle_dir)
    b.update_exits([1.5], [0.0], {"note": "test"})
    again = read_manifest(edge_bundle_dir / MANIFEST_NAME)
    assert again.exits[0].temperature == 1.5 and again.calibration == {"note": "test"}
    with pytest.raises(BundleError, match="need 1 temperatures"):
        b.update_exits([1.0, 2.0], [None, 0.0])
    with pytest.raises(Exception, match="temperature"):
        b.update_exits([-1.0], [0.0])
    assert read_manifest(edge_bundle_dir / MANIFEST_NAME).exits[0].temperature == 1.5


def test_refresh_files_after_deliberate_change(edge_bundle_dir: Path) -> None:
    b = load_bundle(edge_bundle_dir)
    (edge_bundle_dir / "full.onnx").write_bytes((edge_bundle_dir / "full.onnx").read_bytes())
    b.refresh_files()
    load_bundle(edge_bundle_dir)
