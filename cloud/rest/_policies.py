"""The policy routes of the public REST API (the console's Policies page uses them): read and
edit the served policy of each device class, and run A/B experiments. Thin: parse the JSON body,
call :class:`policy.PolicyAdmin` (validation, guardrails, publishing through the gateway's
:class:`policy.PolicyPublisher`, which pushes PolicyUpdate to the devices concerned), answer.

Every write is a management action in the authorization table (Admin, Operator; audited).
Bodies are at most :data:`MAX_BODY_BYTES` (413 beyond).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud.core import current_principal
from common.errors import InvalidArgument
from policy import PolicyAdmin, kinds_schema

MAX_BODY_BYTES = 64 * 1024
"""A configuration is a few hundred bytes; nothing larger is read."""

Body = Callable[[Request, int], Awaitable[bytes]]


class PolicyRoutes:
    """``/v1/policies`` (GET, POST) and ``/v1/policies/experiments`` (GET, POST, stop)."""

    def __init__(self, admin: PolicyAdmin, body: Body) -> None:
        self._admin = admin
        self._body = body

    async def _json(self, request: Request) -> Any:
        raw = await self._body(request, MAX_BODY_BYTES)
        try:
            return json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"body is not JSON: {str(exc)[:200]}") from None

    async def configs(self, request: Request) -> Response:
        admin = self._admin
        return JSONResponse({"classes": admin.configs(), **admin.profile(), **kinds_schema()})

    async def configure(self, request: Request) -> Response:
        return JSONResponse(self._admin.configure(await self._json(request)))

    async def experiments(self, request: Request) -> Response:
        return JSONResponse({"experiments": self._admin.experiments()})

    async def create(self, request: Request) -> Response:
        doc = await self._json(request)
        return JSONResponse(self._admin.create(doc, current_principal().subject))

    async def stop(self, request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(self._admin.stop(name, current_principal().subject))

    def routes(self) -> list[Route]:
        get, post = ["GET"], ["POST"]
        return [
            Route("/v1/policies", self.configs, methods=get),
            Route("/v1/policies", self.configure, methods=post),
            Route("/v1/policies/experiments", self.experiments, methods=get),
            Route("/v1/policies/experiments", self.create, methods=post),
            Route("/v1/policies/experiments/{name}/stop", self.stop, methods=post),
        ]


_JSON = {"application/json": {"schema": {"type": "object"}}}
_ERR = {
    "description": "client error (400 invalid field, 404, 409 name taken, 412 guardrail, "
    "413 body too large, 429 too many changes)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}
_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": ["heuristic", "static", "linucb", "thompson", "dqn"]},
        "thresholds": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1.01},
        },
        "params": {"type": "object"},
    },
    "required": ["kind"],
}
_CLASS = {"type": "string", "maxLength": 64}


def _op(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": _JSON}, "4XX": _ERR},
    }
    if body is not None:
        op["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return op


def policies_openapi_paths() -> dict[str, Any]:
    """The policy routes for ``/openapi.json``."""
    configure = {
        **_CONFIG,
        "properties": {
            **_CONFIG["properties"],  # type: ignore[dict-item]
            "device_class": _CLASS,
            "expected_version": {"type": "integer", "minimum": 0},
        },
    }
    create = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "treatment"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "device_class": _CLASS,
            "treatment": _CONFIG,
            "split": {"type": "number", "minimum": 0.01, "maximum": 0.99},
            "guardrail": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "min_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                    "max_breach_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "min_requests": {"type": "integer", "minimum": 1, "maximum": 1000000},
                },
            },
        },
    }
    return {
        "/v1/policies": {
            "get": _op(
                "The served policy of each device class (kind, thresholds by exit, parameters, "
                "version) and every kind's parameters with their bounds"
            ),
            "post": _op(
                "Serve a policy configuration to a device class; its devices are pushed a "
                "PolicyUpdate (guardrails: expected_version, no edit under a running experiment, "
                "bounded rate)",
                configure,
            ),
        },
        "/v1/policies/experiments": {
            "get": _op("A/B experiments with per-arm results (from reported outcomes)"),
            "post": _op(
                "Start an A/B experiment: a share of the class's devices (by a hash of their id) "
                "run the treatment, the rest the class's policy",
                create,
            ),
        },
        "/v1/policies/experiments/{name}/stop": {
            "post": {
                **_op("Stop an experiment; every device of the class runs its policy again"),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            }
        },
    }


__all__ = ["MAX_BODY_BYTES", "PolicyRoutes", "policies_openapi_paths"]
