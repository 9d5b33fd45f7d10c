"""Transport security of the gateway's listeners, built once by the composition root: the
server TLS material (re-read when ``tls.dir`` changes: certificate and CA rotation without a
restart), the revocation deny-list (refreshed from the shared store) and the interceptor that
admits only device certificates that are not revoked (and ends calls that outlive their
certificate); plus the start-up check that every TLS listener refuses TLS 1.2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

from cloud._settings import GatewaySettings
from cloud.authz import PEER_CERT
from cloud.core import AuditSink, discard_audit
from cloud.grpc._identity import PeerAuthenticator
from common.aio import cancel_and_wait
from common.auth import ReloadingServerTls, RevocationCache, assert_tls13_only, open_deny_list
from common.errors import Unauthenticated

log = logging.getLogger(__name__)


def deny_list_url(s: GatewaySettings, uses_stores: bool = True) -> str | None:
    """Where the deny-list lives: ``tls.revocation_url``, else the store the gateways share
    (Redis when ``stores.backend`` is redis, else the metadata database) when the gateway uses
    its configured stores; None when off."""
    url = s.tls.revocation_url
    if url == "none":
        return None
    if url:
        return url
    if not uses_stores:
        return None
    if s.stores.backend == "redis":
        return s.stores.redis_url
    if s.stores.metadata_url not in ("none", "sqlite:///:memory:"):
        return s.stores.metadata_url
    return None


class TransportSecurity:
    """mTLS material, deny-list and peer checks of one gateway (nothing with ``tls.insecure``)."""

    def __init__(
        self, s: GatewaySettings, *, uses_stores: bool = True, audit: AuditSink = discard_audit
    ) -> None:
        self.settings = s
        self.insecure = s.tls.insecure
        self.deny_list_url = None if self.insecure else deny_list_url(s, uses_stores)
        self.material: ReloadingServerTls | None = None
        self.revocations: RevocationCache | None = None
        self.authenticator = PeerAuthenticator(audit=audit)
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the server material (a CA key in ``tls.dir``, a key file others may read or a
        certificate without serverAuth stop the gateway before it binds anything) and the
        deny-list (the gateway does not serve without it when one is configured)."""
        if self.insecure:
            return
        t = self.settings.tls
        self.material = ReloadingServerTls(t.dir, t.reload_interval_s)
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep(t.revocation_refresh_s), name="expired-certificates"
        )
        if self.deny_list_url is None:
            log.warning(
                "no revocation deny-list (tls.revocation_url / shared store): revoked "
                "certificates stay valid until they expire"
            )
            return
        self.revocations = RevocationCache(
            open_deny_list(self.deny_list_url), t.revocation_refresh_s
        )
        await self.revocations.start()
        self.authenticator.attach(self.revocations)

    async def check_listener(self, host: str, port: int, what: str) -> None:
        """Refuse to go on when the listener accepts TLS 1.2 (see ``common.auth._tls``). The
        probe blocks, so it runs in a thread: the REST listener is served by this event loop
        and could not answer it otherwise (it then timed out after 5 s and passed unchecked)."""
        if not self.insecure:
            await asyncio.to_thread(assert_tls13_only, host, port, what)

    async def _sweep(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.authenticator.end_expired()

    def rest_guard(self, app: Any) -> Any:
        """``app`` (ASGI) behind the same certificate checks as gRPC: a client certificate
        outside the device profile, revoked or expired gets 401 before any route runs."""
        if self.insecure:
            return app
        authenticator = self.authenticator

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            der = (scope.get("state") or {}).get(PEER_CERT) if scope["type"] == "http" else None
            if der:
                try:
                    authenticator.check_certificate(ssl.DER_cert_to_PEM_cert(der).encode())
                except Unauthenticated as exc:
                    authenticator.refused += 1
                    authenticator.audit_refusal(f"{scope.get('method')} {scope.get('path')}", exc)
                    body = json.dumps({"error": exc.message}).encode()
                    headers = [(b"content-type", b"application/json"),
                               (b"content-length", str(len(body)).encode())]  # fmt: skip
                    await send({"type": "http.response.start", "status": 401, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
            await app(scope, receive, send)

        return guarded

    async def close(self) -> None:
        await cancel_and_wait(self._sweeper)
        self._sweeper = None
        if self.revocations is not None:
            await self.revocations.close()


__all__ = ["TransportSecurity", "deny_list_url"]
