"""REST bridge (Starlette): proto3-JSON ``/v1`` routes and KServe-v2 ``/v2`` routes over the core."""

from ._app import HTTP_STATUS, RestBridge, openapi_document, v2_request, v2_response
from ._openapi import build_openapi

__all__ = [
    "HTTP_STATUS",
    "RestBridge",
    "build_openapi",
    "openapi_document",
    "v2_request",
    "v2_response",
]
