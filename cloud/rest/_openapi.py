"""OpenAPI 3.0 document generated from our protobuf descriptors (one schema: proto3 JSON).

Each message becomes a component schema following the canonical proto3 JSON mapping:
lowerCamelCase field names, 64-bit integers as strings, bytes as base64, enums as their names,
Duration/Timestamp as strings, maps as objects.
"""

from __future__ import annotations

from typing import Any

from aiml021.cache.v1 import cache_pb2
from aiml021.deploy.v1 import deploy_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.registry.v1 import registry_pb2
from aiml021.session.v1 import features_pb2, session_pb2
from aiml021.telemetry.v1 import telemetry_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from inference import grpc_service_pb2 as pb

from ._console import console_openapi_paths
from ._console_settings import console_settings_openapi_paths
from ._policies import policies_openapi_paths
from ._v2 import V2_TENSOR_SCHEMA

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_INT64: {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "pattern": "^-?[0-9]{1,19}$"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "pattern": "^[0-9]{1,20}$"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "pattern": "^[0-9]{1,20}$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]{1,11}(\\.[0-9]{1,9})?s$"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(f: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        full = f.message_type.full_name
        if full in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full])
        add_message(f.message_type, defs)
        return _ref(full)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    return dict(_SCALARS[f.type])


def add_message(desc: Descriptor, defs: dict[str, Any]) -> dict[str, str]:
    """Add ``desc`` (and what it references) to ``defs``; returns a $ref to it."""
    name = desc.full_name
    if name in defs:
        return _ref(name)
    defs[name] = {}  # placeholder against recursion
    props: dict[str, Any] = {}
    for f in desc.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            props[f.json_name] = {
                "type": "object",
                "additionalProperties": _field_schema(value, defs),
            }
        elif f.label == FieldDescriptor.LABEL_REPEATED:
            props[f.json_name] = {"type": "array", "items": _field_schema(f, defs)}
        else:
            props[f.json_name] = _field_schema(f, defs)
    defs[name] = {"type": "object", "properties": props, "additionalProperties": False}
    return _ref(name)


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}


def build_openapi(
    routes: list[tuple[str, str, Descriptor | None, Descriptor | None, str]],
) -> dict[str, Any]:
    """OpenAPI document for (method, path, request message, response message, summary) routes."""
    defs: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for method, path, req, resp, summary in routes:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": add_message(req, defs)}},
            }
        ok_schema = add_message(resp, defs) if resp is not None else {"type": "object"}
        op["responses"]["200"] = {
            "description": "OK",
            "content": {"application/json": {"schema": ok_schema}},
        }
        op["responses"]["4XX"] = {
            "description": "client error",
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ("name", "version")
            if "{" + p + "}" in path
        ]
        if params:
            op["parameters"] = params
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "aiml021 REST bridge", "version": "1"},
        "paths": paths,
        "components": {"schemas": defs},
    }


def openapi_document() -> dict[str, Any]:
    """The bridge's OpenAPI document (proto3 JSON schemas of our messages)."""
    md = pb.ModelInferRequest.DESCRIPTOR
    routes: list[tuple[str, str, Descriptor | None, Descriptor | None, str]] = [
        (
            "post",
            "/v1/infer",
            md,
            pb.ModelInferResponse.DESCRIPTOR,
            "Run a model (ModelInferRequest as proto3 JSON)",
        ),
        (
            "post",
            "/v1/features",
            features_pb2.InferFeaturesRequest.DESCRIPTOR,
            session_pb2.InferResult.DESCRIPTOR,
            "Run the tail of a bundle on coded features (features_b64 + compression)",
        ),
        (
            "get",
            "/v1/models",
            None,
            registry_pb2.ListModelsResponse.DESCRIPTOR,
            "List served models",
        ),
        ("get", "/v1/models/{name}", None, registry_pb2.GetModelResponse.DESCRIPTOR, "One model"),
        (
            "post",
            "/v1/policy/decide",
            policy_pb2.DecideRequest.DESCRIPTOR,
            policy_pb2.DecideResponse.DESCRIPTOR,
            "Policy decision",
        ),
        (
            "post",
            "/v1/policy/outcomes",
            policy_pb2.ReportOutcomeRequest.DESCRIPTOR,
            policy_pb2.ReportOutcomeResponse.DESCRIPTOR,
            "Report outcomes of earlier decisions (learning, A/B experiment results)",
        ),
        (
            "post",
            "/v1/telemetry",
            telemetry_pb2.ReportRequest.DESCRIPTOR,
            telemetry_pb2.ReportResponse.DESCRIPTOR,
            "Report telemetry",
        ),
        (
            "post",
            "/v1/cache/get",
            cache_pb2.GetRequest.DESCRIPTOR,
            cache_pb2.GetResponse.DESCRIPTOR,
            "Cache lookup by content hash",
        ),
        (
            "post",
            "/v1/cache/put",
            cache_pb2.PutRequest.DESCRIPTOR,
            cache_pb2.PutResponse.DESCRIPTOR,
            "Cache store",
        ),
        (
            "post",
            "/v1/deploy/canary",
            deploy_pb2.SetRolloutRequest.DESCRIPTOR,
            deploy_pb2.SetRolloutResponse.DESCRIPTOR,
            "Set a canary/shadow rollout",
        ),
        (
            "get",
            "/v1/deploy/rollouts/{name}",
            None,
            deploy_pb2.GetRolloutResponse.DESCRIPTOR,
            "Rollout and its stats",
        ),
    ]
    doc = build_openapi(routes)
    _add_raw_infer(doc["paths"]["/v1/infer"]["post"])
    _add_kserve(doc)
    doc["paths"].update(console_openapi_paths())
    doc["paths"].update(policies_openapi_paths())
    doc["paths"].update(console_settings_openapi_paths())
    return doc


