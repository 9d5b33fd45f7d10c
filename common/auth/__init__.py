"""Auth primitives: the PKI (issuing CA, certificate profiles, enrollment, revocation), key
hygiene, TLS 1.3 and reloadable server TLS material, and signed tokens.

Importing this package does not import grpc (so :func:`require_tls13` can run first); the
grpc parts (enrollment client and service, reloading server credentials) load on first use.
"""

from typing import Any

from common.auth._ca import (
    DEFAULT_DEVICE_LIFETIME_S,
    CertificateAuthority,
    Issued,
    default_ca_dir,
    parse_csr,
    write_dev_pki,
)
from common.auth._certs import (
    DEVICE_URI_PREFIX,
    SCOPE_URI_PREFIX,
    DeviceScope,
    KeyPair,
    check_device_id,
    create_ca,
    device_certificate,
    device_id_of,
    issue_device_cert,
    issue_server_cert,
    load_keypair,
    server_certificate,
    uri_claims,
)
from common.auth._identity import (
    DeviceIdentity,
    check_client_usage,
    device_identity,
    identity_from_pem,
    serial_hex,
)
from common.auth._keys import (
    MIN_SECRET_BYTES,
    check_private_file,
    check_secret,
    derive_key,
    load_private_key,
    read_private_file,
    write_atomic,
    write_private_key,
)
from common.auth._revocation import (
    DenyList,
    RevocationCache,
    Revocations,
    open_deny_list,
)
from common.auth._tls import (
    GRPC_CIPHER_ENV,
    TLS12_DISABLED_SUITES,
    ReloadingServerTls,
    ServerTls,
    assert_tls13_only,
    follow_rotation,
    load_server_tls,
    require_tls13,
    server_ssl_context,
    tls12_accepted,
)

_LAZY = {
    "DeviceFiles": "common.auth._enroll",
    "EnrollmentClient": "common.auth._enroll",
    "enroll_device": "common.auth._enroll",
    "renew_device": "common.auth._enroll",
    "renewal_due": "common.auth._enroll",
    "CaServer": "common.auth._ca_service",
    "EnrollmentServicer": "common.auth._ca_service",
    "reloading_server_credentials": "common.auth._grpc_tls",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    tokens = importlib.import_module("common.auth._tokens")  # token names: see its __all__
    if name in getattr(tokens, "__all__", ()):
        return getattr(tokens, name)
    raise AttributeError(f"module 'common.auth' has no attribute {name!r}")


__all__ = [
    "DEFAULT_DEVICE_LIFETIME_S",
    "DEVICE_URI_PREFIX",
    "GRPC_CIPHER_ENV",
    "MIN_SECRET_BYTES",
    "SCOPE_URI_PREFIX",
    "TLS12_DISABLED_SUITES",
    "CaServer",
    "CertificateAuthority",
    "DenyList",
    "DeviceFiles",
    "DeviceIdentity",
    "DeviceScope",
    "EnrollmentClient",
    "EnrollmentServicer",
    "Issued",
    "KeyPair",
    "ReloadingServerTls",
    "RevocationCache",
    "Revocations",
    "ServerTls",
    "assert_tls13_only",
    "check_client_usage",
    "check_device_id",
    "check_private_file",
    "check_secret",
    "create_ca",
    "default_ca_dir",
    "derive_key",
    "device_certificate",
    "device_id_of",
    "device_identity",
    "enroll_device",
    "follow_rotation",
    "identity_from_pem",
    "issue_device_cert",
    "issue_server_cert",
    "load_keypair",
    "load_private_key",
    "load_server_tls",
    "open_deny_list",
    "parse_csr",
    "read_private_file",
    "reloading_server_credentials",
    "renew_device",
    "renewal_due",
    "require_tls13",
    "serial_hex",
    "server_certificate",
    "server_ssl_context",
    "tls12_accepted",
    "uri_claims",
    "write_atomic",
    "write_dev_pki",
    "write_private_key",
]
