"""Authorization at the front doors: who is calling (:class:`Authenticator`: device certificates,
JWT bearer tokens), what they may call (THE table, :data:`GRPC_RULES` and :data:`REST_RULES`),
and the two places that enforce it (:class:`AuthzInterceptor` for gRPC, :class:`AuthzMiddleware`
for REST), both writing refusals and management actions to the audit trail.
docs/authz.md lists the table."""

from cloud.authz._authn import Authenticator, CertIdentity, cert_identity
from cloud.authz._grpc import AuthzInterceptor, refuse, resource_of
from cloud.authz._rest import (
    AUDIT_DETAIL,
    PEER_CERT,
    AuthzMiddleware,
    PeerCertProtocol,
    authz_middleware,
)
from cloud.authz._settings import AuthzSettings, read_audit_key
from cloud.authz._table import (
    GRPC_RULES,
    PUBLIC,
    REST_RULES,
    ROLES,
    Rule,
    grpc_rule,
    markdown_table,
    rest_rule,
)

__all__ = [
    "AUDIT_DETAIL",
    "GRPC_RULES",
    "PEER_CERT",
    "PUBLIC",
    "REST_RULES",
    "ROLES",
    "Authenticator",
    "AuthzInterceptor",
    "AuthzMiddleware",
    "AuthzSettings",
    "CertIdentity",
    "PeerCertProtocol",
    "Rule",
    "authz_middleware",
    "cert_identity",
    "grpc_rule",
    "markdown_table",
    "read_audit_key",
    "refuse",
    "resource_of",
    "rest_rule",
]
