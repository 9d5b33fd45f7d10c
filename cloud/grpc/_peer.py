"""Who is calling: the device id of a gRPC peer, from its verified client certificate; and the
W3C trace context its call carries."""

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


def traceparent_from_context(context: grpc.aio.ServicerContext) -> str:
    """The call's ``traceparent`` metadata (W3C trace context), or empty; a value longer than a
    traceparent can be is ignored."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent" and isinstance(value, str) and len(value) <= 128:
            return value
    return ""


__all__ = ["device_id_from_context", "traceparent_from_context"]