def _add_raw_infer(op: dict[str, Any]) -> None:
    """``/v1/infer`` also takes a raw body: the tensor's bytes, the metadata in the query."""
    op["requestBody"]["content"]["application/octet-stream"] = {
        "schema": {"type": "string", "format": "binary"}
    }
    text = {"type": "string", "maxLength": 256}
    op["parameters"] = [
        {"name": "model", "in": "query", "required": False, "schema": text,
         "description": "raw body: the model (required then)"},
        {"name": "shape", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[0-9]{1,12}(,[0-9]{1,12}){0,15}$"},
         "description": "raw body: comma-separated dimensions (required then)"},
        {"name": "datatype", "in": "query", "required": False, "schema": text,
         "description": "raw body: KServe-v2 datatype (default FP32)"},
        {"name": "input", "in": "query", "required": False, "schema": text,
         "description": "raw body: input name (default the model's one input)"},
        {"name": "version", "in": "query", "required": False, "schema": text},
        {"name": "id", "in": "query", "required": False, "schema": text},
    ]  # fmt: skip


_V2_ERROR = {
    "description": "client error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_V2_INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": V2_TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data": {"type": "boolean"}},
                    },
                },
            },
        },
        "parameters": {
            "type": "object",
            "properties": {"binary_data_output": {"type": "boolean"}},
        },
    },
}
_V2_ROUTES = [
    ("get", "/v2", "Server metadata (name, version, extensions)"),
    ("get", "/v2/health/live", "Liveness"),
    ("get", "/v2/health/ready", "Readiness (non-200 when not ready)"),
    ("get", "/v2/models/stats", "Statistics of every served model version"),
    ("post", "/v2/repository/index", "Repository index (served and unloaded versions)"),
    ("post", "/v2/repository/models/{name}/load", "Serve an unloaded model again"),
    ("post", "/v2/repository/models/{name}/unload", "Stop serving a model"),
]
for _base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
    _V2_ROUTES += [
        ("get", _base, "Model metadata"),
        ("get", _base + "/ready", "Model readiness (400 when not ready, as Triton)"),
        ("get", _base + "/config", "Model configuration (Triton's ModelConfig)"),
        ("get", _base + "/stats", "Model statistics (Triton's ModelStatistics)"),
        ("post", _base + "/infer", "Inference: JSON tensors or the binary-data extension"),
    ]


def _add_kserve(doc: dict[str, Any]) -> None:
    """The KServe-v2 / Triton HTTP routes (bodies as Triton writes them; errors ``{"error"}``)."""
    for method, path, summary in _V2_ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                "4XX": _V2_ERROR,
            },
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ("name", "version")
            if "{" + p + "}" in path
        ]
        if params:
            op["parameters"] = params
        if path.endswith("/infer"):
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _V2_INFER_BODY}},
            }
        elif path == "/v2/repository/index":
            body = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            op["requestBody"] = {"content": {"application/json": {"schema": body}}}
        doc["paths"].setdefault(path, {})[method] = op


__all__ = ["build_openapi", "openapi_document"]
