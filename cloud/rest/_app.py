"""REST bridge: a Starlette app, thin over the same core as the gRPC services.

``/v1/*`` bodies are the canonical proto3 JSON of our messages (``google.protobuf.json_format``;
unknown fields rejected); ``/v2/*`` follows the KServe-v2 REST protocol. Errors are JSON
``{"code": ..., "message": ...}`` with the HTTP status from one table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiml021.cache.v1 import cache_pb2
from aiml021.deploy.v1 import deploy_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.registry.v1 import registry_pb2
from aiml021.telemetry.v1 import telemetry_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from inference import grpc_service_pb2 as pb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud.core import InferenceRequest, InferenceResult, RegistryView, ResultCache, RolloutManager
from cloud.grpc import STATUS_BY_CODE, CacheServicer, DeployServicer, RegistryServicer
from cloud.grpc._converters import infer_request_from_pb, infer_response_to_pb
from common.dtypes import DTYPES, dtype_from_v2, dtype_to_v2
from common.errors import AimlError, ErrorCode, InvalidArgument, NotFound

from ._openapi import build_openapi

log = logging.getLogger(__name__)

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 412,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CANCELLED: 499,
    ErrorCode.DATA_LOSS: 500,
    ErrorCode.INTERNAL: 500,
}

Infer = Callable[[InferenceRequest], Awaitable[InferenceResult]]
Decide = Callable[[policy_pb2.DecideRequest], Awaitable[policy_pb2.DecideResponse]]
Report = Callable[[telemetry_pb2.ReportRequest], Awaitable[telemetry_pb2.ReportResponse]]


class _Ctx:
    """Stands in for a grpc context: the servicers' ``abort`` becomes an AimlError again."""

    async def abort(self, code: object, details: str) -> None:
        error_code = next((c for c, s in STATUS_BY_CODE.items() if s == code), ErrorCode.INTERNAL)
        error = AimlError(details)
        error.code = error_code
        raise error


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class RestBridge:
    """Builds the Starlette app over the gateway's parts."""

    def __init__(
        self,
        infer: Infer,
        ready: Callable[[], Awaitable[bool]],
        view: RegistryView,
        rollouts: RolloutManager,
        cache: ResultCache,
        decide: Decide | None = None,
        report: Report | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._infer = infer
        self._ready = ready
        self._registry = RegistryServicer(view)
        self._deploy = DeployServicer(rollouts)
        self._cache = CacheServicer(cache)
        self._decide = decide
        self._report = report
        self.max_body_bytes = max_body_bytes

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _TooLarge(int(declared), self.max_body_bytes)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge(size, self.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, request: Request, message: Message) -> Message:
        body = await self._body(request)
        try:
            json_format.Parse(body or b"{}", message, ignore_unknown_fields=False)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidArgument(
                f"body is not valid {message.DESCRIPTOR.full_name} JSON: {exc}"
            ) from None
        return message

    @staticmethod
    def _json(message: Message) -> Response:
        return Response(
            json_format.MessageToJson(message, indent=None), media_type="application/json"
        )

    # -- /v1 -----------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        msg = await self._parse(request, pb.ModelInferRequest())
        core = infer_request_from_pb(msg, "rest", None)  # type: ignore[arg-type]
        result = await self._infer(core)
        return self._json(infer_response_to_pb(result, core.request_id))

    async def models(self, request: Request) -> Response:
        page_size = request.query_params.get("page_size", "0")
        if not page_size.isdigit() or int(page_size) > 2**31 - 1:
            raise InvalidArgument("page_size must be a non-negative integer")
        req = registry_pb2.ListModelsRequest(
            page_size=int(page_size), page_token=request.query_params.get("page_token", "")
        )
        return self._json(await self._registry.ListModels(req, _Ctx()))

    async def model(self, request: Request) -> Response:
        req = registry_pb2.GetModelRequest(name=request.path_params["name"])
        return self._json(await self._registry.GetModel(req, _Ctx()))

    async def cache_get(self, request: Request) -> Response:
        msg = await self._parse(request, cache_pb2.GetRequest())
        return self._json(await self._cache.Get(msg, _Ctx()))  # type: ignore[arg-type]

    async def cache_put(self, request: Request) -> Response:
        msg = await self._parse(request, cache_pb2.PutRequest())
        return self._json(await self._cache.Put(msg, _Ctx()))  # type: ignore[arg-type]

    async def canary(self, request: Request) -> Response:
        msg = await self._parse(request, deploy_pb2.SetRolloutRequest())
        return self._json(await self._deploy.SetRollout(msg, _Ctx()))  # type: ignore[arg-type]

    async def rollout(self, request: Request) -> Response:
        req = deploy_pb2.GetRolloutRequest(model_name=request.path_params["name"])
        return self._json(await self._deploy.GetRollout(req, _Ctx()))

    async def decide(self, request: Request) -> Response:
        msg = await self._parse(request, policy_pb2.DecideRequest())
        if self._decide is None:
            raise NotFound("no policy engine is configured on this gateway")
        return self._json(await self._decide(msg))  # type: ignore[arg-type]

    async def telemetry(self, request: Request) -> Response:
        msg = await self._parse(request, telemetry_pb2.ReportRequest())
        if self._report is not None:
            return self._json(await self._report(msg))  # type: ignore[arg-type]
        accepted = len(msg.batch.events) if msg.HasField("batch") else 0  # type: ignore[attr-defined]
        return self._json(telemetry_pb2.ReportResponse(accepted=accepted))

    # -- KServe v2 -----------------------------------------------------------------------------

    async def v2_ready(self, request: Request) -> Response:
        ready = await self._ready()
        return JSONResponse({"ready": ready}, status_code=200)

    async def v2_infer(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"body is not JSON: {exc}") from None
        core = v2_request(doc, request.path_params["name"], request.path_params.get("version", ""))
        result = await self._infer(core)
        return JSONResponse(v2_response(result, core.request_id))

    def app(self) -> Starlette:
        """The ASGI app."""
        post, get = ["POST"], ["GET"]
        routes = [
            Route("/v1/infer", self.infer, methods=post),
            Route("/v1/features", self.infer, methods=post),
            Route("/v1/models", self.models, methods=get),
            Route("/v1/models/{name}", self.model, methods=get),
            Route("/v1/policy/decide", self.decide, methods=post),
            Route("/v1/telemetry", self.telemetry, methods=post),
            Route("/v1/cache/get", self.cache_get, methods=post),
            Route("/v1/cache/put", self.cache_put, methods=post),
            Route("/v1/deploy/canary", self.canary, methods=post),
            Route("/v1/deploy/rollouts/{name}", self.rollout, methods=get),
            Route("/v2/health/ready", self.v2_ready, methods=get),
            Route("/v2/models/{name}/infer", self.v2_infer, methods=post),
            Route("/v2/models/{name}/versions/{version}/infer", self.v2_infer, methods=post),
            Route("/openapi.json", self.openapi, methods=get),
        ]
        handlers: dict[Any, Any] = {
            AimlError: _aiml_error,
            HTTPException: _http_error,
            _TooLarge: _too_large,
            Exception: _internal,
        }
        return Starlette(routes=routes, exception_handlers=handlers)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes exceeds the limit of {limit} bytes")


async def _aiml_error(request: Request, exc: AimlError) -> Response:
    return _error(HTTP_STATUS.get(exc.code, 500), exc.code.value, exc.message)


async def _too_large(request: Request, exc: _TooLarge) -> Response:
    return _error(413, ErrorCode.RESOURCE_EXHAUSTED.value, str(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(exc.status_code, "INVALID_ARGUMENT")
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /openapi.json"
    return _error(exc.status_code, code, message)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("REST bridge bug on %s %s", request.method, request.url.path)
    return _error(500, "INTERNAL", "internal error")


# -- KServe v2 JSON tensors -------------------------------------------------------------------

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
            arr = np.asarray(flat, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as exc:
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
        route="rest",
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


_V2_TENSOR = {
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


def openapi_document() -> dict[str, Any]:
    """The bridge's OpenAPI document (proto3 JSON schemas of our messages)."""
    md = pb.ModelInferRequest.DESCRIPTOR
    routes = [
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
            md,
            pb.ModelInferResponse.DESCRIPTOR,
            "Run a tail model <bundle>.<cut point> on features",
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
        ("get", "/v2/health/ready", None, None, "KServe v2 readiness"),
        ("post", "/v2/models/{name}/infer", None, None, "KServe v2 inference (JSON tensors)"),
        (
            "post",
            "/v2/models/{name}/versions/{version}/infer",
            None,
            None,
            "KServe v2 inference of a version",
        ),
    ]
    doc = build_openapi(routes)
    body = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "inputs": {"type": "array", "items": _V2_TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }}  # fmt: skip
    for p in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        doc["paths"][p]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return doc
