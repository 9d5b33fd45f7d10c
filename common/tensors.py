"""numpy <-> tensor conversions shared by edge and cloud.

* ``aiml021.common.v1.Tensor`` (raw little-endian row-major ``contents``) via
  :func:`to_proto` / :func:`from_proto`;
* Triton/KServe-v2 tensors (raw bytes; datatype strings such as ``"FP32"`` map through
  :mod:`common.dtypes`) via :func:`from_raw` / :func:`to_raw` — plain values only, so this module
  never imports the ``inference`` protobuf package (it cannot share a process with tritonclient).

Sizes are checked before any array is built: a shape whose element count does not match the
bytes received raises :class:`common.errors.InvalidArgument`, and nothing is allocated from a
declared shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from aiml021.common.v1 import tensor_pb2

from common.dtypes import dtype_from_proto, dtype_to_proto
from common.errors import InvalidArgument

MAX_DIMENSIONS_PRODUCT = 1 << 48
"""Largest product of a shape's non-zero dimensions accepted: numpy cannot even describe an
(empty) array past about 2**63 bytes, e.g. ``[0, 2**62]``."""


def check_shape(shape: Sequence[int], max_elements: int | None = None) -> int:
    """Element count of ``shape``; InvalidArgument for negative dims or too many elements
    (counting the non-zero dimensions too, so an empty ``[0, 2**62]`` is refused as well)."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"shape {dims} has a negative dimension")
    count = math.prod(dims)
    if max_elements is not None and count > max_elements:
        raise InvalidArgument(f"shape {dims} has {count} elements, over the limit {max_elements}")
    limit = MAX_DIMENSIONS_PRODUCT if max_elements is None else max_elements
    if count == 0 and math.prod(d for d in dims if d) > limit:
        raise InvalidArgument(f"shape {dims} is too large to describe (over {limit} elements)")
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
    "MAX_DIMENSIONS_PRODUCT",
    "check_shape",
    "from_proto",
    "from_raw",
    "to_proto",
    "to_raw",
]
