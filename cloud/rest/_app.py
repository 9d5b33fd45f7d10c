"""REST bridge: a Starlette app that calls the gateway core directly.

Every endpoint is thin: parse the body, call the core (:class:`cloud.core.DataPlane`, the
:class:`cloud.core.RegistryView`, the :class:`cloud.core.RolloutManager`, the result cache, the
policy), answer. ``/v1/*`` bodies are the canonical proto3 JSON of our messages
(``google.protobuf.json_format``; unknown fields rejected; the same converters as the gRPC
services); ``/v2/*`` follows the KServe-v2 REST protocol (``_kserve``). Errors are JSON
``{"code": ..., "message": ...}`` on /v1 and ``{"error": ...}`` on /v2 (what KServe clients
decode), with the HTTP status from one table (``_errors``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiml021.cache.v1 import cache_pb2
from aiml021.deploy.v1 import deploy_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.registry.v1 import registry_pb2
from aiml021.session.v1 import features_pb2
from aiml021.telemetry.v1 import telemetry_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from inference import grpc_service_pb2 as pb
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cloud.core import (
    DataPlane,
    DeviceCall,
    DeviceQuotas,
    RegistryView,
    ResultCache,
    RolloutManager,
    current_principal,
)
from cloud.core._costs import CostAccountant
from cloud.grpc._cache import MAX_CACHE_ENTRY_BYTES
from cloud.grpc._control_converters import (
    cache_entry_from_pb,
    cache_entry_to_pb,
    model_to_pb,
    rollout_from_pb,
    rollout_to_pb,
    stats_to_pb,
)
from cloud.grpc._converters import infer_request_from_pb, infer_response_to_pb
from cloud.grpc._policy_converters import (
    context_from_proto,
    decision_to_proto,
    outcome_from_proto,
)
from cloud.grpc._telemetry import events_from_pb
from common.errors import AimlError, ErrorCode, InvalidArgument, NotFound
from common.prototime import duration_to_s
from policy import OnlineLearner, PolicyAdmin, PolicyPublisher

from ._console import ConsoleRoutes, console_mount
from ._console_settings import ConsoleSettings, PrivacyStatus
from ._encoding import inflate
from ._errors import error_body, http_status
from ._features import infer_features
from ._kserve import KServeV2
from ._openapi import openapi_document
from ._policies import PolicyRoutes
from ._raw import RAW_CONTENT_TYPE, raw_infer_request

log = logging.getLogger(__name__)

MAX_OUTCOMES_PER_CALL = 10_000
"""As PolicyService.ReportOutcome (``cloud.grpc._policy.PolicyServicer``)."""


def _error(request: Request, status: int, code: str, message: str) -> JSONResponse:
    # KServe v2 (what tritonclient.http decodes) answers {"error": ...}; /v1 names the code too.
    if request.url.path.startswith("/v2"):
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse({"code": code, "message": message}, status_code=status)


class RestBridge:
    """Builds the Starlette app over the gateway core (the composition root passes the same
    objects the gRPC services use; ``learner`` answers ``/v1/policy/decide`` like PolicyService
    and shares its decision table)."""

    def __init__(
        self,
        dataplane: DataPlane,
        registry: RegistryView,
        rollouts: RolloutManager,
        cache: ResultCache,
        learner: OnlineLearner | None = None,
        *,
        policies: PolicyAdmin | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
        max_cache_entry_bytes: int = MAX_CACHE_ENTRY_BYTES,
        costs: CostAccountant | None = None,
        privacy: PrivacyStatus | None = None,
        budget_note: str = "",
        quotas: DeviceQuotas | None = None,
    ) -> None:
        self._dp = dataplane
        self._quotas = quotas or DeviceQuotas.unlimited()
        """Each device's quotas, shared with its sessions: every inference call draws on them."""
        self._registry = registry
        self._rollouts = rollouts
        self._cache = cache
        self._learner = learner
        self.max_body_bytes = max_body_bytes
        self.max_cache_entry_bytes = max_cache_entry_bytes
        self._console = ConsoleRoutes(
            dataplane.metrics.registry, self._body, dataplane.repository.visible
        )
        # /v1/policies: the gateway's publisher (a gateway without one answers an empty list)
        self._policies = PolicyRoutes(policies or PolicyAdmin(PolicyPublisher()), self._body)
        self._settings = ConsoleSettings(self._body, costs, privacy, budget_note)
        self.middleware: Callable[[Sequence[BaseRoute]], Middleware] | None = None
        """The authorization hook (``cloud.authz.authz_middleware``; the composition root sets
        it): given the app's routes, the middleware every request passes first."""

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body, refused (413) past ``limit`` (default ``max_body_bytes``)."""
        limit = min(limit, self.max_body_bytes) if limit is not None else self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge(int(declared), limit)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge(size, limit)
            chunks.append(chunk)
        body = b"".join(chunks)
        coding = request.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("", "identity"):
            return body
        inflated = inflate(body, coding, limit)
        if inflated is None:  # a small body that inflates past the limit: refused, not inflated
            raise _TooLarge(limit + 1, limit)
        return inflated

    async def _parse(self, request: Request, message: Message) -> Any:
        return _from_json(await self._body(request), message)

    async def _counted_body(self, request: Request, call: DeviceCall) -> bytes:
        """The body of an inference call, held on the caller's quotas before it is parsed."""
        body = await self._body(request)
        call.hold(len(body))
        return body

    @staticmethod
    def _json(message: Message) -> Response:
        return Response(
            json_format.MessageToJson(message, indent=None), media_type="application/json"
        )

    # -- /v1 -----------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        # a call on the device's quotas (cloud.core.DeviceQuotas) until it is answered
        with await self._quotas.enter_call(current_principal().device_id) as call:
            return await self._infer(request, call)

    async def _infer(self, request: Request, call: DeviceCall) -> Response:
        body = await self._counted_body(request, call)
        if request.headers.get("content-type", "").startswith(RAW_CONTENT_TYPE):
            msg = raw_infer_request(request.query_params, body)
            if not msg.inputs[0].name:  # the model's one input when the query names none
                spec = self._dp.repository.resolve(msg.model_name, msg.model_version)
                if len(spec.inputs) != 1:
                    raise InvalidArgument(f"input: model {spec.key} has several; name one")
                msg.inputs[0].name = spec.inputs[0].name
        else:
            msg = _from_json(body, pb.ModelInferRequest())
        del body
        core = infer_request_from_pb(msg, "rest", None)
        core.traceparent = request.headers.get("traceparent", "")[:128]  # W3C trace context
        try:
            result = await self._dp.infer(core)
        except AimlError as exc:
            self._dp.record(core, exc.code.value)
            raise
        self._dp.record(core, "OK", result)
        return self._json(infer_response_to_pb(result, core.request_id))

    async def features(self, request: Request) -> Response:
        with await self._quotas.enter_call(current_principal().device_id) as call:  # as infer
            body = await self._counted_body(request, call)
            msg = _from_json(body, features_pb2.InferFeaturesRequest())
            del body
            return self._json(await infer_features(self._dp, msg))

    async def models(self, request: Request) -> Response:
        page_size = request.query_params.get("page_size", "0")
        if not page_size.isdigit() or int(page_size) > 2**31 - 1:
            raise InvalidArgument("page_size must be a non-negative integer")
        models, token = self._registry.list(
            int(page_size), request.query_params.get("page_token", "")
        )
        return self._json(
            registry_pb2.ListModelsResponse(
                models=[model_to_pb(m) for m in models], next_page_token=token
            )
        )

    async def model(self, request: Request) -> Response:
        info = self._registry.get(request.path_params["name"])
        return self._json(registry_pb2.GetModelResponse(model=model_to_pb(info)))

    async def cache_get(self, request: Request) -> Response:
        msg = await self._parse(request, cache_pb2.GetRequest())
        entry = await self._cache.get(msg.model_name, msg.content_hash)
        if entry is None:
            return self._json(cache_pb2.GetResponse(found=False))
        return self._json(cache_pb2.GetResponse(found=True, entry=cache_entry_to_pb(entry)))

    async def cache_put(self, request: Request) -> Response:
        msg = await self._parse(request, cache_pb2.PutRequest())
        entry = cache_entry_from_pb(msg.entry, self.max_cache_entry_bytes)
        ttl = duration_to_s(msg.ttl) if msg.HasField("ttl") else None
        await self._cache.put(msg.model_name, msg.content_hash, entry, ttl)
        return self._json(cache_pb2.PutResponse())

    async def canary(self, request: Request) -> Response:
        msg = await self._parse(request, deploy_pb2.SetRolloutRequest())
        rollout = self._rollouts.set(rollout_from_pb(msg.rollout))
        return self._json(deploy_pb2.SetRolloutResponse(rollout=rollout_to_pb(rollout)))

    async def rollout(self, request: Request) -> Response:
        rollout, stats = self._rollouts.get(request.path_params["name"])
        return self._json(
            deploy_pb2.GetRolloutResponse(rollout=rollout_to_pb(rollout), stats=stats_to_pb(stats))
        )

    async def decide(self, request: Request) -> Response:
        msg = await self._parse(request, policy_pb2.DecideRequest())
        if self._learner is None:
            raise NotFound("no policy engine is configured on this gateway")
        if not msg.HasField("context"):
            raise InvalidArgument("context: required")
        ctx = context_from_proto(msg.context)
        if current_principal().device_id:  # a device decides as itself (its experiment arm)
            ctx = dataclasses.replace(ctx, device_id=current_principal().device_id)
        decision_id, decision = self._learner.decide(ctx)
        return self._json(
            policy_pb2.DecideResponse(decision=decision_to_proto(decision, decision_id))
        )

    async def report(self, request: Request) -> Response:
        """PolicyService.ReportOutcome over REST: outcomes teach the policy that decided and
        fill the A/B experiments' per-arm results."""
        msg = await self._parse(request, policy_pb2.ReportOutcomeRequest())
        if self._learner is None:
            raise NotFound("no policy engine is configured on this gateway")
        if len(msg.outcomes) > MAX_OUTCOMES_PER_CALL:
            raise InvalidArgument(
                f"outcomes: at most {MAX_OUTCOMES_PER_CALL} per call, got {len(msg.outcomes)}"
            )
        accepted = sum(self._learner.report(outcome_from_proto(o)) for o in msg.outcomes)
        return self._json(policy_pb2.ReportOutcomeResponse(accepted=accepted))

    async def telemetry(self, request: Request) -> Response:
        msg = await self._parse(request, telemetry_pb2.ReportRequest())
        # A device's own telemetry: events carry the id of its certificate (cloud.authz), never
        # the id the batch claims; without TLS (development) the batch's id.
        device = current_principal().device_id or msg.batch.device_id or "anonymous"
        events = events_from_pb(msg.batch, device)
        accepted = self._dp.record_telemetry(events, int(msg.batch.dropped))
        return self._json(telemetry_pb2.ReportResponse(accepted=accepted))

    def app(self) -> Starlette:
        """The ASGI app."""
        post, get = ["POST"], ["GET"]
        routes = [
            Route("/v1/infer", self.infer, methods=post),
            Route("/v1/features", self.features, methods=post),
            Route("/v1/models", self.models, methods=get),
            Route("/v1/models/{name}", self.model, methods=get),
            Route("/v1/policy/decide", self.decide, methods=post),
            Route("/v1/policy/outcomes", self.report, methods=post),
            Route("/v1/telemetry", self.telemetry, methods=post),
            Route("/v1/cache/get", self.cache_get, methods=post),
            Route("/v1/cache/put", self.cache_put, methods=post),
            Route("/v1/deploy/canary", self.canary, methods=post),
            Route("/v1/deploy/rollouts/{name}", self.rollout, methods=get),
            *KServeV2(self._dp, self._body, self._quotas).routes(),
            Route("/openapi.json", self.openapi, methods=get),
            Route("/v1/console/summary", self._console.summary, methods=get),
            Route("/v1/console/simulate", self._console.simulate, methods=post),
            *self._policies.routes(),
            Route("/v1/console/settings", self._settings.settings, methods=get),
            Route("/v1/console/budget", self._settings.set_budget, methods=["PUT"]),
            *console_mount(),  # the operator console (console/dist) at /console/
        ]
        handlers: dict[Any, Any] = {
            AimlError: _aiml_error,
            HTTPException: _http_error,
            _TooLarge: _too_large,
            Exception: _internal,
        }
        middleware = [self.middleware(routes)] if self.middleware is not None else []
        return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


def _from_json(body: bytes, message: Message) -> Any:
    try:
        json_format.Parse(body or b"{}", message, ignore_unknown_fields=False)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidArgument(
            f"body is not valid {message.DESCRIPTOR.full_name} JSON: {exc}"
        ) from None
    return message


class _TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes exceeds the limit of {limit} bytes")


async def _aiml_error(request: Request, exc: AimlError) -> Response:
    return _error(request, http_status(exc), error_body(exc)["code"], exc.message)


async def _too_large(request: Request, exc: _TooLarge) -> Response:
    return _error(request, 413, ErrorCode.RESOURCE_EXHAUSTED.value, str(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(exc.status_code, "INVALID_ARGUMENT")
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /openapi.json"
    return _error(request, exc.status_code, code, message)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("REST bridge bug on %s %s", request.method, request.url.path)
    return _error(request, 500, "INTERNAL", "internal error")


__all__ = ["RestBridge"]
