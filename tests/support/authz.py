"""Identities for authorization tests: a PKI (CA, server, device and service client
certificates scoped by org URI SANs), a token signing key with its JWKS, and per-role clients
for gRPC (channel credentials + metadata) and REST (an ``ssl.SSLContext`` + headers).

Device certificates carry ``aiml021:device:<id>`` and ``aiml021:org:<org>`` URI SANs, KeyUsage
digitalSignature and EKU clientAuth (the profile the issuing CA writes); service clients get a
clientAuth certificate without a device SAN and authenticate with their token.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.auth import (
    create_ca,
    generate_signing_key,
    issue_server_cert,
    issue_token,
    public_jwk,
)


@dataclass
class Identity:
    """One caller: its client certificate and key (PEM) and its bearer token (if any)."""

    name: str
    role: str
    org: str
    cert_pem: bytes
    key_pem: bytes
    token: str | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def cert_der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )


def _client_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, uris: list[str]
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def client_certificate(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, uris: list[str]
) -> tuple[bytes, bytes]:
    """A clientAuth certificate (PEM) and its key signed by the CA, with these URI SANs."""
    return _client_cert(ca_cert, ca_key, cn, uris)


def add_token_client(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    role: str,
    org: str = "default",
) -> Identity:
    """Beside a PKI in ``directory``: ``<name>.pem/.key`` (a client certificate naming no
    device) and a token for ``role`` signed by a key whose JWKS is ``directory/jwks.json``
    (created on first use, reused after)."""
    signing = directory / "jwks-signing.json"
    if signing.exists():
        key = json.loads(signing.read_text())
    else:
        key = generate_signing_key("ES256")
        signing.touch(mode=0o600)
        signing.write_text(json.dumps(key))
        (directory / "jwks.json").write_text(json.dumps({"keys": [public_jwk(key)]}))
    cert, key_pem = _client_cert(ca_cert, ca_key, name, [])
    (directory / f"{name}.pem").write_bytes(cert)
    key_path = directory / f"{name}.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    return Identity(name, role, org, cert, key_pem, issue_token(key, name, role, org, ttl_s=86400))


class AuthzWorld:
    """A CA and server certificate in ``tls_dir``, a JWKS in ``jwks_file``, and identities."""

    def __init__(self, root: Path) -> None:
        self.tls_dir = root / "tls"
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        ca = create_ca("authz test CA")
        self._ca = ca
        server = issue_server_cert(ca)
        (self.tls_dir / "ca.pem").write_bytes(ca.cert_pem())
        (self.tls_dir / "server.pem").write_bytes(server.cert_pem())
        key_path = self.tls_dir / "server.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(server.key_pem())
        self.signing_key = generate_signing_key("ES256")
        self.jwks_file = root / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [public_jwk(self.signing_key)]}))
        self.ca_pem = ca.cert_pem()

    def device(self, device_id: str, org: str) -> Identity:
        """A device certificate (device and org URI SANs), no token."""
        cert, key = _client_cert(
            self._ca.cert,
            self._ca.key,
            device_id,
            [f"aiml021:device:{device_id}", f"aiml021:org:{org}"],
        )
        return Identity(device_id, "Device", org, cert, key)

    def client(self, name: str, role: str, org: str, **claims: Any) -> Identity:
        """A service/operator/admin/observer: a clientAuth certificate without a device SAN
        and a token with ``role`` in ``org``."""
        cert, key = _client_cert(self._ca.cert, self._ca.key, name, [])
        token = issue_token(self.signing_key, name, role, org, **claims)
        return Identity(name, role, org, cert, key, token)

    def anonymous(self) -> Identity:
        """A CA-signed client certificate that names nobody, and no token."""
        cert, key = _client_cert(self._ca.cert, self._ca.key, "nobody", [])
        return Identity("nobody", "", "", cert, key)

    def grpc_credentials(self, who: Identity) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=who.key_pem, certificate_chain=who.cert_pem
        )

    def channel(self, port: int, who: Identity) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", self.grpc_credentials(who))

    def ssl_context(self, who: Identity, directory: Path) -> ssl.SSLContext:
        """A TLS 1.3 client context presenting ``who``'s certificate (files under
        ``directory``, since ``ssl`` loads certificates from paths)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{who.name}.pem", directory / f"{who.name}.key"
        cert.write_bytes(who.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(who.key_pem)
        ca = directory / "ca.pem"
        ca.write_bytes(self.ca_pem)
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def authz_section(self, **extra: Any) -> dict[str, Any]:
        """The gateway's ``authz`` settings section for this world."""
        return {"jwks_file": self.jwks_file, **extra}


__all__ = ["AuthzWorld", "Identity", "add_token_client", "client_certificate"]
