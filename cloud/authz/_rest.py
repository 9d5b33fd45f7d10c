"""The one REST (ASGI) middleware that enforces the authorization table, and the uvicorn
protocol that hands it the verified client certificate.

The middleware matches the request against the app's own routes to find the route template,
looks it up in :data:`REST_RULES`, resolves the principal (client certificate + ``authorization``
header) and answers 401 / 403 (written to the audit trail) or runs the endpoint as that principal
(``cloud.core.acting_as``), auditing management routes with their status and what the core
refuses for what a request names (``cloud.core.refused``: a model outside the caller's scope,
answered 404) as PERMISSION_DENIED. Paths no route matches go through (the app answers 404); a
route missing from the table is refused for everyone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from cloud.authz._authn import Authenticator
from cloud.authz._table import rest_rule
from cloud.core import AuditEvent, AuditSink, Principal, acting_as, discard_audit
from common.errors import Unauthenticated

log = logging.getLogger(__name__)

PEER_CERT = "aiml021.peer_cert_der"
"""Key of the verified client certificate (DER) in the ASGI scope's ``state``."""
MAX_DETAIL_CHARS = 256
AUDIT_DETAIL = "aiml021.audit_detail"
"""Key in the request scope's ``state`` where a management endpoint leaves what it changed (a
budget's old and new amount); the audit event of the call carries it as its detail."""


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol that puts the TLS peer's verified certificate (DER) into every
    request scope's ``state`` (uvicorn does not implement the ASGI TLS extension)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # scope["state"] is a copy of app_state per request: one copy per connection here
        self.app_state = {**self.app_state, PEER_CERT: der}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class AuthzMiddleware:
    """ASGI middleware enforcing :data:`cloud.authz.REST_RULES` in front of ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        audit: AuditSink = discard_audit,
        routes: Sequence[BaseRoute] | None = None,
    ) -> None:
        self.app = app
        self.authn = authenticator
        self.audit = audit
        self.routes = routes if routes is not None else getattr(app, "routes", ())
        """The app's routes (given when the middleware sits inside a Starlette app)."""

    def _template(self, scope: Scope) -> str | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", ""))
        return None

    def _event(
        self, p: Principal | None, action: str, resource: str, outcome: str, detail: str = ""
    ) -> None:
        try:
            self.audit(
                AuditEvent(
                    principal=p.subject if p else "anonymous",
                    role=p.role.value if p else "",
                    org=p.org if p else "",
                    action=action,
                    resource=resource[:MAX_DETAIL_CHARS],
                    outcome=outcome,
                    detail=detail[:MAX_DETAIL_CHARS],
                )
            )
        except Exception:  # the audit sink must never fail a request
            log.exception("audit sink failed")

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="aiml021"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        template = self._template(scope)
        if template is None:  # no route: the app answers 404 / 405
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        action = f"{method} {template}"
        resource = scope.get("path", "")
        rule = rest_rule(method, template)
        if rule is not None and rule.public:
            await self.app(scope, receive, send)
            return
        cert = (scope.get("state") or {}).get(PEER_CERT)
        try:
            principal = self.authn.principal(cert, _header(scope, b"authorization"))
        except Unauthenticated as exc:
            self._event(None, action, resource, "UNAUTHENTICATED", exc.message)
            await self._refuse(send, 401, "UNAUTHENTICATED", exc.message)
            return
        allowed = rule is not None and (
            principal.authenticated_by == "insecure" or rule.allows(principal.role)
        )
        if not allowed:
            message = (
                f"{action} is not in the authorization table"
                if rule is None
                else f"role {principal.role.value} may not call {action}"
            )
            self._event(principal, action, resource, "PERMISSION_DENIED", message)
            await self._refuse(send, 403, "PERMISSION_DENIED", message)
            return
        assert rule is not None
        refusals: list[str] = []

        def on_refusal(what: str, detail: str) -> None:
            if what not in refusals:  # each resource once per request
                refusals.append(what)
                self._event(principal, action, what, "PERMISSION_DENIED", detail)

        if not rule.audit:
            with acting_as(principal, on_refusal):
                await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            with acting_as(principal, on_refusal):
                await self.app(scope, receive, send_status)
        except Exception as exc:
            self._event(principal, action, resource, "INTERNAL", type(exc).__name__)
            raise
        code = status[0] if status else 500
        if refusals and code >= 400:  # written as the refusal it was
            return
        detail = str((scope.get("state") or {}).get(AUDIT_DETAIL, ""))
        self._event(principal, action, resource, _OUTCOME.get(code, f"HTTP_{code}"), detail)


_OUTCOME: dict[int, str] = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def authz_middleware(
    authenticator: Authenticator, audit: AuditSink = discard_audit
) -> Callable[[Sequence[BaseRoute]], Middleware]:
    """What ``cloud.rest.RestBridge.middleware`` takes: the app's routes -> the middleware."""

    def build(routes: Sequence[BaseRoute]) -> Middleware:
        return Middleware(AuthzMiddleware, authenticator=authenticator, audit=audit, routes=routes)

    return build


__all__ = ["AUDIT_DETAIL", "PEER_CERT", "AuthzMiddleware", "PeerCertProtocol", "authz_middleware"]
