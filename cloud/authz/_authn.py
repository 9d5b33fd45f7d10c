"""Who is calling, from what the transport verified: the client certificate (mTLS) and an
optional bearer token. Never from a field the client fills in.

- A **device** presents a CA-signed certificate whose URI SAN is ``aiml021:device:<id>``
  (the common name, when present, must agree); URI SANs ``aiml021:org:<org>``,
  ``aiml021:project:<p>``, ``aiml021:region:<r>`` scope it (else ``authz.default_org``).
  It may add a short-lived device token (role Device, ``sub`` = its id) that must be bound to
  that certificate (``cnf.x5t#S256``).
- A **service, operator or admin** presents a bearer token (``authorization: Bearer <jwt>``)
  verified against the JWKS; a token bound to a certificate is refused over any other.
- Without TLS (``--insecure``, development on loopback) a call without a token is the
  ``insecure`` principal, which the table lets through; tokens are still verified.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cloud.core import Principal, Role
from common.auth import JwksVerifier, cert_thumbprint, uri_claims
from common.errors import Unauthenticated

MAX_REMEMBERED_DEVICES = 100_000
"""Devices whose organisation :meth:`Authenticator.org_of_device` remembers (least recently
admitted forgotten first; a forgotten device is remembered again at its next call)."""


@dataclass(frozen=True)
class CertIdentity:
    """What a verified client certificate says."""

    der: bytes
    device_id: str = ""
    org: str = ""
    project: str = "*"
    region: str = "*"


@functools.lru_cache(maxsize=4096)
def cert_identity(der: bytes) -> CertIdentity:
    """The identity in a (transport-verified) DER certificate; Unauthenticated when its URI SANs
    are contradictory or malformed."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Unauthenticated("client certificate unreadable") from None
    found = uri_claims(cert)
    device = found.get("device", "")
    if device:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if cns and str(cns[0].value) != device:
            raise Unauthenticated("client certificate's common name and device URI SAN disagree")
    return CertIdentity(
        der,
        device,
        found.get("org", ""),
        found.get("project", "*"),
        found.get("region", "*"),
    )


def pem_to_der(pem: bytes) -> bytes:
    """DER of one PEM certificate (what grpc's auth context holds)."""
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError:
        raise Unauthenticated("client certificate unreadable") from None


@functools.lru_cache(maxsize=4096)
def _pem_der(pem: bytes) -> bytes:
    return pem_to_der(pem)


class Authenticator:
    """Turns transport credentials into a :class:`Principal` (Unauthenticated otherwise)."""

    def __init__(
        self,
        verifier: JwksVerifier | None = None,
        *,
        default_org: str = "default",
        insecure: bool = False,
    ) -> None:
        self.verifier = verifier
        self.default_org = default_org
        self.insecure = insecure
        self._device_orgs: OrderedDict[str, str] = OrderedDict()

    def org_of_device(self, device_id: str) -> str:
        """The organisation of a device as its last admitted certificate (or bound token) said,
        '' for a device not seen since start. What bills and budgets a device's requests
        (``cloud.core.OrgDirectory.resolver``): the same org its data is kept under."""
        return self._device_orgs.get(device_id, "")

    def _seen(self, principal: Principal) -> Principal:
        if principal.role is Role.DEVICE and principal.device_id:
            orgs = self._device_orgs
            orgs[principal.device_id] = principal.org
            orgs.move_to_end(principal.device_id)
            if len(orgs) > MAX_REMEMBERED_DEVICES:
                orgs.popitem(last=False)
        return principal

    def principal(self, cert_der: bytes | None, authorization: str | None) -> Principal:
        """The caller of a request with this (verified) client certificate and this
        ``authorization`` header value."""
        return self._seen(self._principal(cert_der, authorization))

    def _principal(self, cert_der: bytes | None, authorization: str | None) -> Principal:
        ident = cert_identity(cert_der) if cert_der else None
        if authorization:
            return self._from_token(authorization, ident)
        if ident is not None and ident.device_id:
            return Principal(
                ident.device_id,
                Role.DEVICE,
                ident.org or self.default_org,
                ident.project,
                ident.region,
                device_id=ident.device_id,
                authenticated_by="mtls",
            )
        if self.insecure and ident is None:
            return Principal("insecure", Role.ADMIN, self.default_org, authenticated_by="insecure")
        raise Unauthenticated(
            "no identity: present a device certificate (aiml021:device URI SAN) or a bearer token"
        )

    def principal_from_pem(self, cert_pem: bytes | None, authorization: str | None) -> Principal:
        """:meth:`principal` for a PEM certificate."""
        return self.principal(_pem_der(cert_pem) if cert_pem else None, authorization)

    def _from_token(self, authorization: str, ident: CertIdentity | None) -> Principal:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        if self.verifier is None:
            raise Unauthenticated("this gateway accepts no tokens (authz.jwks_file is not set)")
        claims = self.verifier.verify(token.strip())
        try:
            role = Role(claims.role)
        except ValueError:
            raise Unauthenticated(f"token role {claims.role!r} is not a role") from None
        if claims.cert_thumbprint:
            if ident is None or cert_thumbprint(ident.der) != claims.cert_thumbprint:
                raise Unauthenticated("token is bound to another client certificate")
        elif role is Role.DEVICE:
            raise Unauthenticated("a device token must be bound to its certificate (cnf)")
        device_id = ""
        if role is Role.DEVICE:
            assert ident is not None  # bound above
            if claims.subject != ident.device_id:
                raise Unauthenticated("device token subject is not the certificate's device id")
            if ident.org and claims.org != ident.org:
                raise Unauthenticated("device token org is not the certificate's org")
            device_id = ident.device_id
        elif ident is not None and ident.device_id:
            raise Unauthenticated(f"a {role.value} token cannot be used with a device certificate")
        return Principal(
            claims.subject,
            role,
            claims.org,
            claims.project,
            claims.region,
            device_id=device_id,
            authenticated_by="token" if ident is None else "mtls+token",
        )


__all__ = ["Authenticator", "CertIdentity", "cert_identity", "pem_to_der"]
