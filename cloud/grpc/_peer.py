"""Who is calling: the device id of a gRPC peer, from its verified client certificate."""

from __future__ import annotations

import grpc


def device_id_from_context(context: grpc.aio.ServicerContext) -> str:
    """Device id from the verified client certificate (its common name), or empty."""
    auth = context.auth_context()
    for key in ("x509_common_name",):
        values = auth.get(key)
        if values:
            return bytes(values[0]).decode("utf-8", "replace")
    return ""


__all__ = ["device_id_from_context"]
