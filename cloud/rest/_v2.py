"""KServe-v2 REST bodies: JSON tensors and Triton's binary-data extension, both ways.

A request body is JSON, or (binary-data extension) a JSON header of ``Inference-Header-Content-
Length`` bytes followed by the raw bytes of the inputs whose ``parameters.binary_data_size`` says
so, in input order. Outputs come back as JSON ``data`` or, when asked (``binary_data_output`` for
all, ``binary_data`` per output), as raw bytes after the JSON header, the way ``tritonclient.http``
sends and reads them by default. Sizes declared by the client (shape, element count, binary
sizes) are checked against limits before any array is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cloud.core import InferenceRequest, InferenceResult, bytes_input
from common.dtypes import DTYPES, dtype_from_v2, dtype_to_v2
from common.errors import InvalidArgument
from common.tensors import from_raw, to_raw

_MAX_ELEMENTS = 16 * 1024 * 1024
HEADER_LENGTH = "inference-header-content-length"
"""The binary-data extension's header: bytes of JSON before the binary section."""


@dataclass(slots=True)
class V2Request:
    """A parsed v2 inference request: the core request and how each output goes back."""

    request: InferenceRequest
    binary_outputs: dict[str, bool]
    """Per requested output name: raw bytes (True) or JSON data."""
    binary_default: bool
    """How outputs not named in ``binary_outputs`` go back."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidArgument(f"{where}.parameters must be an object")
    return params


def _tensor(t: Any, i: int, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor; returns (name, array, bytes it took from the binary section)."""
    if not isinstance(t, dict):
        raise InvalidArgument(f"inputs[{i}] must be an object")
    name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
    if not isinstance(name, str) or not name or not isinstance(datatype, str):
        raise InvalidArgument(f"inputs[{i}] needs a string name and datatype")
    if not isinstance(shape, list) or not all(
        (d := _int(x)) is not None and 0 <= d <= _MAX_ELEMENTS for x in shape
    ):
        raise InvalidArgument(f"inputs[{i}].shape must be a list of non-negative integers")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > _MAX_ELEMENTS:
        raise InvalidArgument(f"inputs[{i}] has {count} elements; the limit is {_MAX_ELEMENTS}")
    size = _params(t, f"inputs[{i}]").get("binary_data_size")
    if datatype == "BYTES":  # one encoded image for a pipeline, in the binary section
        n = _int(size) if size is not None else None
        if n is None or n < 0 or offset + n > len(binary):
            raise InvalidArgument(
                f"inputs[{i}]: send a BYTES tensor in the binary section (binary_data_size)"
            )
        return name, bytes_input(name, shape, bytes(binary[offset : offset + n])), n
    dtype = dtype_from_v2(datatype)
    if size is not None:
        n = _int(size)
        if n is None or n < 0 or offset + n > len(binary):
            raise InvalidArgument(
                f"inputs[{i}].parameters.binary_data_size {size!r} does not fit the "
                f"{len(binary) - offset} bytes left after the JSON header"
            )
        if "data" in t:
            raise InvalidArgument(f"inputs[{i}] has both data and binary_data_size")
        return name, from_raw(dtype, shape, bytes(binary[offset : offset + n])), n
    data = t.get("data")
    if not isinstance(data, list):
        raise InvalidArgument(f"inputs[{i}].data must be an array (or use binary_data_size)")
    try:
        with np.errstate(over="raise", invalid="raise"):  # 1e39 as FP32: refused, not inf
            arr = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise InvalidArgument(f"inputs[{i}].data does not hold {datatype} values: {exc}") from None
    if arr.size != count:
        raise InvalidArgument(f"inputs[{i}]: {arr.size} values but shape {shape} needs {count}")
    return name, arr.reshape(shape), 0


