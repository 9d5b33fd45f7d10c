"""Auth primitives: development PKI (CA, server and device certificates) and signed tokens."""

from common.auth._certs import (
    DEVICE_URI_PREFIX,
    KeyPair,
    create_ca,
    device_id_of,
    issue_device_cert,
    issue_server_cert,
    load_keypair,
    write_dev_pki,
)
from common.auth._tokens import issue_token, verify_token

__all__ = [
    "DEVICE_URI_PREFIX",
    "KeyPair",
    "create_ca",
    "device_id_of",
    "issue_device_cert",
    "issue_server_cert",
    "issue_token",
    "load_keypair",
    "verify_token",
    "write_dev_pki",
]
