"""The model bundle manifest: versioned, validated types for ``manifest.json``.

A bundle is a directory holding ``manifest.json`` plus ONNX segment files (and optional codec
entropy-model files). The manifest names the segments, the cut points between them, the exits
with their calibrated temperature and threshold, the input spec with its preprocessing, and the
sha256 of every file. See docs/bundles.md for the JSON schema with an example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import BundleError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

Dim = int | None  # None marks a dynamic dimension (the batch)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class TensorSpec(_Strict):
    """One named tensor of a segment's signature."""

    name: str = Field(min_length=1)
    """Tensor name inside the ONNX graph (the same name in every segment that carries it)."""
    dtype: Literal["float32", "uint8", "int64"] = "float32"
    """Element type."""
    shape: list[Dim]
    """Dimensions; ``null`` is dynamic (the batch dimension is always dynamic)."""


class Preprocessing(_Strict):
    """How raw images become the model input: ``((x * scale) - mean[c]) / std[c]``."""

    source_dtype: Literal["uint8"] = "uint8"
    """Dtype of raw images handed to :meth:`Bundle.preprocess`."""
    source_layout: Literal["NHW", "NHWC"] = "NHW"
    """Layout of raw images (NHW for single-channel images)."""
    scale: float = Field(gt=0)
    """Multiplier applied first (1/255 maps uint8 to [0, 1])."""
    mean: list[float] = Field(min_length=1)
    """Per-channel mean subtracted after scaling."""
    std: list[float] = Field(min_length=1)
    """Per-channel standard deviation divided after subtracting the mean."""

    @model_validator(mode="after")
    def _check(self) -> Preprocessing:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have one entry per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std entries must be > 0")
        return self


class InputSpec(TensorSpec):
    """The model input: a tensor spec plus its preprocessing."""

    layout: Literal["NCHW"] = "NCHW"
    """Layout of the preprocessed tensor fed to the first segment."""
    preprocessing: Preprocessing
    """How raw images are turned into this tensor."""


class SegmentSpec(_Strict):
    """One ONNX file: a contiguous piece of the model."""

    name: str = Field(min_length=1)
    """Segment name (``stage1``, ``tail_cut1``, ``full``...)."""
    file: str = Field(min_length=1)
    """ONNX file, relative to the bundle directory; must be listed in ``files``."""
    inputs: list[TensorSpec] = Field(min_length=1)
    """Graph inputs, in order."""
    outputs: list[TensorSpec] = Field(min_length=1)
    """Graph outputs, in order."""


class CodecSpec(_Strict):
    """The codec a cut point uses by default (filled in by the codec tooling)."""

    default: str = Field(min_length=1)
    """Codec spec string understood by common.codecs (e.g. ``"int8|ans"``)."""
    entropy_model: str | None = None
    """Entropy-model file relative to the bundle directory (listed in ``files``), or null."""


class CutPointSpec(_Strict):
    """A tensor at which the model may be split between edge and cloud."""

    name: str = Field(min_length=1)
    """The internal tensor name (also the output name of the head and input name of the tail)."""
    head: list[str] = Field(min_length=1)
    """Segment chain that produces the tensor from the model input, in order."""
    tail: str = Field(min_length=1)
    """Segment that maps this tensor to the final logits (what the cloud runs)."""
    shape: list[Dim]
    """Tensor shape with a dynamic batch dimension first."""
    dtype: Literal["float32"] = "float32"
    """Element type of the activation."""
    float32_bytes: int = Field(gt=0)
    """Bytes of one sample's activation as raw float32 (before any codec)."""
    codec: CodecSpec | None = None
    """Default codec for this cut point, or null when none was chosen yet."""


class ExitSpec(_Strict):
    """A classifier head whose temperature-scaled confidence may end inference early."""

    name: str = Field(min_length=1)
    """Exit name (``exit1``, ``exit2``, ``final``)."""
    segment: str = Field(min_length=1)
    """Segment whose output carries the logits (on the edge chain)."""
    logits: str = Field(min_length=1)
    """Output tensor name of the logits."""
    index: int = Field(ge=0)
    """Position along the chain: 0 is the earliest exit; the last exit is the final one."""
    temperature: float = Field(default=1.0, gt=0)
    """Divide logits by this before softmax (fitted on validation by NLL minimisation)."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Leave here when max softmax(logits / temperature) >= threshold; null disables the exit."""


