"""numpy <-> tensor conversions shared by edge and cloud.

* ``aiml021.common.v1.Tensor`` (raw little-endian row-major ``contents``) via
  :func:`to_proto` / :func:`from_proto`;
* Triton/KServe-v2 tensors (datatype strings such as ``"FP32"``, raw bytes) via
  :func:`from_raw` / :func:`to_raw` — plain values only, so this module never imports the
  ``inference`` protobuf package (it cannot share a process with tritonclient).

Sizes are checked before any array is built: a shape whose element count does not match the
bytes received raises :class:`common.errors.InvalidArgument`, and nothing is allocated from a
declared shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from aiml021.common.v1 import tensor_pb2

from common.errors import InvalidArgument

# numpy dtype name <-> aiml021.common.v1.DataType <-> KServe-v2 datatype string
_DTYPES: tuple[tuple[str, int, str], ...] = (
    ("float32", tensor_pb2.DATA_TYPE_FLOAT32, "FP32"),
    ("float16", tensor_pb2.DATA_TYPE_FLOAT16, "FP16"),
    ("int8", tensor_pb2.DATA_TYPE_INT8, "INT8"),
    ("uint8", tensor_pb2.DATA_TYPE_UINT8, "UINT8"),
    ("int32", tensor_pb2.DATA_TYPE_INT32, "INT32"),
    ("int64", tensor_pb2.DATA_TYPE_INT64, "INT64"),
    ("bool", tensor_pb2.DATA_TYPE_BOOL, "BOOL"),
    ("float64", tensor_pb2.DATA_TYPE_FLOAT64, "FP64"),
)
_NP_BY_PROTO = {p: n for n, p, _ in _DTYPES}
_PROTO_BY_NP = {n: p for n, p, _ in _DTYPES}
_NP_BY_V2 = {v: n for n, _, v in _DTYPES}
_V2_BY_NP = {n: v for n, _, v in _DTYPES}


def dtype_from_proto(value: int) -> str:
    """numpy dtype name of an ``aiml021.common.v1.DataType`` (UNSPECIFIED is rejected)."""
    name = _NP_BY_PROTO.get(value)
    if name is None:
        raise InvalidArgument(f"unsupported or unspecified tensor data type {value}")
    return name


def dtype_to_proto(dtype: str | np.dtype) -> int:
    """``aiml021.common.v1.DataType`` of a numpy dtype."""
    name = np.dtype(dtype).name
    if name not in _PROTO_BY_NP:
        raise InvalidArgument(f"dtype {name} has no wire type")
    return _PROTO_BY_NP[name]


def dtype_from_v2(datatype: str) -> str:
    """numpy dtype name of a KServe-v2 datatype string (``"FP32"`` -> ``"float32"``)."""
    name = _NP_BY_V2.get(datatype)
    if name is None:
        raise InvalidArgument(
            f"unsupported datatype {datatype!r} (supported: {', '.join(sorted(_NP_BY_V2))})"
        )
    return name


def dtype_to_v2(dtype: str | np.dtype) -> str:
    """KServe-v2 datatype string of a numpy dtype."""
    name = np.dtype(dtype).name
    if name not in _V2_BY_NP:
        raise InvalidArgument(f"dtype {name} has no KServe-v2 datatype")
    return _V2_BY_NP[name]


def check_shape(shape: Sequence[int], max_elements: int | None = None) -> int:
    """Element count of ``shape``; InvalidArgument for negative dims or too many elements."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"shape {dims} has a negative dimension")
    count = math.prod(dims)
    if max_elements is not None and count > max_elements:
        raise InvalidArgument(f"shape {dims} has {count} elements, over the limit {max_elements}")
    return count


def from_raw(dtype: str, shape: Sequence[int], contents: bytes) -> np.ndarray:
    """Array of numpy ``dtype`` and ``shape`` viewing raw little-endian ``contents``.

    The byte count must equal ``prod(shape) * itemsize`` exactly. The array is read-only and
    shares memory with ``contents``.
    """
    dt = np.dtype(dtype).newbyteorder("<")
    count = check_shape(shape)
    need = count * dt.itemsize
    if len(contents) != need:
        raise InvalidArgument(
            f"contents have {len(contents)} bytes but shape {list(shape)} of {dt.name} needs {need}"
        )
    return np.frombuffer(contents, dtype=dt).reshape([int(d) for d in shape])


def to_raw(arr: np.ndarray) -> bytes:
    """Raw little-endian row-major bytes of ``arr``."""
    a = np.asarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.ascontiguousarray(a).tobytes()


def to_proto(name: str, arr: np.ndarray) -> tensor_pb2.Tensor:
    """An ``aiml021.common.v1.Tensor`` with raw contents."""
    a = np.asarray(arr)
    t = tensor_pb2.Tensor(name=name, shape=list(a.shape), contents=to_raw(a))
    t.dtype = dtype_to_proto(a.dtype)  # type: ignore[assignment]
    return t


def from_proto(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """The array of a raw ``aiml021.common.v1.Tensor`` (coded tensors go through common.codecs)."""
    if tensor.HasField("encoding"):
        raise InvalidArgument(f"tensor {tensor.name!r} is coded; decode it with common.codecs")
    return from_raw(dtype_from_proto(tensor.dtype), tensor.shape, tensor.contents)


__all__ = [
    "check_shape",
    "dtype_from_proto",
    "dtype_from_v2",
    "dtype_to_proto",
    "dtype_to_v2",
    "from_proto",
    "from_raw",
    "to_proto",
    "to_raw",
]
