"""The interceptor that decides whether a client certificate is a device's, on every call.

TLS has verified the chain by the time a call arrives; this checks what TLS does not: the
device profile (``common.auth.device_identity``: KeyUsage, clientAuth, exactly one device URI SAN,
matching common name) and the revocation deny-list (``common.auth.RevocationCache``). Either
failure ends the call with UNAUTHENTICATED naming the reason. Calls without a client certificate
(``--insecure``, or a token-only caller where the listener allows one), and certificates that
name no device at all (a service's, an operator's: their token says who they are), pass on to the
authorization layer, which decides about them.

When the deny-list grows, the open calls of newly revoked devices or certificates (a device's
session stream above all) are ended with UNAUTHENTICATED too, not left to run until the device
reconnects; so are open calls whose certificate expired (:meth:`PeerAuthenticator.end_expired`,
run periodically by the gateway): TLS checks validity only at the handshake.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from cryptography import x509

from cloud.authz import refuse
from cloud.core import AuditEvent, AuditSink, discard_audit
from common.auth import (
    DEVICE_URI_PREFIX,
    DeviceIdentity,
    RevocationCache,
    Revocations,
    check_client_usage,
    identity_from_pem,
)
from common.errors import Unauthenticated

log = logging.getLogger(__name__)

_identity: contextvars.ContextVar[DeviceIdentity | None] = contextvars.ContextVar(
    "aiml021_peer_identity", default=None
)


def current_identity() -> DeviceIdentity | None:
    """The checked device identity of the call being served (None without a certificate)."""
    return _identity.get()


@functools.lru_cache(maxsize=4096)
def _names_a_device(pem: bytes) -> bool:
    """Whether the certificate claims to be a device's (has a device URI SAN at all)."""
    try:
        san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        return False
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return any(u.startswith(DEVICE_URI_PREFIX) for u in uris)


