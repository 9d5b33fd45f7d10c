"""KServe-v2 REST JSON tensors: request body -> core request, core result -> response body.

Sizes declared by the client (shape, element count) are checked against a limit before any
array is allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.core import InferenceRequest, InferenceResult
from common.dtypes import DTYPES, dtype_from_v2, dtype_to_v2
from common.errors import InvalidArgument

_MAX_ELEMENTS = 16 * 1024 * 1024


def v2_request(doc: Any, name: str, version: str) -> InferenceRequest:
    """Core request of a KServe-v2 REST body ``{"id", "inputs": [{name, datatype, shape, data}], "outputs"}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidArgument('body must be an object with a non-empty "inputs" array')
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(doc["inputs"]):
        if not isinstance(t, dict):
            raise InvalidArgument(f"inputs[{i}] must be an object")
        tname, datatype, shape, data = (
            t.get("name"),
            t.get("datatype"),
            t.get("shape"),
            t.get("data"),
        )
        if not isinstance(tname, str) or not tname or not isinstance(datatype, str):
            raise InvalidArgument(f"inputs[{i}] needs a string name and datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_ELEMENTS
            for d in shape
        ):
            raise InvalidArgument(f"inputs[{i}].shape must be a list of non-negative integers")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > _MAX_ELEMENTS:
            raise InvalidArgument(f"inputs[{i}] has {count} elements; the limit is {_MAX_ELEMENTS}")
        dtype = dtype_from_v2(datatype)
        flat = data
        if not isinstance(flat, list):
            raise InvalidArgument(f"inputs[{i}].data must be an array")
        try:
            with np.errstate(over="raise", invalid="raise"):  # 1e39 as FP32: refused, not inf
                arr = np.asarray(flat, dtype=dtype)
        except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
            raise InvalidArgument(
                f"inputs[{i}].data does not hold {datatype} values: {exc}"
            ) from None
        if arr.size != count:
            raise InvalidArgument(f"inputs[{i}]: {arr.size} values but shape {shape} needs {count}")
        if tname in inputs:
            raise InvalidArgument(f"input {tname!r} given twice")
        inputs[tname] = arr.reshape(shape)
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('"outputs" must be an array of {"name": ...} objects')
    rid = doc.get("id", "")
    return InferenceRequest(
        model_name=name,
        model_version=version,
        inputs=inputs,
        outputs=tuple(o["name"] for o in outputs),
        request_id=rid if isinstance(rid, str) else "",
        api="rest",
    )


def v2_response(result: InferenceResult, request_id: str) -> dict[str, Any]:
    """KServe-v2 REST response body of ``result``."""
    return {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "id": request_id,
        "outputs": [
            {
                "name": n,
                "datatype": dtype_to_v2(a.dtype),
                "shape": list(a.shape),
                "data": a.reshape(-1).tolist(),
            }
            for n, a in result.outputs.items()
        ],
    }


V2_TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {
            "type": "string",
            "enum": sorted(d.v2 for d in DTYPES),
        },
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array"},
    },
}
"""JSON schema of one KServe-v2 tensor (for the OpenAPI document)."""


__all__ = ["V2_TENSOR_SCHEMA", "v2_request", "v2_response"]
