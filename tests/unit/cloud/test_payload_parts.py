"""Multi-tensor session headers (InferHeader.parts): every part is held to the model input it
names before a byte is buffered; anything a hostile device can put in the header is a precise
INVALID_ARGUMENT naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2

from cloud.core import ModelSpec, PayloadFormat, PayloadPart, TensorSpec
from cloud.core._codec import split_payload
from cloud.core._validate import check_payload_parts
from cloud.grpc._converters import header_from_pb
from common.errors import InvalidArgument

SPEC = ModelSpec(
    "tail",
    "1",
    Path("tail.onnx"),
    (
        TensorSpec("c2", "float32", (-1, 8, -1, -1)),
        TensorSpec("c3", "float32", (-1, 16, -1, -1)),
    ),
    (TensorSpec("map", "float32", (-1, 1, -1, -1)),),
    4,
)


def _part(name: str, shape: tuple[int, ...], nbytes: int, dtype: str = "float32") -> PayloadPart:
    return PayloadPart(name, PayloadFormat(dtype, shape, ()), nbytes)


GOOD = (_part("c2", (1, 8, 4, 4), 512), _part("c3", (1, 16, 2, 2), 256))


def test_parts_matching_the_inputs_give_the_batch_size() -> None:
    assert check_payload_parts(SPEC, GOOD, 768) == 1
    # in any order, and one sample may leave out the batch dimension
    assert check_payload_parts(SPEC, (GOOD[1], _part("c2", (8, 4, 4), 512)), 768) == 1
    assert split_payload(bytes(range(6)), (_part("a", (), 2), _part("b", (), 4))) == [
        b"\x00\x01",
        b"\x02\x03\x04\x05",
    ]


@pytest.mark.parametrize(
    ("parts", "total", "message"),
    [
        (GOOD[:1], 512, "one part per input"),
        ((*GOOD, _part("c4", (1, 8, 1, 1), 4)), 772, "one part per input"),
        ((GOOD[0], GOOD[0]), 1024, "one part per input"),
        ((GOOD[0], _part("c3", (1, 16, 2, 2), 0)), 512, "payload_bytes must be > 0"),
        (GOOD, 769, "carry 768 bytes but total_bytes is 769"),
        ((GOOD[0], _part("c3", (1, 16, 2, 2), 256, "float64")), 768, "dtype float64"),
        ((GOOD[0], _part("c3", (1, 15, 2, 2), 256)), 768, r"'c3' \(InferHeader.parts 'c3'\)"),
        ((GOOD[0], _part("c3", (2, 16, 2, 2), 512)), 1024, "disagree on the batch size"),
        ((_part("c2", (9, 8, 4, 4), 512), GOOD[1]), 768, "exceeds max batch size 4"),
    ],
)
def test_parts_that_do_not_fit_the_model_are_rejected(
    parts: tuple[PayloadPart, ...], total: int, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_payload_parts(SPEC, parts, total)


def test_ten_thousand_parts_are_refused_by_count() -> None:
    many = tuple(_part(f"t{i}", (1,), 4) for i in range(10_000))
    with pytest.raises(InvalidArgument, match=r"names \['t0', .*'\.\.\.'\]") as err:
        check_payload_parts(SPEC, many, 40_000)
    assert len(str(err.value)) < 300  # the message names a few, not ten thousand


def _header(**kw: object) -> session_pb2.InferHeader:
    h = session_pb2.InferHeader(request_id="r", model_name="tail", total_bytes=768, **kw)  # type: ignore[arg-type]
    for name, shape, n in (("c2", (1, 8, 4, 4), 512), ("c3", (1, 16, 2, 2), 256)):
        h.parts.add(
            name=name,
            encoding=tensor_pb2.EncodedTensorHeader(
                dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=shape
            ),
            payload_bytes=n,
        )
    return h


def test_the_converter_reads_parts_in_order() -> None:
    h = header_from_pb(_header())
    assert [(p.name, p.format.shape, p.nbytes) for p in h.parts] == [
        ("c2", (1, 8, 4, 4), 512),
        ("c3", (1, 16, 2, 2), 256),
    ]
    assert h.payload.codec_name == "parts"


def test_the_converter_rejects_parts_beside_an_encoding_and_negative_dims() -> None:
    enc = tensor_pb2.EncodedTensorHeader(dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[1, 4])
    with pytest.raises(InvalidArgument, match="encoding must be unset"):
        header_from_pb(_header(encoding=enc))
    bad = _header()
    bad.parts[1].encoding.shape[1] = -16
    with pytest.raises(InvalidArgument, match="negative dimension"):
        header_from_pb(bad)
    unspecified = _header()
    unspecified.parts[0].encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_UNSPECIFIED)
    with pytest.raises(InvalidArgument, match="CODEC_KIND_UNSPECIFIED"):
        header_from_pb(unspecified)
