"""Pipelines: small graphs of ONNX models with Python steps between them, described in JSON.

``load_pipeline("ppocr_v4")`` (a built-in name, a ``pipeline.json`` or its directory) gives a
callable that runs the described steps on one input; the OCR steps turn a BGR frame into text
lines with calibrated confidences. See docs/bundles.md (Pipelines).
"""

from common.pipeline._cascade import Cascade, Refine, RoutedLine, region_input, stack_regions
from common.pipeline._confidence import (
    FITS,
    Line,
    apply_calibration,
    fit_isotonic,
    fit_platt,
    line_score,
    reliability,
)
from common.pipeline._ctc import (
    Decoded,
    best_path_model,
    charset_from_metadata,
    ctc_best_path,
    ctc_greedy,
)
from common.pipeline._detect import db_boxes, det_preprocess, target_size, unclip
from common.pipeline._recognize import crop_line, line_input
from common.pipeline._registry import STEPS, Models, step
from common.pipeline._runner import Pipeline, load_pipeline
from common.pipeline._spec import (
    SCHEMA,
    CascadeSpec,
    PipelineSpec,
    builtin_pipelines,
    pipeline_path,
)

__all__ = [
    "FITS",
    "SCHEMA",
    "STEPS",
    "Cascade",
    "CascadeSpec",
    "Decoded",
    "Line",
    "Models",
    "Pipeline",
    "PipelineSpec",
    "Refine",
    "RoutedLine",
    "apply_calibration",
    "best_path_model",
    "builtin_pipelines",
    "charset_from_metadata",
    "crop_line",
    "ctc_best_path",
    "ctc_greedy",
    "db_boxes",
    "det_preprocess",
    "fit_isotonic",
    "fit_platt",
    "line_input",
    "line_score",
    "load_pipeline",
    "pipeline_path",
    "region_input",
    "reliability",
    "stack_regions",
    "step",
    "target_size",
    "unclip",
]
