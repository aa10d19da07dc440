"""Protocol-free errors with TensorFlow Serving's status codes.

The core raises `ServingError` with a canonical code; the gRPC layer maps it to a
`grpc.StatusCode` and the REST layer to the HTTP status TensorFlow Serving's HTTP server
uses for the same code, so both protocols report one failure the same way.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Canonical error codes (google.rpc.Code / tensorflow::error::Code values)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TensorFlow Serving's http_server.cc mapping from status code to HTTP status.
_HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


# What a client is told when the server itself failed: the exception's text may carry paths,
# values or internals, so it goes to the log only (supervision.py says where).
INTERNAL_MESSAGE = "Internal error: the server failed to handle the request (details in its log)"


class ServingError(Exception):
    """A request or load failure that carries the status code a client should see."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


class UnknownSignature(ServingError):
    """A request named a signature the version does not export.

    TF Serving words this per API: Predict over gRPC says FAILED_PRECONDITION 'Serving
    signature key "k" not found.' (predict_util.cc), REST predict INVALID_ARGUMENT 'Serving
    signature name: "k" not found in signature def' (http_rest_api_handler.cc GetInfoMap).
    The core raises the gRPC form; the REST layer rewords it from `key`.
    """

    def __init__(self, key: str) -> None:
        super().__init__(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        self.key = key


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


def internal() -> ServingError:
    """INTERNAL with the fixed message; the caller logs the exception itself."""
    return ServingError(Code.INTERNAL, INTERNAL_MESSAGE)
