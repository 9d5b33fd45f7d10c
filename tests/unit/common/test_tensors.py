"""common.tensors: round trips and size checks before any allocation."""

from __future__ import annotations

import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2

from common.dtypes import dtype_from_proto, dtype_from_v2, dtype_to_v2
from common.errors import InvalidArgument
from common.tensors import check_shape, from_proto, from_raw, to_proto, to_raw


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "int8", "uint8", "int32", "int64", "bool", "float64"]
)
def test_proto_round_trip(dtype: str) -> None:
    a = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    t = to_proto("x", a)
    assert t.name == "x" and list(t.shape) == [2, 3, 4]
    b = from_proto(t)
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)
    assert dtype_from_v2(dtype_to_v2(dtype)) == dtype


def test_big_endian_input_is_written_little_endian() -> None:
    a = np.arange(3, dtype=">i4")
    np.testing.assert_array_equal(from_raw("int32", [3], to_raw(a)), [0, 1, 2])


def test_an_empty_shape_numpy_cannot_describe_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="too large to describe"):
        from_raw("float32", [0, 2**62], b"")
    with pytest.raises(InvalidArgument, match="too large to describe"):
        check_shape([2**30, 0, 2**30], max_elements=1 << 40)
    assert from_raw("float32", [0, 1 << 20], b"").shape == (0, 1 << 20)


def test_size_mismatch_and_bad_types_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="needs 16"):
        from_raw("float32", [2, 2], b"\x00" * 12)
    with pytest.raises(InvalidArgument, match="negative"):
        check_shape([2, -1])
    with pytest.raises(InvalidArgument, match="over the limit"):
        check_shape([1 << 40, 1 << 40], max_elements=1000)
    with pytest.raises(InvalidArgument, match="unspecified"):
        dtype_from_proto(tensor_pb2.DATA_TYPE_UNSPECIFIED)
    with pytest.raises(InvalidArgument, match="BYTES"):
        dtype_from_v2("BYTES")
    coded = to_proto("x", np.zeros(2, np.float32))
    coded.encoding.original_bytes = 8
    with pytest.raises(InvalidArgument, match="coded"):
        from_proto(coded)
