"""The one gRPC server interceptor that enforces the authorization table.

For every call it resolves the principal from the transport (client certificate in the auth
context, ``authorization`` metadata), looks the method up in :data:`GRPC_RULES`, and either
aborts (UNAUTHENTICATED / PERMISSION_DENIED, written to the audit trail) or runs the handler as
that principal (``cloud.core.acting_as``), auditing management actions with their outcome and
what the core refuses for what a call names (``cloud.core.refused``: a model outside the caller's
scope, answered NOT_FOUND) as PERMISSION_DENIED, once per call and resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc.aio import AbortError

from cloud.authz._authn import Authenticator
from cloud.authz._table import Rule, grpc_rule
from cloud.core import AuditEvent, AuditSink, Principal, RefusalHook, acting_as, discard_audit
from common.errors import AimlError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 256
_RESOURCE_FIELDS = ("model_name", "name", "device_id")


def resource_of(request: Any) -> str:
    """What a management request acts on: its model (or rollout's model), '' when none."""
    if request is None:
        return ""
    rollout: Any = getattr(request, "rollout", None)
    model: Any = getattr(rollout, "model_name", "") if rollout is not None else ""
    if isinstance(model, str) and model:
        return model[:MAX_DETAIL_CHARS]
    for name in _RESOURCE_FIELDS:
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            return value[:MAX_DETAIL_CHARS]
    outcomes = getattr(request, "outcomes", None)
    if outcomes is not None:
        return f"{len(outcomes)} outcome(s)"
    return ""


REFUSAL_READ_S = 1.0
"""How long a refused client-streaming call may take to deliver its first message."""


async def refuse(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    details: str,
    requests: AsyncIterable[Any] | None = None,
) -> NoReturn:
    """Abort a call; a client-streaming one (``requests``) only once its first message arrived
    (or ``REFUSAL_READ_S`` passed). grpc's asyncio client reports INTERNAL "Internal error from
    Core" instead of the server's status when the status overtakes one of its writes in flight
    (grpc/grpc#36066), and a device's first write (its Hello) is in flight exactly when a call is
    refused on arrival: the device would not learn why (revoked, not authorised) and retry."""
    if requests is not None:
        with contextlib.suppress(Exception):  # the message is discarded; any end will do
            await asyncio.wait_for(anext(aiter(requests)), REFUSAL_READ_S)
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else bytes(v).decode("latin-1")
    return None


def _cert_pem(context: grpc.aio.ServicerContext) -> bytes | None:
    values = context.auth_context().get("x509_pem_cert")
    return bytes(values[0]) if values else None


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """Enforces :data:`cloud.authz.GRPC_RULES` on every method of the server."""

    def __init__(self, authenticator: Authenticator, audit: AuditSink = discard_audit) -> None:
        self.authn = authenticator
        self.audit = audit
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def _event(
        self, p: Principal | None, method: str, resource: str, outcome: str, detail: str = ""
    ) -> None:
        try:
            self.audit(
                AuditEvent(
                    principal=p.subject if p else "anonymous",
                    role=p.role.value if p else "",
                    org=p.org if p else "",
                    action=method,
                    resource=resource,
                    outcome=outcome,
                    detail=detail[:MAX_DETAIL_CHARS],
                )
            )
        except Exception:  # the audit sink must never fail a call
            log.exception("audit sink failed")

    def _refusals(self, p: Principal, method: str) -> tuple[RefusalHook, set[str]]:
        """A hook writing what the core refuses during one call (each resource once), and the
        resources it wrote."""
        written: set[str] = set()

        def on_refusal(resource: str, detail: str) -> None:
            if resource not in written:
                written.add(resource)
                self._event(p, method, resource[:MAX_DETAIL_CHARS], "PERMISSION_DENIED", detail)

        return on_refusal, written

    async def admit(
        self,
        method: str,
        rule: Rule | None,
        context: grpc.aio.ServicerContext,
        request: Any,
        requests: AsyncIterable[Any] | None = None,
    ) -> Principal:
        """The caller, or the call is aborted (and audited); ``requests``: the request stream
        of a client-streaming call (see :func:`refuse`)."""
        try:
            principal = self.authn.principal_from_pem(
                _cert_pem(context), _metadata(context, "authorization")
            )
        except Unauthenticated as exc:
            self._event(None, method, resource_of(request), "UNAUTHENTICATED", exc.message)
            await refuse(context, grpc.StatusCode.UNAUTHENTICATED, exc.message, requests)
        if rule is None:
            error: AimlError | None = PermissionDenied(
                f"{method} is not in the authorization table"
            )
        elif principal.authenticated_by == "insecure" or rule.allows(principal.role):
            error = None
        else:
            error = PermissionDenied(f"role {principal.role.value} may not call {method}")
        if error is not None:
            self._event(principal, method, resource_of(request), "PERMISSION_DENIED", error.message)
            await refuse(context, grpc.StatusCode.PERMISSION_DENIED, error.message, requests)
        return principal

    def _wrap(self, method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = grpc_rule(method)
        if rule is not None and rule.public:
            return h
        if h.unary_unary is not None:
            return h._replace(unary_unary=self._unary(method, rule, h.unary_unary))
        if h.unary_stream is not None:
            return h._replace(unary_stream=self._unary_stream(method, rule, h.unary_stream))
        if h.stream_unary is not None:
            return h._replace(stream_unary=self._stream_unary(method, rule, h.stream_unary))
        if h.stream_stream is not None:
            return h._replace(stream_stream=self._stream_stream(method, rule, h.stream_stream))
        return h

    def _unary(
        self, method: str, rule: Rule | None, inner: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(method, rule, context, request)
            on_refusal, refusals = self._refusals(principal, method)
            with acting_as(principal, on_refusal):
                if rule is None or not rule.audit:
                    return await inner(request, context)
                resource = resource_of(request)
                try:
                    response = await inner(request, context)
                except (AbortError, grpc.RpcError):
                    if refusals:  # written as the refusal it was
                        raise
                    code = context.code()
                    outcome = code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
                    self._event(principal, method, resource, outcome, context.details() or "")
                    raise
                except Exception as exc:
                    self._event(principal, method, resource, "INTERNAL", type(exc).__name__)
                    raise
                self._event(principal, method, resource, "OK")
                return response

        return unary_unary

    def _unary_stream(
        self, method: str, rule: Rule | None, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(method, rule, context, request)
            with acting_as(principal, self._refusals(principal, method)[0]):
                async for item in inner(request, context):
                    yield item

        return unary_stream

    def _stream_unary(
        self, method: str, rule: Rule | None, inner: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(method, rule, context, None, requests)
            with acting_as(principal, self._refusals(principal, method)[0]):
                return await inner(requests, context)

        return stream_unary

    def _stream_stream(
        self, method: str, rule: Rule | None, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = await self.admit(method, rule, context, None, requests)
            with acting_as(principal, self._refusals(principal, method)[0]):
                async for item in inner(requests, context):
                    yield item

        return stream_stream

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
                return handler
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped


__all__ = ["AuthzInterceptor", "refuse", "resource_of"]
