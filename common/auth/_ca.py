"""The issuing CA: its directory, the certificates it signs from requests, one-time bootstrap
tokens, and CA rotation.

The CA lives in its own directory on its own host (``aiml021 ca init --dir DIR``), never in a
gateway's ``--tls-dir``::

    DIR/ (0700)   ca.pem  ca.key (0600)   the issuing CA
                  bundle.pem              every CA certificate still trusted, current first
                  service.pem/.key        TLS identity of ``aiml021 ca serve``
                  tokens.sqlite3          bootstrap tokens (SHA-256 of each, never the token)

Rotation (``aiml021 ca rotate``) makes a new CA key and certificate, deletes the old key and
keeps the old certificate in ``bundle.pem`` until ``aiml021 ca retire``: gateways and devices
trust both while certificates of the old CA are still valid (device certificates are short-lived,
so that is hours, not years). The CA service keeps presenting its certificate of the old CA
until retire, so devices that trust only the old CA can still reach it to renew.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.auth._certs import (
    DeviceScope,
    KeyPair,
    check_device_id,
    create_ca,
    device_certificate,
    issue_device_cert,
    issue_server_cert,
    server_certificate,
)
from common.auth._keys import load_private_key, write_atomic, write_private_key
from common.errors import FailedPrecondition, InvalidArgument, Unauthenticated

MAX_CSR_BYTES = 16 * 1024
"""Largest certificate signing request (PEM) read; a P-384 request is well under 1 KiB."""
DEFAULT_DEVICE_LIFETIME_S = 24 * 3600.0
"""Device certificates are short-lived: a day unless ``--device-lifetime`` says otherwise."""
_CURVES = (ec.SECP256R1, ec.SECP384R1)
_TOKEN_PREFIX = "aiml021-bt."


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if data.strip() else []


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def parse_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A request whose self-signature verifies, on an EC P-256 or P-384 key; InvalidArgument
    otherwise (checked against :data:`MAX_CSR_BYTES` before parsing)."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise InvalidArgument(f"certificate request is {len(csr_pem)} bytes; limit {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidArgument("certificate request is not a PEM PKCS#10 request") from None
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
        raise InvalidArgument("certificate request key must be EC P-256 or P-384")
    if not csr.is_signature_valid:
        raise InvalidArgument("certificate request signature does not verify")
    return csr


def _requested_name(csr: x509.CertificateSigningRequest) -> str | None:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


@dataclass(frozen=True)
class Issued:
    """A certificate the CA signed, with the bundle to trust."""

    cert: x509.Certificate
    bundle_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


class CertificateAuthority:
    """The issuing CA of one directory (see the module docstring for its layout)."""

    def __init__(self, directory: Path, keypair: KeyPair, bundle: list[x509.Certificate]) -> None:
        self.directory = directory
        self.keypair = keypair
        self.bundle = bundle

    # -- directory ---------------------------------------------------------------------------
    @staticmethod
    def exists(directory: Path) -> bool:
        """True when ``directory`` holds a CA."""
        return (directory / "ca.pem").is_file() and (directory / "ca.key").is_file()

    @classmethod
    def init(
        cls, directory: Path, name: str = "aiml021 issuing CA", hosts: list[str] | None = None
    ) -> CertificateAuthority:
        """Create a CA in ``directory`` (refused when one is there)."""
        if cls.exists(directory):
            raise FailedPrecondition(f"{directory} already holds a CA (ca.pem, ca.key)")
        return cls.adopt(directory, create_ca(name), hosts)

    @classmethod
    def adopt(
        cls, directory: Path, keypair: KeyPair, hosts: list[str] | None = None
    ) -> CertificateAuthority:
        """Make ``directory`` the home of an existing CA key pair."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        ca = cls(directory, keypair, [keypair.cert])
        ca._save()
        ca.issue_server(hosts).write(directory, "service")
        return ca

    @classmethod
    def open(cls, directory: Path) -> CertificateAuthority:
        """The CA in ``directory``."""
        if not cls.exists(directory):
            raise FailedPrecondition(f"{directory} holds no CA; create one with `aiml021 ca init`")
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = load_private_key(directory / "ca.key")
        bundle_path = directory / "bundle.pem"
        bundle = _pem_certs(bundle_path.read_bytes()) if bundle_path.exists() else [cert]
        return cls(directory, KeyPair(cert, key), bundle)

    def _save(self) -> None:
        write_private_key(self.directory / "ca.key", self.keypair.key)
        write_atomic(self.directory / "ca.pem", self.keypair.cert_pem(), 0o644)
        write_atomic(self.directory / "bundle.pem", self.bundle_pem(), 0o644)

    def bundle_pem(self) -> bytes:
        """Every CA certificate to trust, current first (PEM)."""
        return _pem(self.bundle)

    # -- rotation ----------------------------------------------------------------------------
    def rotate(self, name: str | None = None) -> KeyPair:
        """A new CA key and certificate; the old certificate stays trusted (in the bundle) until
        :meth:`retire`, the old key is gone."""
        old = self.keypair
        label = name or f"aiml021 issuing CA {dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%S}"
        self.keypair = create_ca(label)
        self.bundle = [self.keypair.cert, *[c for c in self.bundle if c != old.cert], old.cert]
        self._save()
        # The CA service keeps its certificate of the old CA until retire: devices that have
        # not renewed yet trust only the old CA, and must still reach the service to renew.
        return self.keypair

    def retire(self) -> list[x509.Certificate]:
        """Stop trusting every CA but the current one; returns the certificates dropped."""
        dropped = [c for c in self.bundle if c != self.keypair.cert]
        self.bundle = [self.keypair.cert]
        self._save()
        # From now on the CA service presents a certificate of the current CA.
        self.issue_server(self._service_hosts()).write(self.directory, "service")
        return dropped

    def _service_hosts(self) -> list[str] | None:
        path = self.directory / "service.pem"
        if not path.exists():
            return None
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        return hosts or None

    # -- issuing -----------------------------------------------------------------------------
    def issue_server(self, hosts: list[str] | None = None, days: int = 90) -> KeyPair:
        """A server key and certificate (for a gateway's ``--tls-dir`` or the CA service)."""
        return issue_server_cert(self.keypair, hosts, days=days)

    def issue_device(
        self, device_id: str, days: float = 365, scope: DeviceScope | None = None
    ) -> KeyPair:
        """A device key and certificate made here (development only)."""
        return issue_device_cert(self.keypair, device_id, days=days, scope=scope)

    @staticmethod
    def check_device_request(csr_pem: bytes, device_id: str) -> x509.CertificateSigningRequest:
        """The request, if it can become ``device_id``'s certificate (checked before a bootstrap
        token is spent on it); InvalidArgument otherwise."""
        csr = parse_csr(csr_pem)
        check_device_id(device_id)
        asked = _requested_name(csr)
        if asked is not None and asked != device_id:
            raise InvalidArgument(f"certificate request names {asked!r}, not device {device_id!r}")
        return csr

    def sign_device(
        self,
        csr_pem: bytes,
        device_id: str,
        lifetime_s: float = DEFAULT_DEVICE_LIFETIME_S,
        scope: DeviceScope | None = None,
    ) -> Issued:
        """A device certificate for the key of ``csr_pem``, in ``scope``'s tenant. The request's
        own extensions are ignored: the device profile (id, scope, usages, lifetime) is the CA's."""
        csr = self.check_device_request(csr_pem, device_id)
        cert = device_certificate(
            self.keypair,
            csr.public_key(),  # type: ignore[arg-type]
            device_id,
            lifetime_s=lifetime_s,
            scope=scope,
        )
        return Issued(cert, self.bundle_pem())

    def sign_server(self, csr_pem: bytes, hosts: list[str], days: float = 90) -> Issued:
        """A server certificate for the key of ``csr_pem`` and ``hosts``."""
        csr = parse_csr(csr_pem)
        cert = server_certificate(self.keypair, csr.public_key(), hosts, days=days)  # type: ignore[arg-type]
        return Issued(cert, self.bundle_pem())

    def verify_issued(self, cert: x509.Certificate, now: dt.datetime | None = None) -> None:
        """Unauthenticated unless a CA of the bundle signed ``cert`` and it is valid now."""
        now = now or dt.datetime.now(dt.UTC)
        for ca in self.bundle:
            if ca.subject != cert.issuer:
                continue
            with contextlib.suppress(InvalidSignature, ValueError, TypeError):
                cert.verify_directly_issued_by(ca)
                break
        else:
            raise Unauthenticated("certificate was not issued by a trusted CA")
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Unauthenticated(
                f"certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
                f" to {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
            )

    # -- bootstrap tokens --------------------------------------------------------------------
    def _tokens(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.directory / "tokens.sqlite3", timeout=10, isolation_level=None)
        db.execute(
            "CREATE TABLE IF NOT EXISTS tokens (digest TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
            " expires_at REAL NOT NULL, used_at REAL, scope TEXT NOT NULL DEFAULT '')"
        )
        columns = {row[1] for row in db.execute("PRAGMA table_info(tokens)")}
        if "scope" not in columns:  # a CA directory made before tokens carried a tenant
            db.execute("ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT ''")
        return db

    def issue_bootstrap(
        self, device_id: str, ttl_s: float = 3600.0, scope: DeviceScope | None = None
    ) -> str:
        """A one-time token that lets ``device_id`` enroll within ``ttl_s`` seconds, into
        ``scope``'s tenant (the operator decides the tenant here, never the device). Only its
        SHA-256 is stored; the token itself is shown once."""
        check_device_id(device_id)
        if ttl_s <= 0:
            raise InvalidArgument("bootstrap token lifetime must be positive")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        with contextlib.closing(self._tokens()) as db:
            db.execute(
                "INSERT INTO tokens (digest, device_id, expires_at, scope) VALUES (?, ?, ?, ?)",
                (_digest(token), device_id, time.time() + ttl_s, (scope or DeviceScope()).encode()),
            )
        return token

    def redeem_bootstrap(self, token: str, device_id: str) -> DeviceScope:
        """Consume ``token`` for ``device_id`` (exactly once, before it expires) and return the
        tenant it enrolls into; Unauthenticated with the reason otherwise."""
        digest, now = _digest(token), time.time()
        with contextlib.closing(self._tokens()) as db:
            claimed = db.execute(
                "UPDATE tokens SET used_at=? WHERE digest=? AND device_id=? AND used_at IS NULL "
                "AND expires_at>? RETURNING scope",
                (now, digest, device_id, now),
            ).fetchall()
            if len(claimed) == 1:
                return DeviceScope.decode(claimed[0][0])
            row = db.execute(
                "SELECT device_id, expires_at, used_at FROM tokens WHERE digest=?", (digest,)
            ).fetchone()
        if row is None:
            raise Unauthenticated("bootstrap token unknown")
        if row[2] is not None:
            raise Unauthenticated("bootstrap token already used")
        if row[0] != device_id:
            raise Unauthenticated(
                f"bootstrap token was issued for another device, not {device_id!r}"
            )
        raise Unauthenticated("bootstrap token expired")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def default_ca_dir(tls_dir: Path) -> Path:
    """Where :func:`write_dev_pki` keeps the CA of ``tls_dir``: a sibling ``<name>-ca``
    directory, never inside the directory a gateway serves from."""
    return tls_dir.parent / f"{tls_dir.name}-ca"


