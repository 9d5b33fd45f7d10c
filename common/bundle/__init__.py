"""Model bundles: manifest, load/verify, split, profile and calibration.

A bundle is a directory with ``manifest.json`` and ONNX segments (see docs/bundles.md)::

    bundle = load_bundle("models/fmnist_branchy")   # verifies every sha256
    x = bundle.preprocess(images_uint8_nhw)         # float32 NCHW
    sess = bundle.session("stage1")                 # onnxruntime, CPU
"""

from common.bundle._bundle import Bundle, file_entry, load_bundle, sha256_file
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

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Bundle",
    "CodecSpec",
    "CutPointSpec",
    "ExitSpec",
    "FileEntry",
    "InputSpec",
    "Manifest",
    "Preprocessing",
    "SegmentSpec",
    "TensorSpec",
    "file_entry",
    "load_bundle",
    "parse_manifest",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]
