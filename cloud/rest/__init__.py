"""REST bridge (Starlette): proto3-JSON ``/v1`` routes and KServe-v2 ``/v2`` routes over the core."""

from ._app import RestBridge
from ._console_settings import PrivacyStatus
from ._errors import HTTP_STATUS, error_body, http_status
from ._kserve import EXTENSIONS, KServeV2
from ._openapi import build_openapi, openapi_document
from ._serve import RestServer
from ._v2 import encode_infer, parse_infer, triton_json, v2_request, v2_response

__all__ = [
    "EXTENSIONS",
    "HTTP_STATUS",
    "KServeV2",
    "PrivacyStatus",
    "RestBridge",
    "RestServer",
    "build_openapi",
    "encode_infer",
    "error_body",
    "http_status",
    "openapi_document",
    "parse_infer",
    "triton_json",
    "v2_request",
    "v2_response",
]
