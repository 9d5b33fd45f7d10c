"""Core facts -> Triton's metadata messages: ModelMetadata, ModelConfig and ModelStatistics.

gRPC answers these messages as they are; the REST bridge answers the same messages as Triton's
HTTP JSON (``cloud.rest._v2.triton_json``), so both front doors say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference import grpc_service_pb2 as pb
from inference import model_config_pb2 as mc

from cloud.core import DataPlane, Duration, ModelKey, ModelSpec, ModelStatistics
from cloud.grpc._converters import tensor_metadata
from common import dtypes
from common.errors import AimlError

SERVER_NAME = "aiml021-gateway"
SERVER_VERSION = "0.1.0"

PLATFORM = "onnxruntime_onnx"
"""What the gateway reports as the platform of an ONNX model (its backend runs ONNX models)."""
PIPELINE_PLATFORM = "aiml021_pipeline"
"""... and of a pipeline with Python steps (``pipeline.json``, ``cloud.backends.PipelineBackend``)."""


def _platform(spec: ModelSpec) -> str:
    return PIPELINE_PLATFORM if spec.pipeline is not None else PLATFORM


def model_metadata_to_pb(spec: ModelSpec, versions: Sequence[str]) -> pb.ModelMetadataResponse:
    """ModelMetadataResponse of ``spec`` (``versions``: every served version of its name)."""
    return pb.ModelMetadataResponse(
        name=spec.name,
        versions=list(versions),
        platform=_platform(spec),
        inputs=tensor_metadata(spec.inputs),
        outputs=tensor_metadata(spec.outputs),
    )


def model_config_to_pb(spec: ModelSpec) -> mc.ModelConfig:
    """Triton ModelConfig of ``spec``: dims without the batch dimension, dynamic batching on;
    a model from a Triton repository reports its config.pbtxt as loaded."""
    if spec.model_config:
        return mc.ModelConfig.FromString(spec.model_config)
    cfg = mc.ModelConfig(
        name=spec.name, platform=_platform(spec), max_batch_size=spec.max_batch_size
    )
    for t, target in ((spec.inputs, cfg.input), (spec.outputs, cfg.output)):
        for m in tensor_metadata(t):
            data_type = mc.DataType.Value(dtypes.by_v2(m.datatype).triton_config)
            target.add(name=m.name, data_type=data_type, dims=m.shape[1:])
    cfg.dynamic_batching.SetInParent()
    return cfg


def _duration(d: Duration, into: pb.StatisticDuration) -> None:
    into.count = d.count
    into.ns = d.ns


def statistics_to_pb(stats: ModelStatistics) -> pb.ModelStatistics:
    """ModelStatistics of one model version (the fields perf_analyzer reads)."""
    m = pb.ModelStatistics(
        name=stats.key.name,
        version=stats.key.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    s = m.inference_stats
    for name in (
        "success",
        "fail",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
        "cache_hit",
        "cache_miss",
    ):
        _duration(getattr(stats, name), getattr(s, name))
    for b in stats.batch_stats:
        out = m.batch_stats.add(batch_size=b.batch_size)
        _duration(b.compute_input, out.compute_input)
        _duration(b.compute_infer, out.compute_infer)
        _duration(b.compute_output, out.compute_output)
    return m


def statistics_response(dp: DataPlane, name: str, version: str) -> pb.ModelStatisticsResponse:
    """Statistics of every served model version (of ``name`` and ``version`` when given, as
    Triton filters them); NotFound for a name or version that is not served."""
    resp = pb.ModelStatisticsResponse()
    for spec in dp.repository.specs():
        if (name and spec.name != name) or (version and spec.version != version):
            continue
        resp.model_stats.append(statistics_to_pb(dp.statistics.get(spec.key)))
    if name and not resp.model_stats:
        dp.repository.resolve(name, version)  # raises NotFound
    return resp


def repository_index(dp: DataPlane, ready_only: bool) -> pb.RepositoryIndexResponse:
    """The repository index: served versions (READY or UNAVAILABLE) and, unless ``ready_only``,
    unloaded ones, as Triton keeps listing them."""
    resp = pb.RepositoryIndexResponse()
    for spec in dp.repository.specs():
        ready = dp.model_ready(spec.name, spec.version)
        if ready_only and not ready:
            continue
        resp.models.add(
            name=spec.name, version=spec.version, state="READY" if ready else "UNAVAILABLE"
        )
    if not ready_only:
        for spec in dp.unloaded():
            resp.models.add(
                name=spec.name, version=spec.version, state="UNAVAILABLE", reason="unloaded"
            )
    return resp


def served_key(dp: DataPlane, name: str, version: str) -> ModelKey | None:
    """The served version a request for ``name``/``version`` went to (None when not served: the
    statistics of names a client made up are nobody's)."""
    try:
        return dp.repository.resolve(name, version).key
    except AimlError:
        return None


__all__ = [
    "PLATFORM",
    "SERVER_NAME",
    "SERVER_VERSION",
    "model_config_to_pb",
    "model_metadata_to_pb",
    "repository_index",
    "served_key",
    "statistics_response",
    "statistics_to_pb",
]
