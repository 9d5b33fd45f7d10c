"""Certificates of the aiml021 PKI (cryptography, EC P-256): CA, server and device profiles.

A device certificate carries the device id as its subject common name and as a URI SAN
``aiml021:device:<id>``, KeyUsage digitalSignature and ExtendedKeyUsage clientAuth; a server
certificate carries its DNS names / IP addresses and serverAuth. The gateway reads a device's id
from the verified certificate only (``common.auth.device_identity`` checks the profile).

``common.auth.write_dev_pki`` is the development shortcut (keys made centrally). Production
devices enroll with the issuing CA (``aiml021 ca``, ``common.auth._ca``) and keep their keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.auth._keys import load_private_key, write_atomic, write_private_key
from common.errors import InvalidArgument, Unauthenticated

DEVICE_URI_PREFIX = "aiml021:device:"
SCOPE_URI_PREFIX = "aiml021:"  # + "org:<org>", "project:<project>", "region:<region>"
SCOPE_KINDS = ("org", "project", "region")
CLAIM_KINDS = ("device", *SCOPE_KINDS)


@dataclass(frozen=True)
class DeviceScope:
    """The tenant a device belongs to, written into its certificate as URI SANs
    (``aiml021:org:<org>``, ``aiml021:project:<p>``, ``aiml021:region:<r>``) and read by the
    gateway's authorization; an empty field is unscoped (the gateway's defaults apply)."""

    org: str = ""
    project: str = ""
    region: str = ""

    def __post_init__(self) -> None:
        for kind in SCOPE_KINDS:
            value = getattr(self, kind)
            if value:
                _check_name(value, kind)
        if self.project and not self.org:
            raise InvalidArgument("a device scope with a project needs its org")

    def uris(self) -> list[x509.GeneralName]:
        """The URI SANs of this scope."""
        return [
            x509.UniformResourceIdentifier(f"{SCOPE_URI_PREFIX}{kind}:{getattr(self, kind)}")
            for kind in SCOPE_KINDS
            if getattr(self, kind)
        ]

    def encode(self) -> str:
        """``org/project/region`` (the bootstrap-token row's form; names hold no slash)."""
        return f"{self.org}/{self.project}/{self.region}"

    @classmethod
    def decode(cls, text: str | None) -> DeviceScope:
        """The inverse of :meth:`encode` (``None`` or empty: unscoped)."""
        if not text:
            return cls()
        org, project, region = [*text.split("/"), "", "", ""][:3]
        return cls(org, project, region)

    @classmethod
    def of(cls, cert: x509.Certificate) -> DeviceScope:
        """The scope written in ``cert`` (unscoped when it has none); Unauthenticated as
        :func:`uri_claims`."""
        claims = uri_claims(cert)
        return cls(**{kind: claims[kind] for kind in SCOPE_KINDS if kind in claims})


MAX_CLAIM_CHARS = 64


def uri_claims(cert: x509.Certificate) -> dict[str, str]:
    """What ``cert``'s ``aiml021:`` URI SANs claim: ``device``, ``org``, ``project``, ``region``
    (other URIs ignored). The one reader of them, for the gateway's identity and the CA's
    renewals alike; Unauthenticated when one is empty, over 64 characters or repeated."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {}
    found: dict[str, str] = {}
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if not uri.startswith(SCOPE_URI_PREFIX):
            continue
        kind, _, value = uri.removeprefix(SCOPE_URI_PREFIX).partition(":")
        if kind not in CLAIM_KINDS:
            continue
        if not value or len(value) > MAX_CLAIM_CHARS or kind in found:
            raise Unauthenticated(f"client certificate has a bad or repeated {kind} URI SAN")
        found[kind] = value
    return found


PublicKey = ec.EllipticCurvePublicKey
_SKEW = dt.timedelta(minutes=5)
"""Certificates start up to this long (a tenth of their lifetime) before they are issued:
device clocks drift."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.key`` (created 0600, atomically) then ``<stem>.pem`` into
        ``directory``."""
        key_path = write_private_key(directory / f"{stem}.key", self.key)
        cert_path = write_atomic(directory / f"{stem}.pem", self.cert_pem(), 0o644)
        return cert_path, key_path


def _usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: str, issuer: x509.Name | None, public_key: PublicKey, not_after: dt.datetime
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    # Short-lived certificates get a proportionally short back-dating.
    skew = min(_SKEW, max(not_after - now, dt.timedelta(0)) / 10)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - skew)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _expiry(days: float | None = None, seconds: float | None = None) -> dt.datetime:
    delta = dt.timedelta(seconds=seconds) if seconds is not None else dt.timedelta(days=days or 0)
    return dt.datetime.now(dt.UTC) + delta


def create_ca(name: str = "aiml021 dev CA", days: int = 3650) -> KeyPair:
    """A self-signed CA that signs leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, None, key.public_key(), _expiry(days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign_certs=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _leaf(
    ca: KeyPair,
    subject: str,
    public_key: PublicKey,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_after: dt.datetime,
) -> x509.Certificate:
    # Never outlive the issuer: a leaf past its CA's expiry fails verification anyway.
    not_after = min(not_after, ca.cert.not_valid_after_utc)
    return (
        _builder(subject, ca.cert.subject, public_key, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def _check_name(value: str, what: str) -> str:
    if (
        not value
        or len(value) > 64
        or any(c in value for c in "/\\")
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise InvalidArgument(
            f"invalid {what} {value!r} (1-64 printable characters, no slashes or spaces)"
        )
    return value


def check_device_id(device_id: str) -> str:
    """``device_id`` if it can name a device: 1-64 printable characters, no slash, backslash
    or whitespace (it becomes a URI and a common name)."""
    return _check_name(device_id, "device id")


def server_certificate(
    ca: KeyPair, public_key: PublicKey, hosts: list[str], *, days: float = 90
) -> x509.Certificate:
    """A serverAuth certificate for ``hosts`` (DNS names or IP addresses) on ``public_key``."""
    if not hosts:
        raise InvalidArgument("a server certificate needs at least one host name or address")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return _leaf(ca, hosts[0], public_key, sans, ExtendedKeyUsageOID.SERVER_AUTH, _expiry(days))


def device_certificate(
    ca: KeyPair,
    public_key: PublicKey,
    device_id: str,
    *,
    lifetime_s: float,
    scope: DeviceScope | None = None,
) -> x509.Certificate:
    """A clientAuth certificate for ``device_id`` (in ``scope``'s tenant) on ``public_key``,
    valid ``lifetime_s``."""
    uri = x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + check_device_id(device_id))
    return _leaf(
        ca,
        device_id,
        public_key,
        [uri, *(scope or DeviceScope()).uris()],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        _expiry(seconds=lifetime_s),
    )


def issue_server_cert(ca: KeyPair, hosts: list[str] | None = None, days: int = 825) -> KeyPair:
    """A server key and certificate for ``hosts`` (default localhost, 127.0.0.1, ::1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = hosts or ["localhost", "127.0.0.1", "::1"]
    return KeyPair(server_certificate(ca, key.public_key(), hosts, days=days), key)


def issue_device_cert(
    ca: KeyPair, device_id: str, days: float = 365, scope: DeviceScope | None = None
) -> KeyPair:
    """A device key and certificate made centrally (development only: enrolled devices make
    their own key, see ``common.auth.enroll``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = device_certificate(ca, key.public_key(), device_id, lifetime_s=days * 86400, scope=scope)
    return KeyPair(cert, key)


def load_keypair(cert_path: Path, key_path: Path) -> KeyPair:
    """A certificate and its key from PEM files (the key file readable by its owner only)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = load_private_key(key_path)
    if cert.public_key() != key.public_key():
        raise InvalidArgument(f"{cert_path} does not belong to the key {key_path}")
    return KeyPair(cert, key)


def device_id_of(cert: x509.Certificate) -> str:
    """The device id a certificate carries (its common name)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise InvalidArgument("certificate has no common name")
    return str(attrs[0].value)


__all__ = [
    "DEVICE_URI_PREFIX",
    "SCOPE_URI_PREFIX",
    "DeviceScope",
    "KeyPair",
    "check_device_id",
    "create_ca",
    "device_certificate",
    "device_id_of",
    "issue_device_cert",
    "issue_server_cert",
    "load_keypair",
    "server_certificate",
    "uri_claims",
]
