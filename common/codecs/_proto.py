"""Converters between codec dataclasses and ``aiml021.common.v1`` messages (the only *_pb2 user).

The proto ``CodecSpec.text`` carries the canonical spec text and is authoritative when present;
``stages`` mirror it completely for clients that do not parse text, so a spec round-trips through
the stages alone. The proto has no clip stage: a clip folds into the value stage that follows it
(RAW, FLOAT16 or QUANTIZE) as ``clip_percentile``, ``clip_mse`` or ``clip_low``/``clip_high``;
the QUANTIZE companding exponent (``q2:pow=0.7``) is ``companding_exponent``.
"""

from __future__ import annotations

import math

import numpy as np
from aiml021.common.v1 import tensor_pb2 as pb

from common.codecs._frame import FrameHeader, dtype_code
from common.codecs._quant import PER_TENSOR, QuantParams
from common.codecs._spec import (
    ClipMethod,
    CodecSpec,
    CodecStage,
    SparseIndex,
    StageKind,
    parse_spec,
)
from common.errors import CodecError

_KIND_TO_PB = {
    StageKind.RAW: pb.CODEC_KIND_RAW,
    StageKind.FLOAT16: pb.CODEC_KIND_FLOAT16,
    StageKind.QUANTIZE: pb.CODEC_KIND_QUANTIZE,
    StageKind.SPARSIFY: pb.CODEC_KIND_SPARSIFY,
    StageKind.ANS: pb.CODEC_KIND_ANS,
    StageKind.RANGE: pb.CODEC_KIND_RANGE,
    StageKind.ZSTD: pb.CODEC_KIND_ZSTD,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}
_INDEX_TO_PB = {
    SparseIndex.BITMAP: pb.SPARSE_INDEX_BITMAP,
    SparseIndex.RUN_LENGTH: pb.SPARSE_INDEX_RUN_LENGTH,
}
_INDEX_FROM_PB = {v: k for k, v in _INDEX_TO_PB.items()}
_VALUE_PB = (pb.CODEC_KIND_RAW, pb.CODEC_KIND_FLOAT16, pb.CODEC_KIND_QUANTIZE)


def spec_to_proto(spec: CodecSpec) -> pb.CodecSpec:
    """Message form of a spec: canonical text plus one CodecStage per pipeline stage."""
    stages = []
    clip = spec.clip
    for stage in spec.stages:
        if stage.kind is StageKind.CLIP:
            continue
        msg = pb.CodecStage(kind=_KIND_TO_PB[stage.kind])
        if msg.kind in _VALUE_PB and clip is not None:
            _clip_to_proto(clip, msg)
        if stage.kind is StageKind.QUANTIZE:
            msg.bits = stage.bits
            msg.per_channel = stage.per_channel
            if stage.gamma != 1.0:
                msg.companding_exponent = stage.gamma
        elif stage.kind is StageKind.SPARSIFY:
            msg.sparse_index = _INDEX_TO_PB[stage.sparse_index]
            msg.threshold = stage.threshold
            msg.keep_fraction = stage.keep_fraction
        elif stage.kind is StageKind.ZSTD:
            msg.level = stage.level
        stages.append(msg)
    return pb.CodecSpec(stages=stages, text=str(spec))


def spec_from_proto(msg: pb.CodecSpec) -> CodecSpec:
    """Spec from its message: the text when present, else the stages (validated either way)."""
    if msg.text:
        return parse_spec(msg.text)
    stages: list[CodecStage] = []
    for i, stage in enumerate(msg.stages):
        kind = _KIND_FROM_PB.get(stage.kind)
        if kind is None:
            raise CodecError(f"codec stage {i}: unspecified or unknown CodecKind {stage.kind}")
        if stage.kind in _VALUE_PB:
            clip = _clip_from_proto(stage, i)
            if clip is not None:
                stages.append(clip)
        if kind is StageKind.QUANTIZE:
            if not 2 <= stage.bits <= 8:
                raise CodecError(f"codec stage {i}: bit width {stage.bits} outside 2..8")
            gamma = stage.companding_exponent or 1.0
            if (
                not 0.1 <= gamma <= 2.55
                or abs(gamma * 100 - round(gamma * 100)) > 1e-9
                or not math.isfinite(gamma)
            ):
                raise CodecError(
                    f"codec stage {i}: companding exponent {gamma} is not a multiple of 0.01 "
                    "in [0.1, 2.55]"
                )
            stages.append(
                CodecStage(
                    kind,
                    bits=stage.bits,
                    per_channel=stage.per_channel,
                    gamma=round(gamma * 100) / 100,
                )
            )
        elif kind is StageKind.SPARSIFY:
            index = _INDEX_FROM_PB.get(stage.sparse_index, SparseIndex.BITMAP)
            if stage.sparse_index and stage.sparse_index not in _INDEX_FROM_PB:
                raise CodecError(f"codec stage {i}: unknown SparseIndex {stage.sparse_index}")
            if stage.threshold < 0 or not 0 <= stage.keep_fraction <= 1:
                raise CodecError(
                    f"codec stage {i}: threshold must be >= 0, keep_fraction in [0, 1]"
                )
            stages.append(
                CodecStage(
                    kind,
                    sparse_index=index,
                    threshold=stage.threshold,
                    keep_fraction=stage.keep_fraction,
                )
            )
        elif kind is StageKind.ZSTD:
            stages.append(CodecStage(kind, level=stage.level or 3))
        else:
            stages.append(CodecStage(kind))
    if stages and not any(
        s.kind in (StageKind.RAW, StageKind.FLOAT16, StageKind.QUANTIZE) for s in stages
    ):
        stages.insert(0, CodecStage(StageKind.RAW))
    return CodecSpec(tuple(stages))


