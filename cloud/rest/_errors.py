"""The one table from :class:`common.errors.ErrorCode` to HTTP status, and the error body.

REST endpoints raise :class:`common.errors.AimlError` like every other front door; the app's
exception handler answers ``{"code": "NOT_FOUND", "message": ...}`` with the status below.
"""

from __future__ import annotations

from common.errors import AimlError, ErrorCode

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 412,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.CANCELLED: 499,
    ErrorCode.DATA_LOSS: 500,
    ErrorCode.INTERNAL: 500,
}
"""HTTP status of every code (499: client closed request, as nginx and Google APIs use it)."""


def http_status(error: AimlError) -> int:
    """The HTTP status of ``error``."""
    return HTTP_STATUS.get(error.code, 500)


def error_body(error: AimlError) -> dict[str, str]:
    """The JSON body of an error answer."""
    return {"code": error.code.value, "message": error.message}


__all__ = ["HTTP_STATUS", "error_body", "http_status"]
