"""Pipeline descriptions (``pipeline.json``, schema ``aiml021.pipeline/1``).

A pipeline is a small graph of ONNX models with Python steps between them. The description names
the models (a file beside the description, or a file inside an installed package such as the
``ocr`` extra's wheels, so nothing is copied or downloaded) and lists the steps in execution
order; each step reads named values, writes named values and takes parameters::

    {"schema": "aiml021.pipeline/1", "name": "ppocr_v4", "input": "image", "outputs": ["lines"],
     "models": {"det": {"package": "rapidocr_onnxruntime",
                        "path": "models/ch_PP-OCRv4_det_infer.onnx"}},
     "steps": [{"op": "det_preprocess", "in": ["image"], "out": ["det_x", "det_size"],
                "params": {"short_side": 736}}, ...]}

Every value a step reads must be the input or written by an earlier step, and every ``op`` must
be registered; both are checked when the description is loaded, with errors naming the step.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import BundleError, NotFound

SCHEMA = "aiml021.pipeline/1"
BUILTIN_DIR = Path(__file__).parent / "pipelines"


class ModelRef(BaseModel):
    """Where a model's ONNX file lives: ``file`` beside the description, or ``path`` inside an
    installed ``package``."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = None
    package: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if (self.file is None) == (self.package is None or self.path is None):
            raise ValueError("give either 'file' or both 'package' and 'path'")
        return self

    def resolve(self, base: Path) -> Path:
        """The model file; ``NotFound`` naming the package (its extra) or the file."""
        if self.file is not None:
            path = base / self.file
        else:
            assert self.package is not None and self.path is not None
            spec = importlib.util.find_spec(self.package)
            if spec is None or spec.origin is None:
                raise NotFound(f"package {self.package!r} is not installed (extra 'ocr')")
            path = Path(spec.origin).parent / self.path
        if not path.is_file():
            raise NotFound(f"{path}: model file is missing")
        return path


