"""Inputs against a model spec: the one place names, dtypes, shapes and batch sizes are checked.

KServe and REST requests arrive as arrays and are checked by :func:`validate_inputs`; a session
request is checked once, from what its header declares, by :func:`check_payload_format` before a
byte of it is buffered (its decoded tensor is then held to that declaration by the codec, so the
data plane does not check it again: ``DataPlane.submit(..., rows=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cloud.core._codec import PayloadFormat, PayloadPart
from cloud.core._types import ModelSpec, TensorSpec
from common.errors import InvalidArgument


def check_input(
    spec: ModelSpec, t: TensorSpec, dtype: object, shape: Sequence[int], where: str = ""
) -> int:
    """Check one input's dtype and shape (batch dimension first) against ``t``; returns the
    batch size. ``where`` names what declared them, for the message."""
    if dtype != t.dtype:
        raise InvalidArgument(
            f"model {spec.key}: input {t.name!r}{where} has dtype {dtype}, expected {t.dtype}"
        )
    if (
        len(shape) != len(t.shape)
        or not shape
        or any(w != -1 and w != g for w, g in zip(t.shape[1:], shape[1:], strict=True))
    ):
        raise InvalidArgument(
            f"model {spec.key}: input {t.name!r}{where} has shape {list(shape)}, expected "
            f"{list(t.shape)} (-1 = any)"
        )
    rows = int(shape[0])
    if rows < 1:
        raise InvalidArgument(f"model {spec.key}: empty batch")
    if rows > spec.max_batch_size:
        raise InvalidArgument(
            f"model {spec.key}: batch of {rows} exceeds max batch size {spec.max_batch_size}"
        )
    return rows


def validate_inputs(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
    """Check names, dtypes and shapes against ``spec``; returns the batch size (rows)."""
    wanted = {t.name for t in spec.inputs}
    unknown = set(inputs) - wanted
    if unknown:
        raise InvalidArgument(
            f"model {spec.key}: unknown input(s) {sorted(unknown)} (inputs: {sorted(wanted)})"
        )
    rows = -1
    for t in spec.inputs:
        arr = inputs.get(t.name)
        if arr is None:
            raise InvalidArgument(f"model {spec.key}: missing input {t.name!r}")
        n = check_input(spec, t, arr.dtype, arr.shape)
        if rows not in (-1, n):
            raise InvalidArgument(f"model {spec.key}: inputs disagree on the batch size")
        rows = n
    if rows < 1:
        raise InvalidArgument(f"model {spec.key}: empty batch")
    return rows


def check_outputs(spec: ModelSpec, outputs: Sequence[str]) -> None:
    """Check requested output names against ``spec`` before anything is queued: an unknown or
    repeated name is INVALID_ARGUMENT naming it."""
    known = [t.name for t in spec.outputs]
    seen: set[str] = set()
    for name in outputs:
        if name not in known:
            shown = name if len(name) <= 64 else f"{name[:64]}... ({len(name)} characters)"
            raise InvalidArgument(f"model {spec.key} has no output {shown!r} (outputs: {known})")
        if name in seen:
            raise InvalidArgument(f"model {spec.key}: output {name!r} requested twice")
        seen.add(name)


def wire_bytes_per_element(dtype: str) -> int:
    """Most bytes one element of ``dtype`` takes in a request: its size raw or as packed
    floats; a varint as typed contents (up to 10 bytes for signed and 64-bit integers, 5 for
    smaller unsigned ones, 1 for bool)."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return 1
    if dt.kind == "i" or (dt.kind == "u" and dt.itemsize == 8):
        return 10
    if dt.kind == "u":
        return 5
    return dt.itemsize


def largest_request_bytes(specs: Iterable[ModelSpec]) -> int | None:
    """Bytes of the inputs of the largest request any of ``specs`` can take (a full batch, at
    :func:`wire_bytes_per_element`); None when a model has a dynamic dimension besides the batch
    (its requests have no size bound)."""
    largest = 0
    for spec in specs:
        size = 0
        for t in spec.inputs:
            if any(d < 0 for d in t.shape[1:]):
                return None
            elements = spec.max_batch_size * math.prod(t.shape[1:])
            size += elements * wire_bytes_per_element(t.dtype)
        largest = max(largest, size)
    return largest


def check_payload_format(spec: ModelSpec, fmt: PayloadFormat) -> int:
    """Check a session header's declared payload against ``spec`` (its one input; the shape may
    omit the batch dimension of one sample); returns the batch size."""
    if len(spec.inputs) != 1:
        raise InvalidArgument(
            f"model {spec.key} takes {len(spec.inputs)} inputs; sessions send one"
        )
    t = spec.inputs[0]
    shape = fmt.shape if len(fmt.shape) == len(t.shape) else (1, *fmt.shape)
    return check_input(spec, t, fmt.dtype, shape, " (InferHeader.encoding)")


def check_payload_parts(spec: ModelSpec, parts: Sequence[PayloadPart], total_bytes: int) -> int:
    """Check a multi-tensor session header (``InferHeader.parts``) against ``spec``: one part per
    input, each declared like a single payload, one batch size, sizes adding up to
    ``total_bytes``; returns the batch size."""
    names = [t.name for t in spec.inputs]
    given = [p.name for p in parts]
    if len(given) != len(names) or set(given) != set(names):
        shown = given[:8] + (["..."] if len(given) > 8 else [])
        raise InvalidArgument(
            f"model {spec.key} takes inputs {names}; InferHeader.parts names {shown} "
            "(one part per input, each once)"
        )
    by_name = {t.name: t for t in spec.inputs}
    rows = -1
    for part in parts:
        if part.nbytes <= 0:
            raise InvalidArgument(f"part {part.name!r}: payload_bytes must be > 0")
        t = by_name[part.name]
        fmt = part.format
        shape = fmt.shape if len(fmt.shape) == len(t.shape) else (1, *fmt.shape)
        n = check_input(spec, t, fmt.dtype, shape, f" (InferHeader.parts {part.name!r})")
        if rows not in (-1, n):
            raise InvalidArgument(f"model {spec.key}: InferHeader.parts disagree on the batch size")
        rows = n
    if sum(p.nbytes for p in parts) != total_bytes:
        raise InvalidArgument(
            f"InferHeader.parts carry {sum(p.nbytes for p in parts)} bytes but total_bytes is "
            f"{total_bytes}; they must be equal"
        )
    return rows


__all__ = [
    "check_input",
    "check_outputs",
    "check_payload_format",
    "check_payload_parts",
    "largest_request_bytes",
    "validate_inputs",
    "wire_bytes_per_element",
]
