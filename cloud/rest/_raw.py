"""``POST /v1/infer`` with a raw body: the tensor's bytes as they are, the metadata in the query.

    POST /v1/infer?model=fmnist_branchy&shape=1,1,28,28[&datatype=FP32][&input=input]
        [&version=1][&id=r1]          Content-Type: application/octet-stream

The body is the row-major little-endian elements of one input; the answer is the same
ModelInferResponse (proto3 JSON) as for a JSON body. Built into a ModelInferRequest with
``raw_input_contents``, so the same checks apply (the byte count must fill the shape exactly).
"""

from __future__ import annotations

from collections.abc import Mapping

from inference import grpc_service_pb2 as pb

from common import dtypes
from common.errors import InvalidArgument

RAW_CONTENT_TYPE = "application/octet-stream"
_MAX_DIMS = 16


def raw_infer_request(query: Mapping[str, str], body: bytes) -> pb.ModelInferRequest:
    """The ModelInferRequest of a raw-body ``/v1/infer`` call."""
    unknown = set(query) - {"model", "version", "input", "datatype", "shape", "id"}
    if unknown:
        raise InvalidArgument(f"unknown query parameter(s) {sorted(unknown)}")
    model = query.get("model", "")
    if not model:
        raise InvalidArgument("model: required in the query with a raw body")
    shape_text = query.get("shape", "")
    parts = shape_text.split(",") if shape_text else []
    if not parts or len(parts) > _MAX_DIMS or not all(p.isdigit() and len(p) <= 12 for p in parts):
        raise InvalidArgument(
            f"shape: comma-separated non-negative integers required (got {shape_text[:64]!r})"
        )
    datatype = query.get("datatype", "FP32")
    dtypes.by_v2(datatype)  # InvalidArgument naming the supported ones
    msg = pb.ModelInferRequest(
        model_name=model, model_version=query.get("version", ""), id=query.get("id", "")
    )
    msg.inputs.add(name=query.get("input", ""), datatype=datatype, shape=[int(p) for p in parts])
    msg.raw_input_contents.append(body)
    return msg


__all__ = ["RAW_CONTENT_TYPE", "raw_infer_request"]
