"""The pipeline runner: executes a description's steps over a table of named values."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import BundleError
from common.pipeline import _confidence, _ctc, _detect, _recognize  # noqa: F401  (register steps)
from common.pipeline._registry import STEPS
from common.pipeline._spec import PipelineSpec, parse_pipeline, pipeline_path

log = logging.getLogger(__name__)


class Pipeline:
    """A loaded pipeline; onnxruntime sessions are created on first use and kept."""

    def __init__(self, spec: PipelineSpec, path: Path, threads: int = 1) -> None:
        self.spec = spec
        self.path = path
        """The description file; model ``file`` entries are relative to its directory."""
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        """Seconds spent in each op over all runs (for the CLI's summary; never asserted)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def model_path(self, model: str) -> Path:
        return self.spec.models[model].resolve(self.path.parent)

    def _session(self, model: str) -> Any:
        if model not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            path = self.model_path(model)
            self._sessions[model] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            log.debug("pipeline %s: loaded model %s from %s", self.name, model, path)
        return self._sessions[model]

    def run(self, model: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        session = self._session(model)
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        return np.asarray(session.run(None, feed)[0])

    def metadata(self, model: str) -> dict[str, str]:
        return dict(self._session(model).get_modelmeta().custom_metadata_map)

    def with_params(self, op: str, params: dict[str, Any]) -> Pipeline:
        """The same pipeline (sharing loaded models) with every ``op`` step's parameters
        replaced, e.g. ``with_params("calibrate", {"method": "identity"})`` for raw scores."""
        steps = [
            s.model_copy(update={"params": params}) if s.op == op else s for s in self.spec.steps
        ]
        other = Pipeline(self.spec.model_copy(update={"steps": steps}), self.path, self.threads)
        other._sessions = self._sessions
        return other

    def step_params(self, op: str) -> dict[str, Any]:
        """Parameters of the first ``op`` step (``{}`` when there is none)."""
        return next((dict(s.params) for s in self.spec.steps if s.op == op), {})

    def __call__(self, value: Any) -> dict[str, Any]:
        """Run every step on the pipeline's input; returns the described outputs by name."""
        values: dict[str, Any] = {self.spec.input: value}
        for i, s in enumerate(self.spec.steps):
            start = time.perf_counter()
            result = STEPS[s.op](self, *(values[v] for v in s.inputs), **s.params)
            self.timings[s.op] = self.timings.get(s.op, 0.0) + time.perf_counter() - start
            if len(s.outputs) == 1:
                values[s.outputs[0]] = result
                continue
            if not isinstance(result, tuple) or len(result) != len(s.outputs):
                raise BundleError(
                    f"pipeline {self.name}: steps.{i} ({s.op}) returned "
                    f"{type(result).__name__}, expected {len(s.outputs)} values"
                )
            values.update(zip(s.outputs, result, strict=True))
        return {v: values[v] for v in self.spec.outputs}


def load_pipeline(name_or_path: str | Path, threads: int = 1) -> Pipeline:
    """A built-in pipeline by name (``ppocr_v4``), a ``pipeline.json`` or its directory."""
    path = pipeline_path(name_or_path)
    return Pipeline(parse_pipeline(path, set(STEPS)), path, threads)


__all__ = ["Pipeline", "load_pipeline"]
