"""Throw-away CA, gateway and device certificates for mTLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str, key, issuer: x509.Name, issuer_key, ca: bool, server: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path, device_id: str = "device-7") -> dict[str, bytes]:
    """Write ca.pem, gateway.pem/.key and device.pem/.key; return them as bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, _name("test-ca"), ca_key, ca=True, server=False)
    gw_key = ec.generate_private_key(ec.SECP256R1())
    gw = _cert("localhost", gw_key, ca.subject, ca_key, ca=False, server=True)
    dev_key = ec.generate_private_key(ec.SECP256R1())
    dev = _cert(device_id, dev_key, ca.subject, ca_key, ca=False, server=False)
    out = {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "gateway.pem": gw.public_bytes(serialization.Encoding.PEM),
        "gateway.key": _pem_key(gw_key),
        "device.pem": dev.public_bytes(serialization.Encoding.PEM),
        "device.key": _pem_key(dev_key),
    }
    for name, data in out.items():
        (directory / name).write_bytes(data)
    return out