def parse_infer(body: bytes, header_length: str | None, name: str, version: str) -> V2Request:
    """The v2 request in ``body`` (``header_length``: the Inference-Header-Content-Length
    header, None for a JSON-only body)."""
    if header_length is None:
        split = len(body)
    else:
        split = int(header_length) if header_length.isdigit() else -1
        if not 0 <= split <= len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {header_length!r} is not a length within the "
                f"{len(body)}-byte body"
            )
    try:
        doc = json.loads(body[:split])
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidArgument('body must be an object with a non-empty "inputs" array')
    binary = memoryview(body)[split:]
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(doc["inputs"]):
        tname, arr, used = _tensor(t, i, binary, offset)
        offset += used
        if tname in inputs:
            raise InvalidArgument(f"input {tname!r} given twice")
        inputs[tname] = arr
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes after the JSON header belong to no input"
        )
    params = _params(doc, "request")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidArgument("parameters.binary_data_output must be a boolean")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('"outputs" must be an array of {"name": ...} objects')
    binary_outputs: dict[str, bool] = {}
    for j, o in enumerate(outputs):
        op = _params(o, f"outputs[{j}]")
        if "classification" in op:
            raise InvalidArgument("the classification extension is not supported")
        flag = op.get("binary_data", binary_default)
        if not isinstance(flag, bool):
            raise InvalidArgument(f"outputs[{j}].parameters.binary_data must be a boolean")
        binary_outputs[o["name"]] = flag
    rid = doc.get("id", "")
    request = InferenceRequest(
        model_name=name,
        model_version=version,
        inputs=inputs,
        outputs=tuple(o["name"] for o in outputs),
        request_id=rid if isinstance(rid, str) else "",
        api="rest",
        kserve=True,
    )
    return V2Request(request, binary_outputs, binary_default)


def v2_request(doc: Any, name: str, version: str) -> InferenceRequest:
    """Core request of a JSON-only KServe-v2 body already decoded."""
    return parse_infer(json.dumps(doc).encode(), None, name, version).request


def encode_infer(
    result: InferenceResult, parsed: V2Request | None, request_id: str
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length (for the
    Inference-Header-Content-Length header)."""
    doc = v2_response(result, request_id)
    chunks: list[bytes] = []
    for out, arr in zip(doc["outputs"], result.outputs.values(), strict=True):
        binary = parsed is not None and parsed.binary_outputs.get(
            out["name"], parsed.binary_default
        )
        if binary:
            raw = to_raw(arr)
            del out["data"]
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def v2_response(result: InferenceResult, request_id: str) -> dict[str, Any]:
    """KServe-v2 REST response body of ``result`` (all outputs as JSON data)."""
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


_INTS = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def triton_json(message: Message) -> dict[str, Any]:
    """``message`` as Triton's HTTP endpoints write it (protobuf's JSON printer with primitive
    fields always printed): field names as in the proto, 64-bit integers as JSON numbers (proto3
    JSON would write strings), enums by name, scalars and lists even when empty, nested messages
    when set."""
    out: dict[str, Any] = {}
    for f in message.DESCRIPTOR.fields:
        singular_message = (
            f.type == FieldDescriptor.TYPE_MESSAGE and f.label != FieldDescriptor.LABEL_REPEATED
        )
        if (singular_message or f.containing_oneof is not None) and not message.HasField(f.name):
            continue
        value = getattr(message, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = {
                k: triton_json(v) if isinstance(v, Message) else v for k, v in value.items()
            }
        elif f.label == FieldDescriptor.LABEL_REPEATED:
            out[f.name] = [_value(f, v) for v in value]
        else:
            out[f.name] = _value(f, value)
    return out


def _value(f: FieldDescriptor, v: Any) -> Any:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return triton_json(v)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return f.enum_type.values_by_number[v].name
    if f.type in _INTS:
        return int(v)
    return v


V2_TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {
            "type": "string",
            "enum": sorted([*(d.v2 for d in DTYPES), "BYTES"]),  # BYTES: one encoded image
        },
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    },
}
"""JSON schema of one KServe-v2 tensor (for the OpenAPI document)."""


__all__ = [
    "HEADER_LENGTH",
    "V2_TENSOR_SCHEMA",
    "V2Request",
    "encode_infer",
    "parse_infer",
    "triton_json",
    "v2_request",
    "v2_response",
]