def _clip_to_proto(clip: CodecStage, msg: pb.CodecStage) -> None:
    if clip.clip_method is ClipMethod.PERCENTILE:
        msg.clip_percentile = clip.clip_percentile
    elif clip.clip_method is ClipMethod.MSE:
        msg.clip_mse = True
    else:
        msg.clip_low, msg.clip_high = clip.clip_min, clip.clip_max


def _clip_from_proto(stage: pb.CodecStage, i: int) -> CodecStage | None:
    """The clip folded into value stage ``i`` (validated as spec text is), or None."""
    fixed = stage.clip_low != 0.0 or stage.clip_high != 0.0
    if int(bool(stage.clip_percentile)) + int(stage.clip_mse) + int(fixed) > 1:
        raise CodecError(
            f"codec stage {i}: set at most one of clip_percentile, clip_mse, clip_low/clip_high"
        )
    if stage.clip_percentile:
        if not 50.0 <= stage.clip_percentile <= 100.0:
            raise CodecError(f"codec stage {i}: clip percentile must be in [50, 100]")
        return CodecStage(
            StageKind.CLIP, clip_method=ClipMethod.PERCENTILE, clip_percentile=stage.clip_percentile
        )
    if stage.clip_mse:
        return CodecStage(StageKind.CLIP, clip_method=ClipMethod.MSE)
    if fixed:
        lo, hi = stage.clip_low, stage.clip_high
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= 0.0 <= hi and lo < hi):
            raise CodecError(
                f"codec stage {i}: fixed clip range [{lo}, {hi}] must satisfy "
                "clip_low <= 0 <= clip_high and clip_low < clip_high"
            )
        return CodecStage(StageKind.CLIP, clip_method=ClipMethod.FIXED, clip_min=lo, clip_max=hi)
    return None


def quant_to_proto(quant: QuantParams) -> pb.QuantParams:
    """Message form of quantisation parameters, with the covered range as clip_min/clip_max."""
    top = quant.levels - 1
    zero = quant.zero_point.astype(np.float64)
    scale = quant.scale.astype(np.float64)
    return pb.QuantParams(
        scale=[float(s) for s in quant.scale],
        zero_point=[int(z) for z in quant.zero_point],
        channel_axis=-1 if quant.axis == PER_TENSOR else quant.axis,
        bits=quant.bits,
        clip_min=float(np.min(-zero * scale)) if quant.scale.size else 0.0,
        clip_max=float(np.max((top - zero) * scale)) if quant.scale.size else 0.0,
    )


def header_to_proto(header: FrameHeader) -> pb.EncodedTensorHeader:
    """EncodedTensorHeader describing a frame (``crc32c`` is the frame's CRC32C, see docs)."""
    msg = pb.EncodedTensorHeader(
        codec=spec_to_proto(header.spec),
        dtype=dtype_code(header.dtype),  # type: ignore[arg-type]
        shape=list(header.shape),
        original_bytes=header.original_bytes,
        coded_bytes=header.coded_bytes,
        crc32c=header.crc32c,
        entropy_model_id=header.entropy_model_id or "",
    )
    if header.quant is not None:
        msg.quant.CopyFrom(quant_to_proto(header.quant))
    return msg


__all__ = [
    "header_to_proto",
    "quant_to_proto",
    "spec_from_proto",
    "spec_to_proto",
]
