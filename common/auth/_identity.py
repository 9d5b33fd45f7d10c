"""What a verified client certificate must say before its holder is a device: the profile the
issuing CA writes (``common.auth._certs.device_certificate``), checked by the gateway on every
call and by the CA at renewal.

TLS only proves that a trusted CA signed the certificate; a CA-signed certificate made for a
server, or for another purpose, must not become a device. So: KeyUsage digitalSignature, no CA
basic constraint, ExtendedKeyUsage clientAuth, exactly one ``aiml021:device:<id>`` URI SAN, and
a common name (when present) equal to that id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.auth._certs import DEVICE_URI_PREFIX, check_device_id
from common.errors import InvalidArgument, Unauthenticated


@dataclass(frozen=True)
class DeviceIdentity:
    """A device as its certificate names it."""

    device_id: str
    serial: str
    """Certificate serial number, lower-case hex (how the deny-list names a certificate)."""
    not_after: dt.datetime


def serial_hex(cert: x509.Certificate) -> str:
    """The certificate's serial number as lower-case hex."""
    return format(cert.serial_number, "x")


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def check_client_usage(cert: x509.Certificate) -> None:
    """Unauthenticated unless ``cert`` is made for TLS client authentication: KeyUsage
    digitalSignature, ExtendedKeyUsage clientAuth, not a CA (asked of every client certificate,
    a device's or a service's)."""
    try:
        cert.extensions  # noqa: B018 - parses every extension, raising on a malformed one
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise Unauthenticated(f"client certificate has malformed extensions: {exc}") from None
    basic = _extension(cert, x509.BasicConstraints)
    if isinstance(basic, x509.BasicConstraints) and basic.ca:
        raise Unauthenticated("client certificate is a CA certificate, not a device certificate")
    usage = _extension(cert, x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
        raise Unauthenticated("client certificate lacks KeyUsage digitalSignature")
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if not isinstance(eku, x509.ExtendedKeyUsage) or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise Unauthenticated("client certificate lacks ExtendedKeyUsage clientAuth")


def device_identity(cert: x509.Certificate) -> DeviceIdentity:
    """The device ``cert`` names; Unauthenticated, naming the first failed rule, otherwise."""
    check_client_usage(cert)
    san = _extension(cert, x509.SubjectAlternativeName)
    uris = (
        [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        if isinstance(san, x509.SubjectAlternativeName)
        else []
    )
    devices = [u.removeprefix(DEVICE_URI_PREFIX) for u in uris if u.startswith(DEVICE_URI_PREFIX)]
    if len(devices) != 1:
        raise Unauthenticated(
            f"client certificate must carry exactly one device URI SAN ({DEVICE_URI_PREFIX}<id>); "
            f"it has {len(devices)}"
        )
    try:
        device_id = check_device_id(devices[0])
    except InvalidArgument as exc:
        raise Unauthenticated(f"device URI SAN: {exc.message}") from None
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names and names != [device_id]:
        raise Unauthenticated(
            f"client certificate common name {names[0]!r} differs from its device URI SAN "
            f"{device_id!r}"
        )
    return DeviceIdentity(device_id, serial_hex(cert), cert.not_valid_after_utc)


def identity_from_pem(pem: bytes) -> DeviceIdentity:
    """:func:`device_identity` of a PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("client certificate is not a readable X.509 certificate") from None
    return device_identity(cert)


__all__ = [
    "DeviceIdentity",
    "check_client_usage",
    "device_identity",
    "identity_from_pem",
    "serial_hex",
]
