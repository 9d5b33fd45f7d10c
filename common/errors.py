"""One error hierarchy for the whole product, transport-neutral.

Every error carries an :class:`ErrorCode`; transports map codes to their own statuses in one
table each (``cloud.grpc._errors`` to gRPC, ``cloud.rest._errors`` to HTTP). Domain code raises
these and never mentions a transport. A failure received from a peer becomes one of these again
through :meth:`ErrorCode.from_name` / :meth:`ErrorCode.from_rpc_code` and :func:`error_from_code`
(unknown codes become INTERNAL: a received failure never turns into a success).

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

    @property
    def rpc_code(self) -> int:
        """The ``google.rpc.Code`` number (the same as the gRPC status code number)."""
        return _RPC_CODES[self]

    @classmethod
    def from_name(cls, name: str) -> ErrorCode:
        """The code named ``name`` (a gRPC status or google.rpc.Code name); INTERNAL when this
        product has no such code (UNKNOWN, ABORTED, UNIMPLEMENTED, ...)."""
        try:
            return cls(name)
        except ValueError:
            return cls.INTERNAL

    @classmethod
    def from_rpc_code(cls, number: int) -> ErrorCode:
        """The code of a ``google.rpc.Code`` number; INTERNAL for numbers without one."""
        return _BY_RPC_CODE.get(int(number), cls.INTERNAL)


# google.rpc.Code numbers (google/rpc/code.proto); fixed by the standard, so no protobuf import.
_RPC_CODES: dict[ErrorCode, int] = {
    ErrorCode.CANCELLED: 1,
    ErrorCode.INVALID_ARGUMENT: 3,
    ErrorCode.DEADLINE_EXCEEDED: 4,
    ErrorCode.NOT_FOUND: 5,
    ErrorCode.ALREADY_EXISTS: 6,
    ErrorCode.PERMISSION_DENIED: 7,
    ErrorCode.RESOURCE_EXHAUSTED: 8,
    ErrorCode.FAILED_PRECONDITION: 9,
    ErrorCode.INTERNAL: 13,
    ErrorCode.UNAVAILABLE: 14,
    ErrorCode.DATA_LOSS: 15,
    ErrorCode.UNAUTHENTICATED: 16,
}
_BY_RPC_CODE = {n: c for c, n in _RPC_CODES.items()}


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


ERROR_TYPES: dict[ErrorCode, type[AimlError]] = {
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.ALREADY_EXISTS: AlreadyExists,
    ErrorCode.FAILED_PRECONDITION: FailedPrecondition,
    ErrorCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.PERMISSION_DENIED: PermissionDenied,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.DATA_LOSS: DataLoss,
    ErrorCode.INTERNAL: Internal,
}
"""The error class raised for each code (the base class of the tree above for that code)."""


def error_from_code(code: ErrorCode, message: str) -> AimlError:
    """The error of ``code`` carrying ``message`` (a failure received from a peer)."""
    return ERROR_TYPES[code](message)


__all__ = [
    "ERROR_TYPES",
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
    "error_from_code",
]