@functools.lru_cache(maxsize=4096)
def _client_usage(pem: bytes) -> Unauthenticated | None:
    """Why a certificate that names no device is not a TLS client certificate, or None."""
    try:
        check_client_usage(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return Unauthenticated("client certificate is not a readable X.509 certificate")
    except Unauthenticated as exc:
        return exc
    return None


def _expired(identity: DeviceIdentity) -> str:
    return (
        f"certificate {identity.serial} of device {identity.device_id!r} expired at "
        f"{identity.not_after:%Y-%m-%dT%H:%M:%SZ}; reconnect with the renewed one"
    )


@functools.lru_cache(maxsize=4096)
def _checked(pem: bytes) -> DeviceIdentity | Unauthenticated:
    try:
        return identity_from_pem(pem)
    except Unauthenticated as exc:
        return exc


class PeerAuthenticator(grpc.aio.ServerInterceptor):
    """Refuses certificates that are not a device's, or that are revoked; ends the open calls
    of devices revoked while connected."""

    def __init__(
        self, revocations: RevocationCache | None = None, *, audit: AuditSink = discard_audit
    ) -> None:
        self.audit = audit
        """Where refusals and cut sessions are written (the hash-chained audit trail)."""
        self.revocations: RevocationCache | None = None
        self.refused = 0
        self.cut = 0
        self._live: dict[asyncio.Task[Any], tuple[DeviceIdentity, grpc.aio.ServicerContext]] = {}
        self._ending: set[asyncio.Task[Any]] = set()
        """Open calls this interceptor ended (status sent, task cancelled)."""
        if revocations is not None:
            self.attach(revocations)

    def attach(self, revocations: RevocationCache) -> None:
        """Check calls against ``revocations`` from now on (and cut what it revokes)."""
        self.revocations = revocations
        revocations.on_change(self._end_revoked)

    def identify(self, context: grpc.aio.ServicerContext) -> DeviceIdentity | None:
        """The caller's device identity, None without a certificate; Unauthenticated when the
        certificate is not a device's or is revoked."""
        pems = context.auth_context().get("x509_pem_cert")
        return self.check_certificate(bytes(pems[0])) if pems else None

    def check_certificate(self, pem: bytes) -> DeviceIdentity | None:
        """The device a (TLS-verified) PEM client certificate names, None for a certificate
        that names no device but is a client certificate (a service's, with a token);
        Unauthenticated when it is neither, or revoked, or expired. For other front doors (REST)
        too: ``cert = ssl.DER_cert_to_PEM_cert(der).encode()``."""
        checked = _checked(pem)
        if isinstance(checked, Unauthenticated):
            if not _names_a_device(pem):
                # A service's or operator's client certificate: not a device, no identity here;
                # the authorization layer (cloud.authz) demands its bearer token. It must still
                # be made for client authentication (not, say, a server's certificate).
                usage = _client_usage(pem)
                if usage is not None:
                    raise usage
                return None
            raise checked
        if self.revocations is not None:
            self.revocations.check(checked)
        if checked.not_after < dt.datetime.now(dt.UTC):  # a new call on an old connection
            raise Unauthenticated(_expired(checked))
        return checked

    def _audit(self, action: str, principal: str, detail: str) -> None:
        self.audit(
            AuditEvent(
                principal=principal or "anonymous",
                role="",
                org="",
                action=action,
                resource="",
                outcome="UNAUTHENTICATED",
                detail=detail[:256],
            )
        )

    def audit_refusal(self, action: str, exc: Unauthenticated, principal: str = "") -> None:
        """Record a refusal made at another front door (REST) with this interceptor's checks."""
        self._audit(action, principal, exc.message)

    @staticmethod
    def _claimed(context: grpc.aio.ServicerContext) -> str:
        """The device id a refused certificate names (for the record only: not trusted)."""
        names = context.auth_context().get("x509_common_name")
        return bytes(names[0]).decode("utf-8", "replace")[:64] if names else ""

    def _end(self, task: asyncio.Task[Any], why: str) -> None:
        """End an open call with UNAUTHENTICATED ``why``. The status is sent from here, then the
        call's task is cancelled: the cancellation may land anywhere, in grpc's own write of a
        streamed message too, where no handler of ours could still send a status."""
        if task.done() or task in self._ending:
            return
        identity, context = self._live[task]
        self._ending.add(task)
        self.cut += 1
        self._audit("open call", identity.device_id, f"open call ended: {why}")
        abort = asyncio.ensure_future(context.abort(grpc.StatusCode.UNAUTHENTICATED, why))
        abort.add_done_callback(_retrieve)  # it raises AbortError once the status is sent
        asyncio.get_running_loop().call_soon(task.cancel)  # after abort queued the status

    def _end_revoked(self, revoked: Revocations) -> None:
        for task, (identity, _) in list(self._live.items()):
            why = revoked.reason(identity)
            if why is not None:
                self._end(task, why)

    def end_expired(self, now: dt.datetime | None = None) -> int:
        """End the open calls whose certificate has expired since they began (TLS checked it
        once, at the handshake; a stream may outlive it). Returns how many."""
        now = now or dt.datetime.now(dt.UTC)
        expired = [(t, i) for t, (i, _) in list(self._live.items()) if i.not_after < now]
        for task, identity in expired:
            self._end(task, _expired(identity))
        return len(expired)

    async def _admit(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        requests: AsyncIterable[Any] | None = None,
    ) -> DeviceIdentity | None:
        try:
            identity = self.identify(context)
        except Unauthenticated as exc:
            self.refused += 1
            log.info("%s refused: %s", method, exc.message)
            self._audit(method, self._claimed(context), exc.message)
            await refuse(context, grpc.StatusCode.UNAUTHENTICATED, exc.message, requests)
        _identity.set(identity)
        return identity

    def _track(
        self, identity: DeviceIdentity | None, context: grpc.aio.ServicerContext
    ) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if identity is not None and task is not None:
            self._live[task] = (identity, context)
        return task

    def _release(self, task: asyncio.Task[Any] | None) -> bool:
        """Forget a finished call; True when this interceptor ended it (its status is sent)."""
        if task is None:
            return False
        self._live.pop(task, None)
        if task in self._ending:
            self._ending.discard(task)
            return True
        return False

    def _wrap(self, method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if h.unary_unary is not None:
            uu = h.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                identity = await self._admit(method, context)
                task = self._track(identity, context)
                ended = False
                try:
                    return await uu(request, context)
                except (asyncio.CancelledError, Exception):
                    # ended by us (revoked, expired) however the handler turned the cancellation:
                    # the status is already sent, nothing else may be
                    ended = self._release(task)
                    if ended:
                        raise asyncio.CancelledError from None
                    raise
                finally:
                    if not ended:
                        self._release(task)

            return h._replace(unary_unary=unary_unary)
        if h.stream_unary is not None:
            su = h.stream_unary

            async def stream_unary(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
            ) -> Any:
                identity = await self._admit(method, context, requests)
                task = self._track(identity, context)
                ended = False
                try:
                    return await su(requests, context)
                except (asyncio.CancelledError, Exception):
                    # ended by us (revoked, expired) however the handler turned the cancellation:
                    # the status is already sent, nothing else may be
                    ended = self._release(task)
                    if ended:
                        raise asyncio.CancelledError from None
                    raise
                finally:
                    if not ended:
                        self._release(task)

            return h._replace(stream_unary=stream_unary)
        streaming = h.unary_stream or h.stream_stream
        if streaming is None:
            return h
        inner: Callable[..., AsyncIterator[Any]] = streaming
        client_streams = h.stream_stream is not None

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            identity = await self._admit(method, context, request if client_streams else None)
            task = self._track(identity, context)
            items = inner(request, context)
            ended = False
            try:
                async for item in items:
                    yield item
            except (asyncio.CancelledError, Exception):
                # ended by us (revoked, expired) however the handler turned the cancellation:
                # the status is already sent, nothing else may be
                ended = self._release(task)
                if ended:
                    raise asyncio.CancelledError from None
                raise
            finally:
                if not ended:
                    self._release(task)
                # Closed here, in this call's task and context: left to the garbage collector,
                # the handler's cleanup would run in another context.
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()

        if h.unary_stream is not None:
            return h._replace(unary_stream=stream)
        return h._replace(stream_stream=stream)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._wrap(handler_call_details.method, handler)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


__all__ = ["PeerAuthenticator", "current_identity"]
