"""One error hierarchy for the whole product, transport-neutral.

Every error carries an :class:`ErrorCode`; transports map codes to their own statuses in one
table each (``cloud`` maps to gRPC, the REST bridge to HTTP). Domain code raises these and never
mentions a transport.

    AimlError
    ├── InvalidArgument        bad shape, dtype, size, name, malformed payload or manifest
    │   ├── BundleError        model bundle manifest/files invalid
    │   └── CodecError         feature payload cannot be decoded
    ├── NotFound               unknown model, version, cut point, request id
    ├── AlreadyExists
    ├── FailedPrecondition     idempotency key reused with another payload, state conflicts
    ├── ResourceExhausted      queue full, byte budget exceeded, credits exhausted
    ├── DeadlineExceeded       the deadline passed or cannot be met
    ├── Unauthenticated        missing or invalid credentials
    ├── PermissionDenied       credentials valid but not allowed
    ├── Unavailable            backend or peer down; retry later
    ├── Cancelled              the caller cancelled
    ├── DataLoss               corrupted or tampered durable data
    └── Internal               a bug; never the caller's fault
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """Transport-neutral error codes (a subset of google.rpc.Code, same names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAVAILABLE = "UNAVAILABLE"
    CANCELLED = "CANCELLED"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


class AimlError(Exception):
    """Base of every error this product raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgument(AimlError):
    code = ErrorCode.INVALID_ARGUMENT


class BundleError(InvalidArgument):
    """A model bundle (manifest or one of its files) is invalid; the message names the file."""


class CodecError(InvalidArgument):
    """A coded feature payload is malformed, truncated, oversize or fails its checksum."""


class NotFound(AimlError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(AimlError):
    code = ErrorCode.ALREADY_EXISTS


class FailedPrecondition(AimlError):
    code = ErrorCode.FAILED_PRECONDITION


class ResourceExhausted(AimlError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(AimlError):
    code = ErrorCode.DEADLINE_EXCEEDED


class Unauthenticated(AimlError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(AimlError):
    code = ErrorCode.PERMISSION_DENIED


class Unavailable(AimlError):
    code = ErrorCode.UNAVAILABLE


class Cancelled(AimlError):
    code = ErrorCode.CANCELLED


class DataLoss(AimlError):
    code = ErrorCode.DATA_LOSS


class Internal(AimlError):
    code = ErrorCode.INTERNAL


__all__ = [
    "AimlError",
    "AlreadyExists",
    "BundleError",
    "Cancelled",
    "CodecError",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorCode",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
