"""Feature codecs: compress intermediate activations for offloading, and decode them safely.

A codec is a pipeline described by a short spec (``"clip:p99.9|q4|sparse:bitmap|ans"``, grammar in
docs/codecs.md): optional clipping, a value stage (raw, float16, int8 or 2..7-bit affine
quantisation, per tensor or per channel), optional sparsification with a bitmap or run-length
index, and optional entropy coding (constriction ANS or range coder under an offline-fitted
model, or model-free zstd). :func:`encode` writes one self-describing frame (codec ids and
versions, dtype, shape, quantisation parameters, sizes, CRC32C); :func:`decode` validates all of
it against :class:`DecodeLimits` before allocating and raises :class:`common.errors.CodecError`
on any problem.
"""

from common.codecs._entropy import EntropyModel, empirical_entropy_bits
from common.codecs._frame import DecodeLimits, FrameHeader
from common.codecs._pipeline import decode, encode, fit_entropy_model, peek_header
from common.codecs._proto import spec_from_proto, spec_to_proto
from common.codecs._quant import QuantParams
from common.codecs._sparse import SparseParams
from common.codecs._spec import (
    ClipMethod,
    CodecSpec,
    CodecStage,
    SparseIndex,
    StageKind,
    parse_spec,
)

__all__ = [
    "ClipMethod",
    "CodecSpec",
    "CodecStage",
    "DecodeLimits",
    "EntropyModel",
    "FrameHeader",
    "QuantParams",
    "SparseIndex",
    "SparseParams",
    "StageKind",
    "decode",
    "empirical_entropy_bits",
    "encode",
    "fit_entropy_model",
    "parse_spec",
    "peek_header",
    "spec_from_proto",
    "spec_to_proto",
]
