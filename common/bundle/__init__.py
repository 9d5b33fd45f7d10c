"""Model bundles: manifest, load/verify, split, profile and calibration.

A bundle is a directory with ``manifest.json`` and ONNX segments (see docs/bundles.md)::

    bundle = load_bundle("models/fmnist_branchy")   # verifies every sha256
    x = bundle.preprocess(images_uint8_nhw)         # float32 NCHW
    sess = bundle.session("stage1")                 # onnxruntime, CPU
"""

from common.bundle._build import build_bundle
from common.bundle._bundle import Bundle, file_entry, load_bundle, sha256_file
from common.bundle._calibrate import (
    ECE_BINS,
    CascadeResult,
    RiskCoverage,
    cascade,
    confidence_and_correct,
    ece,
    fit_temperature,
    nll,
    risk_coverage,
    select_thresholds,
)
from common.bundle._fit import calibrate_bundle, evaluate_bundle
from common.bundle._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CodecSpec,
    CutPointSpec,
    ExitSpec,
    FileEntry,
    InputSpec,
    Manifest,
    Preprocessing,
    SegmentSpec,
    TensorSpec,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from common.bundle._multicut import frontier_cuts
from common.bundle._profile import SCHEMA as PROFILE_SCHEMA
from common.bundle._profile import format_table, profile
from common.bundle._runner import run_exits, run_segment
from common.bundle._shapes import (
    ImagePreprocessing,
    image_input,
    load_feeds,
    load_labelled,
    make_feeds,
    parse_shape,
    tensor_shapes,
)
from common.bundle._split import (
    CutCandidate,
    SplitResult,
    candidate_cuts,
    find_cut,
    load_model,
    split_model,
    verify_split,
    write_split,
)

__all__ = [
    "ECE_BINS",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PROFILE_SCHEMA",
    "Bundle",
    "CascadeResult",
    "CodecSpec",
    "CutCandidate",
    "CutPointSpec",
    "ExitSpec",
    "FileEntry",
    "ImagePreprocessing",
    "InputSpec",
    "Manifest",
    "Preprocessing",
    "RiskCoverage",
    "SegmentSpec",
    "SplitResult",
    "TensorSpec",
    "build_bundle",
    "calibrate_bundle",
    "candidate_cuts",
    "cascade",
    "confidence_and_correct",
    "ece",
    "evaluate_bundle",
    "file_entry",
    "find_cut",
    "fit_temperature",
    "format_table",
    "frontier_cuts",
    "image_input",
    "load_bundle",
    "load_feeds",
    "load_labelled",
    "load_model",
    "make_feeds",
    "nll",
    "parse_manifest",
    "parse_shape",
    "profile",
    "read_manifest",
    "risk_coverage",
    "run_exits",
    "run_segment",
    "select_thresholds",
    "sha256_file",
    "split_model",
    "tensor_shapes",
    "verify_split",
    "write_manifest",
    "write_split",
]
