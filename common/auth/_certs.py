"""Development PKI: a CA, a server certificate and device certificates (cryptography, EC P-256).

A device certificate carries the device id as its subject common name and as a URI SAN
``aiml021:device:<id>``; the gateway reads the id from the verified certificate only.
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

from common.errors import InvalidArgument

DEVICE_URI_PREFIX = "aiml021:device:"


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
        """Write ``<stem>.pem`` and ``<stem>.key`` (mode 0600) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem())
        key_path.write_bytes(self.key_pem())
        key_path.chmod(0o600)
        return cert_path, key_path


def _builder(
    subject: str, issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def create_ca(name: str = "aiml021 dev CA", days: int = 3650) -> KeyPair:
    """A self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, None, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _leaf(
    ca: KeyPair, subject: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(subject, ca.cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_server_cert(ca: KeyPair, hosts: list[str] | None = None, days: int = 825) -> KeyPair:
    """A server certificate for ``hosts`` (DNS names or IP addresses; default localhost)."""
    hosts = hosts or ["localhost", "127.0.0.1", "::1"]
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return _leaf(ca, hosts[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_device_cert(ca: KeyPair, device_id: str, days: int = 365) -> KeyPair:
    """A client certificate whose CN (and URI SAN) is ``device_id``."""
    if not device_id or any(c in device_id for c in "/\\\x00") or len(device_id) > 64:
        raise InvalidArgument(f"invalid device id {device_id!r} (1-64 chars, no slashes)")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)]
    return _leaf(ca, device_id, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def load_keypair(cert_path: Path, key_path: Path) -> KeyPair:
    """Read a certificate and its key from PEM files."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{key_path}: expected an EC private key")
    return KeyPair(cert, key)


def device_id_of(cert: x509.Certificate) -> str:
    """The device id a certificate carries (its common name)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise InvalidArgument("certificate has no common name")
    return str(attrs[0].value)


def write_dev_pki(
    directory: Path, devices: list[str], hosts: list[str] | None = None
) -> dict[str, Path]:
    """Create ca.pem/key, server.pem/key and <device>.pem/key under ``directory`` (reusing an
    existing CA there). Returns the written paths by role."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key = directory / "ca.pem", directory / "ca.key"
    ca = load_keypair(ca_pem, ca_key) if ca_pem.exists() and ca_key.exists() else create_ca()
    paths = {"ca": ca.write(directory, "ca")[0]}
    paths["server"] = issue_server_cert(ca, hosts).write(directory, "server")[0]
    for dev in devices:
        paths[dev] = issue_device_cert(ca, dev).write(directory, dev)[0]
    return paths


__all__ = [
    "DEVICE_URI_PREFIX",
    "KeyPair",
    "create_ca",
    "device_id_of",
    "issue_device_cert",
    "issue_server_cert",
    "load_keypair",
    "write_dev_pki",
]