class FileEntry(_Strict):
    """Integrity record of one bundle file."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Lowercase hex sha256 of the file's bytes."""
    bytes: int = Field(ge=0)
    """File size in bytes."""


class Manifest(_Strict):
    """Root of ``manifest.json``."""

    format_version: int
    """Schema version; this code reads version 1 only."""
    name: str = Field(min_length=1)
    """Bundle (model) name."""
    version: str = Field(min_length=1)
    """Model version (free-form, e.g. ``1.0.0``)."""
    description: str = ""
    """One line on what the model is."""
    classes: list[str] = Field(min_length=1)
    """Class labels in logit order."""
    input: InputSpec
    """The model input and its preprocessing."""
    segments: list[SegmentSpec] = Field(min_length=1)
    """Every ONNX segment of the bundle."""
    full: str
    """Segment mapping the input to the final logits (cloud-only path)."""
    edge_chain: list[str] = Field(min_length=1)
    """Segments the edge runs in order, exit after exit (``[stage1, stage2, stage3]``)."""
    cut_points: list[CutPointSpec] = Field(default_factory=list)
    """Where the model may be split, earliest first."""
    exits: list[ExitSpec] = Field(min_length=1)
    """Exits ordered by ``index``; the last one is the final exit."""
    files: dict[str, FileEntry]
    """Every file of the bundle (relative path -> sha256 and size); the manifest excludes itself."""
    calibration: dict[str, Any] | None = None
    """What calibration measured (split, budget, ECE/NLL before and after); informational."""

    @model_validator(mode="after")
    def _cross_check(self) -> Manifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (expected {FORMAT_VERSION})"
            )
        seg_names = [s.name for s in self.segments]
        dup = {n for n in seg_names if seg_names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate segment names: {sorted(dup)}")
        segs = {s.name: s for s in self.segments}
        for seg in self.segments:
            if seg.file not in self.files:
                raise ValueError(f"segment {seg.name!r}: file {seg.file!r} is not listed in files")
        if self.full not in segs:
            raise ValueError(f"full: unknown segment {self.full!r}")
        for name in self.edge_chain:
            if name not in segs:
                raise ValueError(f"edge_chain: unknown segment {name!r}")
        for cut in self.cut_points:
            for name in [*cut.head, cut.tail]:
                if name not in segs:
                    raise ValueError(f"cut point {cut.name!r}: unknown segment {name!r}")
            if cut.name not in {t.name for t in segs[cut.head[-1]].outputs}:
                raise ValueError(
                    f"cut point {cut.name!r}: not an output of segment {cut.head[-1]!r}"
                )
            if cut.name not in {t.name for t in segs[cut.tail].inputs}:
                raise ValueError(f"cut point {cut.name!r}: not an input of segment {cut.tail!r}")
            if cut.codec and cut.codec.entropy_model and cut.codec.entropy_model not in self.files:
                raise ValueError(
                    f"cut point {cut.name!r}: entropy model {cut.codec.entropy_model!r} "
                    "is not listed in files"
                )
        indices = [e.index for e in self.exits]
        if indices != list(range(len(self.exits))):
            raise ValueError(f"exits must be ordered with index 0..n-1, got {indices}")
        for ex in self.exits:
            if ex.segment not in segs:
                raise ValueError(f"exit {ex.name!r}: unknown segment {ex.segment!r}")
            if ex.logits not in {t.name for t in segs[ex.segment].outputs}:
                raise ValueError(
                    f"exit {ex.name!r}: {ex.logits!r} is not an output of segment {ex.segment!r}"
                )
        return self

    def segment(self, name: str) -> SegmentSpec:
        """The segment called ``name``; :class:`BundleError` when there is none."""
        for seg in self.segments:
            if seg.name == name:
                return seg
        raise BundleError(f"{self.name}: no segment named {name!r}")


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_manifest(data: Any, source: str = MANIFEST_NAME) -> Manifest:
    """Validate a decoded manifest; errors name ``source`` and each bad field path."""
    if not isinstance(data, dict):
        raise BundleError(f"{source}: manifest must be a JSON object")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{source}: invalid manifest: {_format_validation_error(exc)}") from None


def read_manifest(path: Path) -> Manifest:
    """Read and validate ``manifest.json`` at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{path}: manifest not found") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None
    return parse_manifest(data, str(path))


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write ``manifest`` as indented JSON (atomically, via a temporary file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
