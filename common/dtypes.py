"""The one dtype table: every name a tensor element type has on every side of the product.

=========  ===========================  ==========  ======================  =====================
numpy      aiml021.common.v1.DataType   KServe-v2   Triton model config     InferTensorContents
=========  ===========================  ==========  ======================  =====================
float32    DATA_TYPE_FLOAT32            FP32        TYPE_FP32               fp32_contents
float16    DATA_TYPE_FLOAT16            FP16        TYPE_FP16               (raw bytes only)
float64    DATA_TYPE_FLOAT64            FP64        TYPE_FP64               fp64_contents
int8       DATA_TYPE_INT8               INT8        TYPE_INT8               int_contents
uint8      DATA_TYPE_UINT8              UINT8       TYPE_UINT8              uint_contents
int32      DATA_TYPE_INT32              INT32       TYPE_INT32              int_contents
int64      DATA_TYPE_INT64              INT64       TYPE_INT64              int64_contents
bool       DATA_TYPE_BOOL               BOOL        TYPE_BOOL               bool_contents
=========  ===========================  ==========  ======================  =====================

The codec frame stores the DataType number in its dtype byte, so the frame format reads this
table too. Triton's model-config enum is named ``TYPE_`` + the KServe-v2 string; this module
gives the name (:attr:`DType.triton_config`) and never imports the ``inference`` protobuf package
(it cannot share a process with tritonclient).

Unknown or unspecified values are rejected with :class:`common.errors.InvalidArgument`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from aiml021.common.v1 import tensor_pb2

from common.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class DType:
    """One element type under each of its names."""

    name: str
    """numpy dtype name (``"float32"``)."""
    proto: int
    """``aiml021.common.v1.DataType`` number (also the codec frame's dtype byte)."""
    v2: str
    """KServe-v2 / Triton datatype string (``"FP32"``)."""
    contents_field: str | None
    """``InferTensorContents`` field carrying typed values; None: raw bytes only."""
    numpy: np.dtype = field(init=False, repr=False, compare=False)
    """The numpy dtype, little-endian (the byte order of every wire format here)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "numpy", np.dtype(self.name).newbyteorder("<"))

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return int(self.numpy.itemsize)

    @property
    def triton_config(self) -> str:
        """Name of Triton's ``inference.DataType`` model-config value (``"TYPE_FP32"``)."""
        return f"TYPE_{self.v2}"


DTYPES: tuple[DType, ...] = (
    DType("float32", tensor_pb2.DATA_TYPE_FLOAT32, "FP32", "fp32_contents"),
    DType("float16", tensor_pb2.DATA_TYPE_FLOAT16, "FP16", None),
    DType("float64", tensor_pb2.DATA_TYPE_FLOAT64, "FP64", "fp64_contents"),
    DType("int8", tensor_pb2.DATA_TYPE_INT8, "INT8", "int_contents"),
    DType("uint8", tensor_pb2.DATA_TYPE_UINT8, "UINT8", "uint_contents"),
    DType("int32", tensor_pb2.DATA_TYPE_INT32, "INT32", "int_contents"),
    DType("int64", tensor_pb2.DATA_TYPE_INT64, "INT64", "int64_contents"),
    DType("bool", tensor_pb2.DATA_TYPE_BOOL, "BOOL", "bool_contents"),
)
"""Every element type a tensor may have anywhere in the product."""

NAMES: frozenset[str] = frozenset(d.name for d in DTYPES)
"""numpy names of the supported dtypes."""

_BY_NAME = {d.name: d for d in DTYPES}
_BY_PROTO = {d.proto: d for d in DTYPES}
_BY_V2 = {d.v2: d for d in DTYPES}
_SUPPORTED = ", ".join(d.name for d in DTYPES)


def lookup(dtype: str | np.dtype) -> DType:
    """Table row of a numpy dtype (any byte order); InvalidArgument when no wire type carries it."""
    row = _BY_NAME.get(dtype) if isinstance(dtype, str) else None
    if row is None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
        row = _BY_NAME.get(name)
        if row is None:
            raise InvalidArgument(f"dtype {name} has no wire type (supported: {_SUPPORTED})")
    return row


def by_proto(value: int) -> DType:
    """Table row of an ``aiml021.common.v1.DataType`` number; UNSPECIFIED and unknown values
    raise InvalidArgument."""
    row = _BY_PROTO.get(int(value))
    if row is None:
        raise InvalidArgument(f"unsupported or unspecified tensor data type {value}")
    return row


def by_v2(datatype: str) -> DType:
    """Table row of a KServe-v2 datatype string (``"FP32"``)."""
    row = _BY_V2.get(datatype)
    if row is None:
        raise InvalidArgument(
            f"unsupported datatype {datatype!r} (supported: {', '.join(sorted(_BY_V2))})"
        )
    return row


def dtype_from_proto(value: int) -> str:
    """numpy dtype name of an ``aiml021.common.v1.DataType`` (UNSPECIFIED is rejected)."""
    return by_proto(value).name


def dtype_to_proto(dtype: str | np.dtype) -> int:
    """``aiml021.common.v1.DataType`` of a numpy dtype."""
    return lookup(dtype).proto


def dtype_from_v2(datatype: str) -> str:
    """numpy dtype name of a KServe-v2 datatype string (``"FP32"`` -> ``"float32"``)."""
    return by_v2(datatype).name


def dtype_to_v2(dtype: str | np.dtype) -> str:
    """KServe-v2 datatype string of a numpy dtype."""
    return lookup(dtype).v2


__all__ = [
    "DTYPES",
    "NAMES",
    "DType",
    "by_proto",
    "by_v2",
    "dtype_from_proto",
    "dtype_from_v2",
    "dtype_to_proto",
    "dtype_to_v2",
    "lookup",
]