class StepSpec(BaseModel):
    """One step: registered function ``op`` reading ``in`` and writing ``out``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    op: str
    inputs: list[str] = Field(alias="in")
    outputs: list[str] = Field(alias="out", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class CascadeSpec(BaseModel):
    """A cascade to a larger cloud model (FR-004): a line whose calibrated confidence is below
    ``threshold`` is read again by ``cloud_model``, served by the gateway, from the region of the
    original frame that its box covers (never from the edge model's features)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0.0, le=1.01)
    """Lines with confidence below it go to the cloud (0: none does; above 1: all do)."""
    cloud_model: str = Field(min_length=1)
    """Name the gateway serves the cloud recogniser under (a bundle, Triton model or ONNX)."""
    cloud_version: str = ""
    """Its version (empty: the gateway's choice)."""
    cloud_output: Literal["best_path", "probs"] = "best_path"
    """What the cloud model answers: ``best_path`` (outputs ``best`` and ``best_prob``, ``[1, T]``
    each: the recogniser with ``common.pipeline.best_path_model``'s head, ``aiml021 ctc-head``)
    or ``probs`` (its ``[1, T, classes]`` step probabilities, large for big character lists)."""
    charset: str
    """Entry of ``models`` whose ONNX metadata holds the cloud recogniser's character list (the
    file is only read for it: the edge never runs that model)."""
    charset_key: str = "character"
    height: int = Field(default=48, gt=0, le=256)
    """Height the region is resized to (the cloud recogniser's input height)."""
    min_width: int = Field(default=16, gt=0, le=4096)
    max_width: int = Field(default=1280, gt=0, le=8192)
    """Region widths are kept between these (aspect ratio kept below ``max_width``)."""
    codec: str = "raw"
    """Codec of the region tensor on the wire (``common.codecs`` spec)."""
    calibration: dict[str, Any] = Field(default_factory=lambda: {"method": "identity"})
    """Calibration of the cloud's line score (``min`` over its emitted steps), as the
    ``calibrate`` step takes it."""


class PipelineSpec(BaseModel):
    """A whole pipeline description."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(alias="schema")
    name: str
    description: str = ""
    input: str
    outputs: list[str] = Field(min_length=1)
    models: dict[str, ModelRef]
    steps: list[StepSpec] = Field(min_length=1)
    calibration: dict[str, Any] | None = None
    """Free-form record of the last ``aiml021 ocr-eval --write`` (split, n, ECE before/after)."""
    cascade: CascadeSpec | None = None
    """Send doubtful lines to a larger cloud model (``common.pipeline.Cascade``)."""

    def check(self, registered: set[str]) -> None:
        """Every op registered, every value defined before it is read, models known."""
        if self.schema_ != SCHEMA:
            raise ValueError(f"schema must be {SCHEMA!r}, not {self.schema_!r}")
        known = {self.input}
        for i, s in enumerate(self.steps):
            where = f"steps.{i} ({s.op})"
            if s.op not in registered:
                raise ValueError(
                    f"{where}: unknown op; registered: {', '.join(sorted(registered))}"
                )
            missing = [v for v in s.inputs if v not in known]
            if missing:
                raise ValueError(f"{where}: reads {missing} before any step writes them")
            model = s.params.get("model")
            if model is not None and model not in self.models:
                raise ValueError(f"{where}: model {model!r} is not in models")
            known.update(s.outputs)
        absent = [v for v in self.outputs if v not in known]
        if absent:
            raise ValueError(f"outputs {absent} are never written")
        if self.cascade is not None and self.cascade.charset not in self.models:
            raise ValueError(f"cascade.charset: model {self.cascade.charset!r} is not in models")
        if self.cascade is not None and self.cascade.min_width > self.cascade.max_width:
            raise ValueError("cascade: min_width must not exceed max_width")


def builtin_pipelines() -> list[str]:
    """Names of the pipeline descriptions shipped with aiml021."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def pipeline_path(name_or_path: str | Path) -> Path:
    """A built-in name, a ``pipeline.json`` or a directory holding one."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "pipeline.json"
    elif not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.json"
        if not path.is_file():
            known = ", ".join(builtin_pipelines())
            raise NotFound(f"no pipeline {str(name_or_path)!r}; built-in: {known}")
    if not path.is_file():
        raise NotFound(f"{path}: pipeline description is missing")
    return path


def _extended(doc: Any, path: Path) -> Any:
    """``{"extends": BASE, ...}``: the base description (a built-in name or a path relative to
    this one) with this one's keys over it and its models added (the base's ``calibration``
    record stays with the base). One level only."""
    if not isinstance(doc, dict) or "extends" not in doc:
        return doc
    base_ref = doc.pop("extends")
    if not isinstance(base_ref, str):
        raise ValueError("extends must name a pipeline (a built-in name or a path)")
    relative = path.parent / base_ref
    base_path = pipeline_path(relative if relative.exists() else base_ref)
    base = json.loads(base_path.read_text())
    if not isinstance(base, dict) or "extends" in base:
        raise ValueError(f"extends: {base_path} must be a whole description (one level only)")
    base.pop("calibration", None)
    models = {**base.get("models", {}), **doc.get("models", {})}
    return {**base, **doc, "models": models}


def parse_pipeline(path: Path, registered: set[str]) -> PipelineSpec:
    """Read and check one description; ``BundleError`` naming the file and the field."""
    try:
        spec = PipelineSpec.model_validate(_extended(json.loads(path.read_text()), path))
        spec.check(registered)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{path}: invalid pipeline: {field}: {first['msg']}") from exc
    except ValueError as exc:
        raise BundleError(f"{path}: invalid pipeline: {exc}") from exc
    return spec


__all__ = [
    "BUILTIN_DIR",
    "SCHEMA",
    "CascadeSpec",
    "ModelRef",
    "PipelineSpec",
    "StepSpec",
    "builtin_pipelines",
    "parse_pipeline",
    "pipeline_path",
]
