"""gRPC server credentials that follow :class:`ReloadingServerTls`: grpc asks the fetcher for
new material before each handshake (``grpc.dynamic_ssl_server_credentials``), so a rotated server
certificate or CA bundle serves new connections without a restart; open connections keep the
material they were made with."""

from __future__ import annotations

import logging

import grpc

from common.auth._tls import ReloadingServerTls, ServerTls

log = logging.getLogger(__name__)


def _configuration(
    material: ServerTls, require_client_auth: bool
) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert_chain)],
        root_certificates=material.ca_bundle if require_client_auth else None,
    )


def reloading_server_credentials(
    source: ReloadingServerTls, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """Server credentials of ``source``'s current material, refreshed on change."""

    seen = {"version": source.latest()[0]}

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            version, material = source.latest()
        except Exception:  # grpc would log a bare traceback per handshake and keep the old one
            log.exception("reading server TLS material failed; keeping the current material")
            return None
        if version == seen["version"]:
            return None
        seen["version"] = version
        return _configuration(material, require_client_auth)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(source.current, require_client_auth),
        fetch,
        require_client_authentication=require_client_auth,
    )


__all__ = ["reloading_server_credentials"]
