"""OpenAPI 3.0 document generated from our protobuf descriptors (one schema: proto3 JSON).

Each message becomes a component schema following the canonical proto3 JSON mapping:
lowerCamelCase field names, 64-bit integers as strings, bytes as base64, enums as their names,
Duration/Timestamp as strings, maps as objects.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

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
