"""KServe-v2 REST endpoints (Triton's HTTP/REST API) over the data plane.

Everything ``tritonclient.http`` asks for: health (live, ready, model ready), server and model
metadata, model config, inference (JSON tensors and the binary-data extension), statistics and
the repository extension (index, load, unload). The answers are the messages the gRPC
``GRPCInferenceService`` answers (``cloud.grpc._triton_converters``) written as Triton writes
them over HTTP; errors are ``{"error": "..."}`` with the status of ``cloud.rest._errors``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloud.core import DataPlane, DeviceCall, DeviceQuotas, current_principal
from cloud.grpc._triton_converters import (
    SERVER_NAME,
    SERVER_VERSION,
    model_config_to_pb,
    model_metadata_to_pb,
    repository_index,
    served_key,
    statistics_response,
)
from common.errors import AimlError, InvalidArgument

from ._encoding import deflate
from ._v2 import HEADER_LENGTH, encode_infer, parse_infer, triton_json

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]
"""The KServe-v2/Triton protocol extensions the gateway serves (server metadata lists them)."""

Body = Callable[[Request], Awaitable[bytes]]


def _version(request: Request) -> str:
    return str(request.path_params.get("version", ""))


class KServeV2:
    """The /v2 routes; ``body`` reads a request body within the bridge's size limit; every
    infer of a device is a call on its ``quotas`` (shared with its sessions)."""

    def __init__(
        self, dataplane: DataPlane, body: Body, quotas: DeviceQuotas | None = None
    ) -> None:
        self._dp = dataplane
        self._body = body
        self._quotas = quotas or DeviceQuotas.unlimited()

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = await self._dp.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self._dp.model_ready(name, _version(request)):  # Triton's answer, word for word
            return JSONResponse({"error": "Model version not ready"}, status_code=400)
        return JSONResponse({"name": name, "ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
        )

    async def model_metadata(self, request: Request) -> Response:
        spec = self._dp.repository.resolve(request.path_params["name"], _version(request))
        meta = model_metadata_to_pb(spec, self._dp.repository.versions(spec.name))
        return JSONResponse(triton_json(meta))

    async def model_config(self, request: Request) -> Response:
        spec = self._dp.repository.resolve(request.path_params["name"], _version(request))
        return JSONResponse(triton_json(model_config_to_pb(spec)))

    async def statistics(self, request: Request) -> Response:
        name = str(request.path_params.get("name", ""))
        return JSONResponse(triton_json(statistics_response(self._dp, name, _version(request))))

    async def infer(self, request: Request) -> Response:
        # a call on the device's quotas (cloud.core.DeviceQuotas) until it is answered
        with await self._quotas.enter_call(current_principal().device_id) as call:
            return await self._infer(request, call)

    async def _infer(self, request: Request, call: DeviceCall) -> Response:
        started = time.monotonic_ns()
        name, version = request.path_params["name"], _version(request)
        body = await self._body(request)
        call.hold(len(body))  # before it is parsed
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH), name, version)
        del body
        parsed.request.traceparent = request.headers.get("traceparent", "")[:128]
        try:
            fut = self._dp.submit(parsed.request)  # refused here (bad input): no model's failure
        except AimlError as exc:
            self._dp.record(parsed.request, exc.code.value)
            raise
        try:
            result = await fut
        except AimlError as exc:
            key = served_key(self._dp, name, version)
            if key is not None:
                self._dp.statistics.failed(key, started)
            self._dp.record(parsed.request, exc.code.value)
            raise
        self._dp.statistics.finished(result, started)
        self._dp.record(parsed.request, "OK", result)
        content, header_length = encode_infer(result, parsed, parsed.request.request_id)
        headers = {}
        if header_length is not None:  # of the uncompressed body, as Triton
            headers["Inference-Header-Content-Length"] = str(header_length)
        content, coding = deflate(content, request.headers.get("accept-encoding", ""))
        if coding is not None:
            headers["Content-Encoding"] = coding
        media = "application/json" if header_length is None else "application/octet-stream"
        return Response(content, media_type=media, headers=headers)

    async def index(self, request: Request) -> Response:
        body = await self._body(request)
        doc: Any = {}
        if body.strip():
            doc = _json_object(body)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument('"ready" must be a boolean')
        models = triton_json(repository_index(self._dp, ready)).get("models", [])
        # as Triton writes the index: a reason only when there is one
        return JSONResponse([{k: v for k, v in m.items() if v or k != "reason"} for m in models])

    async def load(self, request: Request) -> Response:
        body = await self._body(request)
        if body.strip() and _json_object(body).get("parameters"):
            raise InvalidArgument("load parameters (config, files) are not supported")
        await self._dp.reload(request.path_params["name"])
        return Response(b"", media_type="application/json")

    async def unload(self, request: Request) -> Response:
        await self._body(request)
        name = request.path_params["name"]
        for version in self._dp.repository.versions(name):
            await self._dp.unload(self._dp.repository.resolve(name, version).key)
        return Response(b"", media_type="application/json")

    def routes(self) -> list[Route]:
        get, post = ["GET"], ["POST"]
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/v2", self.server_metadata, methods=get),
            Route("/v2/health/live", self.live, methods=get),
            Route("/v2/health/ready", self.ready, methods=get),
            Route("/v2/models/stats", self.statistics, methods=get),
            Route("/v2/repository/index", self.index, methods=post),
            Route("/v2/repository/models/{name}/load", self.load, methods=post),
            Route("/v2/repository/models/{name}/unload", self.unload, methods=post),
        ]
        for base in (model, versioned):
            routes += [
                Route(base, self.model_metadata, methods=get),
                Route(base + "/ready", self.model_ready, methods=get),
                Route(base + "/config", self.model_config, methods=get),
                Route(base + "/stats", self.statistics, methods=get),
                Route(base + "/infer", self.infer, methods=post),
            ]
        return routes


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("body must be a JSON object")
    return doc


__all__ = ["EXTENSIONS", "KServeV2"]
