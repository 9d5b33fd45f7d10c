"""The device side of enrollment: a key made on the device, a certificate signing request, the
call to the issuing CA (``aiml021.enrollment.v1.EnrollmentService``) and the installation of what
it returns. The private key never leaves the device; it is written 0600 atomically.

Renewal proves possession of the current key: the device signs
``"aiml021.enrollment.v1.renew|" + SHA-256(new request DER)`` with it, and the CA checks that
signature against the current certificate, which must be valid, unrevoked and of the device
profile. Replaying a captured renewal gains nothing: the certificate it yields is for a key only
the device holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiml021.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.auth._certs import check_device_id
from common.auth._keys import load_private_key, write_atomic, write_private_key
from common.errors import AimlError, ErrorCode, InvalidArgument, Unauthenticated, error_from_code

log = logging.getLogger(__name__)

RENEW_PROOF_CONTEXT = b"aiml021.enrollment.v1.renew|"


def make_csr(key: ec.EllipticCurvePrivateKey, device_id: str) -> bytes:
    """A PKCS#10 request (PEM) for ``device_id`` signed by ``key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_device_id(device_id))])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _proof_message(csr_pem: bytes) -> bytes:
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    return RENEW_PROOF_CONTEXT + hashlib.sha256(der).digest()


def renewal_proof(current_key: ec.EllipticCurvePrivateKey, csr_pem: bytes) -> bytes:
    """The current key's signature over the new request (see the module docstring)."""
    return current_key.sign(_proof_message(csr_pem), ec.ECDSA(hashes.SHA256()))


def verify_renewal_proof(current: x509.Certificate, csr_pem: bytes, proof: bytes) -> None:
    """Unauthenticated unless ``proof`` is the current certificate's key's signature over
    ``csr_pem``."""
    key = current.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Unauthenticated("current certificate key is not EC")
    try:
        key.verify(proof, _proof_message(csr_pem), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Unauthenticated(
            "renewal proof does not verify with the current certificate"
        ) from None


@dataclass(frozen=True)
class DeviceFiles:
    """Where a device keeps its TLS material (the edge agent's ``tls`` settings layout)."""

    directory: Path
    device_id: str
    ca_file: str = "ca.pem"
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def ca_path(self) -> Path:
        return self.directory / self.ca_file

    @property
    def cert_path(self) -> Path:
        return self.directory / (self.cert_file or f"{self.device_id}.pem")

    @property
    def key_path(self) -> Path:
        return self.directory / (self.key_file or f"{self.device_id}.key")

    def certificate(self) -> x509.Certificate | None:
        """The installed certificate, or None before enrollment."""
        if not self.cert_path.exists():
            return None
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(CA bundle, certificate chain, key) PEM, checked to belong together; the key file
        must be readable by its owner only."""
        try:
            ca, chain = self.ca_path.read_bytes(), self.cert_path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(
                f"tls.dir {self.directory}: cannot read {exc.filename}: {exc.strerror}"
            ) from None
        key = load_private_key(self.key_path)
        if x509.load_pem_x509_certificate(chain).public_key() != key.public_key():
            raise InvalidArgument(f"{self.cert_path} does not belong to the key {self.key_path}")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return ca, chain, pem

    def install(
        self, key: ec.EllipticCurvePrivateKey, issued: enrollment_pb2.IssuedCertificate
    ) -> x509.Certificate:
        """Write the new key (0600, atomically), certificate and CA bundle."""
        cert = x509.load_pem_x509_certificate(issued.certificate_pem)
        if cert.public_key() != key.public_key():
            raise InvalidArgument("the CA returned a certificate for another key")
        write_private_key(self.key_path, key)
        write_atomic(self.cert_path, issued.certificate_pem, 0o644)
        if issued.ca_bundle_pem:
            write_atomic(self.ca_path, issued.ca_bundle_pem, 0o644)
        return cert


def _error(exc: grpc.RpcError) -> AimlError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return error_from_code(ErrorCode.from_name(name), f"CA: {details or name}")


class EnrollmentClient:
    """Calls the issuing CA at ``target`` over TLS 1.3, trusting ``trust_pem`` (the CA bundle
    the device was given with its bootstrap token, or its current one)."""

    def __init__(
        self,
        target: str,
        trust_pem: bytes,
        *,
        server_name: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self._channel = grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=trust_pem), options=options
        )
        self._stub = enrollment_pb2_grpc.EnrollmentServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def __aenter__(self) -> EnrollmentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def enroll(
        self, device_id: str, token: str, csr_pem: bytes
    ) -> enrollment_pb2.IssuedCertificate:
        """Enroll: the first certificate, for a bootstrap token."""
        request = enrollment_pb2.EnrollRequest(
            device_id=device_id, bootstrap_token=token, csr_pem=csr_pem
        )
        try:
            response = await self._stub.Enroll(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return response.certificate

    async def renew(
        self, cert_pem: bytes, csr_pem: bytes, proof: bytes
    ) -> enrollment_pb2.IssuedCertificate:
        """Renew: the next certificate, for proof of the current key."""
        request = enrollment_pb2.RenewRequest(
            certificate_pem=cert_pem, csr_pem=csr_pem, proof=proof
        )
        try:
            response = await self._stub.Renew(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return response.certificate


async def enroll_device(
    files: DeviceFiles, target: str, token: str, *, server_name: str | None = None
) -> x509.Certificate:
    """Make a key on this device, enroll it with ``token`` and install the certificate. The CA
    is trusted through ``files.ca_path`` (the bundle delivered with the token)."""
    try:
        trust = files.ca_path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(
            f"enrollment needs the CA bundle {files.ca_path} (delivered with the bootstrap token): "
            f"{exc.strerror}"
        ) from None
    key = ec.generate_private_key(ec.SECP256R1())
    async with EnrollmentClient(target, trust, server_name=server_name) as client:
        issued = await client.enroll(files.device_id, token, make_csr(key, files.device_id))
    cert = files.install(key, issued)
    log.info(
        "enrolled device %s (certificate %x until %s)",
        files.device_id,
        cert.serial_number,
        cert.not_valid_after_utc,
    )
    return cert


async def renew_device(
    files: DeviceFiles, target: str, *, server_name: str | None = None
) -> x509.Certificate:
    """Make a new key, renew with proof of the current one and install the new certificate."""
    trust, chain, _ = files.read()
    current_key = load_private_key(files.key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, files.device_id)
    async with EnrollmentClient(target, trust, server_name=server_name) as client:
        issued = await client.renew(chain, csr, renewal_proof(current_key, csr))
    cert = files.install(key, issued)
    log.info(
        "renewed device %s certificate (%x until %s)",
        files.device_id,
        cert.serial_number,
        cert.not_valid_after_utc,
    )
    return cert


def renewal_due(cert: x509.Certificate, fraction: float) -> dt.datetime:
    """When ``cert`` should be renewed: after ``fraction`` of its lifetime."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * fraction


__all__ = [
    "RENEW_PROOF_CONTEXT",
    "DeviceFiles",
    "EnrollmentClient",
    "enroll_device",
    "make_csr",
    "renew_device",
    "renewal_due",
    "renewal_proof",
    "verify_renewal_proof",
]
