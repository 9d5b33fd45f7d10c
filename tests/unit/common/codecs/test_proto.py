from __future__ import annotations

import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2 as pb

from common.codecs import decode, encode, fit_entropy_model, parse_spec, peek_header
from common.codecs._frame import dtype_code
from common.codecs._proto import header_to_proto, spec_from_proto, spec_to_proto
from common.dtypes import by_proto
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
        "q2:pow=0.7",
        "clip:mse|q3|range",
        "clip:0,3.06|q2:per_channel,pow=0.7|sparse:rle,top=0.2|ans",
        "clip:-1.5,2|int8:pow=1.25",
        "clip:p99|f16",
        "clip:0,3.06",
    ],
)
def test_stages_alone_describe_every_spec(text: str) -> None:
    msg = pb.CodecSpec.FromString(spec_to_proto(parse_spec(text)).SerializeToString())
    msg.text = ""
    assert spec_from_proto(msg) == parse_spec(text)
    assert str(spec_from_proto(msg)) == str(parse_spec(text))


def test_companding_and_clip_fields_are_filled() -> None:
    [q] = spec_to_proto(parse_spec("clip:0,3.06|q2:pow=0.7")).stages
    assert q.companding_exponent == pytest.approx(0.7)
    assert (q.clip_low, q.clip_high, q.clip_mse, q.clip_percentile) == (0.0, 3.06, False, 0.0)
    [q] = spec_to_proto(parse_spec("clip:mse|q3")).stages
    assert q.clip_mse and q.companding_exponent == 0.0  # 0 = unset = plain affine
    assert (q.clip_low, q.clip_high, q.clip_percentile) == (0.0, 0.0, 0.0)


def test_codecs_package_exports_the_converters() -> None:
    import common.codecs as codecs

    assert codecs.spec_to_proto is spec_to_proto and codecs.spec_from_proto is spec_from_proto
    assert {"spec_to_proto", "spec_from_proto"} <= set(codecs.__all__)


def _quant(**fields: object) -> pb.CodecSpec:
    return pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_QUANTIZE, bits=4, **fields)])


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"companding_exponent": 3.0}, "companding exponent"),
        ({"companding_exponent": 0.705}, "companding exponent"),
        ({"companding_exponent": float("nan")}, "companding exponent"),
        ({"clip_low": 1.0, "clip_high": 2.0}, "clip_low <= 0 <= clip_high"),
        ({"clip_low": -1.0, "clip_high": float("inf")}, "clip_low <= 0 <= clip_high"),
        ({"clip_mse": True, "clip_percentile": 99.0}, "at most one"),
        ({"clip_mse": True, "clip_high": 2.0}, "at most one"),
        ({"clip_percentile": 20.0}, "percentile"),
    ],
)
def test_companding_and_clip_fields_are_validated(fields: dict[str, object], words: str) -> None:
    with pytest.raises(CodecError, match=words):
        spec_from_proto(_quant(**fields))


def test_stages_from_other_clients_are_validated() -> None:
    with pytest.raises(CodecError, match="unspecified"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage()]))
    with pytest.raises(CodecError, match="bit width"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_QUANTIZE, bits=12)]))
    with pytest.raises(CodecError, match="add int8 or qN"):
        spec_from_proto(pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_ANS)]))
    zstd_only = pb.CodecSpec(stages=[pb.CodecStage(kind=pb.CODEC_KIND_ZSTD)])
    assert str(spec_from_proto(zstd_only)) == "raw|zstd"


def test_frame_dtype_code_is_the_data_type_number() -> None:
    for dtype in ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"]:
        assert by_proto(dtype_code(np.dtype(dtype))).numpy == np.dtype(dtype)
    assert dtype_code(np.dtype(">f4")) == pb.DATA_TYPE_FLOAT32
    with pytest.raises(CodecError, match="cannot be coded"):
        dtype_code(np.dtype("complex64"))


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
