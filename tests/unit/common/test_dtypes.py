"""common.dtypes: the one dtype table, every row under every name, unknown names rejected."""

from __future__ import annotations

import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2

from common import dtypes
from common.errors import InvalidArgument


def test_every_wire_data_type_but_unspecified_has_a_row() -> None:
    wire = {v for v in tensor_pb2.DataType.values() if v != tensor_pb2.DATA_TYPE_UNSPECIFIED}
    assert {d.proto for d in dtypes.DTYPES} == wire


@pytest.mark.parametrize("row", dtypes.DTYPES, ids=lambda d: d.name)
def test_row_round_trips_through_every_name(row: dtypes.DType) -> None:
    assert dtypes.lookup(row.name) is row
    assert dtypes.lookup(np.dtype(row.name)) is row
    assert dtypes.lookup(np.dtype(row.name).newbyteorder(">")) is row
    assert dtypes.by_proto(row.proto) is row
    assert dtypes.by_v2(row.v2) is row
    assert dtypes.dtype_from_proto(dtypes.dtype_to_proto(row.name)) == row.name
    assert dtypes.dtype_from_v2(dtypes.dtype_to_v2(row.name)) == row.name
    assert row.numpy == np.dtype(row.name).newbyteorder("<")
    assert row.itemsize == np.dtype(row.name).itemsize
    assert row.triton_config == f"TYPE_{row.v2}"
    assert row.name in dtypes.NAMES


def test_names_are_unique_in_every_column() -> None:
    for column in ("name", "proto", "v2"):
        values = [getattr(d, column) for d in dtypes.DTYPES]
        assert len(set(values)) == len(values), column


def test_contents_fields_exist_on_kserve_infer_tensor_contents() -> None:
    from inference import grpc_service_pb2 as pb

    fields = set(pb.InferTensorContents.DESCRIPTOR.fields_by_name)
    for row in dtypes.DTYPES:
        assert row.contents_field is None or row.contents_field in fields
    assert dtypes.by_v2("FP16").contents_field is None  # no typed field: raw bytes only


def test_triton_config_names_exist_in_the_model_config_enum() -> None:
    from inference import model_config_pb2 as mc

    for row in dtypes.DTYPES:
        assert mc.DataType.Name(mc.DataType.Value(row.triton_config)) == row.triton_config


@pytest.mark.parametrize(
    ("call", "arg", "words"),
    [
        (dtypes.by_proto, tensor_pb2.DATA_TYPE_UNSPECIFIED, "unspecified"),
        (dtypes.by_proto, 99, "99"),
        (dtypes.by_v2, "BYTES", "BYTES"),
        (dtypes.by_v2, "fp32", "supported: BOOL"),
        (dtypes.lookup, "complex64", "no wire type"),
        (dtypes.lookup, np.dtype("uint16"), "uint16"),
        (dtypes.lookup, "not-a-dtype", "no wire type"),
    ],
)
def test_unknown_values_are_rejected_with_invalid_argument(call, arg, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=words):
        call(arg)
