"""REST bridge (Starlette): proto3-JSON ``/v1`` routes and KServe-v2 ``/v2`` routes over the core."""

from ._app import RestBridge
from ._errors import HTTP_STATUS, error_body, http_status
from ._openapi import build_openapi, openapi_document
from ._serve import RestServer
from ._v2 import v2_request, v2_response

__all__ = [
    "HTTP_STATUS",
    "RestBridge",
    "RestServer",
    "build_openapi",
    "error_body",
    "http_status",
    "openapi_document",
    "v2_request",
    "v2_response",
]