def write_dev_pki(
    directory: Path,
    devices: list[str],
    hosts: list[str] | None = None,
    *,
    ca_dir: Path | None = None,
) -> dict[str, Path]:
    """Development PKI: ca.pem (the trust bundle), server.pem/key and <device>.pem/key under
    ``directory`` (a gateway's ``--tls-dir`` and the devices' ``tls.dir``); the CA, its key
    included, lives in ``ca_dir`` (default :func:`default_ca_dir`), created when missing and
    reused otherwise. Returns the written paths by role."""
    ca_dir = ca_dir or default_ca_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    legacy = directory / "ca.key"
    if CertificateAuthority.exists(ca_dir):
        authority = CertificateAuthority.open(ca_dir)
    elif legacy.exists() and (directory / "ca.pem").exists():
        # An older layout kept the CA key beside the gateway's certificates: move it out.
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        authority = CertificateAuthority.adopt(ca_dir, KeyPair(cert, load_private_key(legacy)))
    else:
        authority = CertificateAuthority.init(ca_dir)
    legacy.unlink(missing_ok=True)
    paths = {"ca": write_atomic(directory / "ca.pem", authority.bundle_pem(), 0o644)}
    paths["server"] = authority.issue_server(hosts).write(directory, "server")[0]
    for dev in devices:
        paths[dev] = authority.issue_device(dev).write(directory, dev)[0]
    paths["ca_dir"] = ca_dir
    return paths


__all__ = [
    "DEFAULT_DEVICE_LIFETIME_S",
    "MAX_CSR_BYTES",
    "CertificateAuthority",
    "Issued",
    "default_ca_dir",
    "parse_csr",
    "write_dev_pki",
]
