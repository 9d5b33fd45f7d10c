from __future__ import annotations

import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2 as pb

from common.codecs import decode, encode, fit_entropy_model, parse_spec, peek_header
from common.codecs._proto import (
    dtype_from_proto,
    dtype_to_proto,
    header_to_proto,
    spec_from_proto,
    spec_to_proto,
)
from common.errors import CodecError


@pytest.mark.parametrize(
    "text",
    [
        "raw",
        "f16|sparse:rle|zstd:9",
        "clip:p99.9|q4:per_channel|sparse:bitmap,thr=0.25|ans",
        "clip:mse|q3|range",
        "clip:0,3.5|q2|sparse:rle,top=0.2|ans",
        "int8",
    ],
)
def test_spec_round_trips_through_the_message(text: str) -> None:
    spec = parse_spec(text)
    msg = pb.CodecSpec.FromString(spec_to_proto(spec).SerializeToString())
    assert msg.text == str(spec)
    assert spec_from_proto(msg) == spec


@pytest.mark.parametrize(
    "text",
    [
        "raw",
        "f16|sparse:rle|zstd:9",
        "clip:p99.9|q4:per_channel|sparse:bitmap,thr=0.25|ans",
        "q2|range",
    ],
)
def test_stages_alone_describe_specs_the_proto_can_express(text: str) -> None:
    msg = spec_to_proto(parse_spec(text))
    msg.text = ""
    assert spec_from_proto(msg) == parse_spec(text)


def test_stages_from_other_clients_are_validated() -> None:
    with pytest.raises(CodecError, match="unspecified"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage()]))
    with pytest.raises(CodecError, match="bit width"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_QUANTIZE, bits=12)]))
    with pytest.raises(CodecError, match="add int8 or qN"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_ANS)]))
    zstd_only = pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_ZSTD)])
    assert str(spec_from_proto(zstd_only)) == "raw|zstd"


def test_dtypes() -> None:
    for dtype in ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"]:
        assert dtype_from_proto(dtype_to_proto(np.dtype(dtype))) == np.dtype(dtype)
    assert dtype_to_proto(np.dtype("float32")) == pb.DATA_TYPE_FLOAT32
    with pytest.raises(CodecError, match="unspecified"):
        dtype_from_proto(pb.DATA_TYPE_UNSPECIFIED)


def test_header_message_describes_the_frame(activation: np.ndarray) -> None:
    model = fit_entropy_model("clip:0,4|q3|ans", [activation])
    frame = encode(activation, "clip:0,4|q3|ans", entropy_model=model)
    msg = header_to_proto(peek_header(frame))
    assert list(msg.shape) == [1, 32, 14, 14] and msg.dtype == pb.DATA_TYPE_FLOAT32
    assert msg.codec.text == "q3|ans"
    assert msg.original_bytes == activation.nbytes
    assert msg.coded_bytes == peek_header(frame).coded_bytes < len(frame)
    assert msg.entropy_model_id == model.model_id_hex
    assert msg.quant.bits == 3 and msg.quant.channel_axis == -1
    assert list(msg.quant.zero_point) == [0]
    assert msg.quant.clip_min == 0.0 and msg.quant.clip_max == pytest.approx(4.0)
    assert decode(frame, entropy_models=model).shape == activation.shape


def test_per_channel_header(activation: np.ndarray) -> None:
    msg = header_to_proto(peek_header(encode(activation, "int8:per_channel")))
    assert msg.quant.channel_axis == 1 and len(msg.quant.scale) == 32
    assert msg.HasField("quant") is not False
    raw = header_to_proto(peek_header(encode(activation, "raw")))
    assert not raw.HasField("quant") and raw.entropy_model_id == ""
