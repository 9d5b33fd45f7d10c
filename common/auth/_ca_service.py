"""``aiml021 ca serve``: the issuing CA as its own small gRPC service (EnrollmentService), on its
own host, over server-authenticated TLS 1.3. Devices call it to enroll (bootstrap token + CSR) and
to renew (current certificate + proof of its key); the gateway never holds the CA key and never
signs anything.

Every request is checked before anything is signed: request sizes (grpc's receive limit and
:data:`MAX_CSR_BYTES`), the token (one-time, expiring, bound to the device id) or the current
certificate (issued by a trusted CA, valid, the device profile), and the deny-list (a revoked
device or certificate gets PERMISSION_DENIED). Each enrollment and renewal is logged (and
audited through ``on_issue``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiml021.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from cryptography import x509
from google.protobuf.timestamp_pb2 import Timestamp

from common.auth._ca import DEFAULT_DEVICE_LIFETIME_S, MAX_CSR_BYTES, CertificateAuthority, Issued
from common.auth._certs import DeviceScope
from common.auth._enroll import verify_renewal_proof
from common.auth._grpc_tls import reloading_server_credentials
from common.auth._identity import device_identity, serial_hex
from common.auth._revocation import DenyList
from common.auth._tls import ReloadingServerTls
from common.errors import AimlError, ErrorCode, InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

_STATUS = {code: getattr(grpc.StatusCode, code.value) for code in ErrorCode}


@dataclass(frozen=True)
class IssueEvent:
    """One certificate the service issued (or refused), for the audit trail."""

    action: str
    """``enroll`` or ``renew``."""
    device_id: str
    outcome: str
    """``issued`` or the refusal's code."""
    serial: str = ""
    detail: str = ""


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServiceServicer):
    """Enroll and Renew over one :class:`CertificateAuthority` directory (re-read per request,
    so ``aiml021 ca rotate`` takes effect without a restart)."""

    def __init__(
        self,
        ca_dir: Path,
        deny_list: DenyList | None,
        *,
        device_lifetime_s: float = DEFAULT_DEVICE_LIFETIME_S,
        on_issue: Callable[[IssueEvent], None] | None = None,
    ) -> None:
        self.ca_dir = ca_dir
        self.deny_list = deny_list
        self.device_lifetime_s = device_lifetime_s
        self.on_issue = on_issue

    async def _revoked(self, device_id: str, serial: str | None) -> None:
        if self.deny_list is None:
            return
        revoked = await self.deny_list.snapshot()
        if device_id in revoked.devices:
            raise PermissionDenied(f"device {device_id!r} is revoked")
        if serial is not None and serial in revoked.serials:
            raise PermissionDenied(f"certificate {serial} is revoked")

    def _answer(self, issued: Issued) -> enrollment_pb2.IssuedCertificate:
        ts = Timestamp()
        ts.FromDatetime(issued.cert.not_valid_after_utc)
        return enrollment_pb2.IssuedCertificate(
            certificate_pem=issued.cert_pem,
            ca_bundle_pem=issued.bundle_pem,
            serial=serial_hex(issued.cert),
            not_after=ts,
        )

    async def _run(
        self,
        action: str,
        device: list[str],
        context: grpc.aio.ServicerContext,
        work: Callable[[], Awaitable[Issued]],
    ) -> enrollment_pb2.IssuedCertificate:
        try:
            issued = await work()
        except AimlError as exc:
            self._event(IssueEvent(action, device[0], exc.code.value, detail=exc.message))
            await context.abort(_STATUS[exc.code], exc.message)
            raise  # unreachable: abort raises
        self._event(IssueEvent(action, device[0], "issued", serial_hex(issued.cert)))
        return self._answer(issued)

    def _event(self, event: IssueEvent) -> None:
        log.info(
            "ca %s device=%s outcome=%s serial=%s %s",
            event.action,
            event.device_id,
            event.outcome,
            event.serial,
            event.detail,
        )
        if self.on_issue is not None:
            self.on_issue(event)

    async def Enroll(
        self, request: enrollment_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> enrollment_pb2.EnrollResponse:
        async def work() -> Issued:
            if not request.bootstrap_token:
                raise Unauthenticated("enrollment needs a bootstrap token")
            # Everything that can fail is checked before the one-time token is spent.
            CertificateAuthority.check_device_request(request.csr_pem, request.device_id)
            ca = await asyncio.to_thread(CertificateAuthority.open, self.ca_dir)
            await self._revoked(request.device_id, None)
            scope = await asyncio.to_thread(
                ca.redeem_bootstrap, request.bootstrap_token, request.device_id
            )
            return ca.sign_device(request.csr_pem, request.device_id, self.device_lifetime_s, scope)

        cert = await self._run("enroll", [request.device_id], context, work)
        return enrollment_pb2.EnrollResponse(certificate=cert)

    async def Renew(
        self, request: enrollment_pb2.RenewRequest, context: grpc.aio.ServicerContext
    ) -> enrollment_pb2.RenewResponse:
        device = [""]

        async def work() -> Issued:
            if len(request.certificate_pem) > MAX_CSR_BYTES:
                raise InvalidArgument("current certificate is too large")
            try:
                current = x509.load_pem_x509_certificate(request.certificate_pem)
            except ValueError:
                raise InvalidArgument("current certificate is not PEM X.509") from None
            ca = await asyncio.to_thread(CertificateAuthority.open, self.ca_dir)
            ca.verify_issued(current)
            identity = device_identity(current)
            device[0] = identity.device_id
            await self._revoked(identity.device_id, identity.serial)
            verify_renewal_proof(current, request.csr_pem, request.proof)
            # A renewed certificate keeps the tenant the operator enrolled the device into.
            issued = ca.sign_device(
                request.csr_pem, identity.device_id, self.device_lifetime_s, DeviceScope.of(current)
            )
            if issued.cert.public_key() == current.public_key():
                raise InvalidArgument("renewal must use a new key")
            return issued

        cert = await self._run("renew", device, context, work)
        return enrollment_pb2.RenewResponse(certificate=cert)


class CaServer:
    """The EnrollmentService on ``host:port`` with the CA directory's service.pem/key."""

    def __init__(
        self, servicer: EnrollmentServicer, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.servicer = servicer
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 4 * MAX_CSR_BYTES),
                ("grpc.max_metadata_size", 8 * 1024),
                ("grpc.server_handshake_timeout_ms", 5000),
            ]
        )
        enrollment_pb2_grpc.add_EnrollmentServiceServicer_to_server(servicer, self._server)
        # The service's certificate changes with ``aiml021 ca rotate``: served without restart.
        self.tls = ReloadingServerTls(
            servicer.ca_dir, cert_file="service.pem", key_file="service.key", ca_file=None
        )
        creds = reloading_server_credentials(self.tls, require_client_auth=False)
        self.host = host
        self.port = self._server.add_secure_port(f"{host}:{port}", creds)

    async def start(self) -> None:
        await self._server.start()

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def stop(self, grace_s: float = 2.0) -> None:
        await self._server.stop(grace_s)


__all__ = ["CaServer", "EnrollmentServicer", "IssueEvent"]
